package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// figure is one row of the summary: how to read it from a run, and how to
// print it.
type figure struct {
	scenario, name, unit string
	get                  func(*Result) float64
	format               string
}

var figures = []figure{
	{"idle", "RSS per conn after handshake", "B", func(r *Result) float64 { return r.PerConnHS }, "%.0f"},
	{"idle", "RSS per conn after one big echo each", "B", func(r *Result) float64 { return r.PerConnBig }, "%.0f"},
	{"idle", "  same, after a forced server GC", "B", func(r *Result) float64 { return r.PerConnBigGC }, "%.0f"},
	{"idle", "live heap+stacks per conn after handshake", "B", func(r *Result) float64 { return r.HeapPerConnHS }, "%.0f"},
	{"idle", "live heap+stacks per conn after big echo", "B", func(r *Result) float64 { return r.HeapPerConnBig }, "%.0f"},
	{"idle", "heap allocated per conn in the ramp", "B", func(r *Result) float64 { return r.AllocPerConnHS }, "%.0f"},
	{"idle", "server CPU per handshake", "ms", func(r *Result) float64 { return r.HandshakeCPUms }, "%.2f"},
	{"idle", "goroutines after handshake", "", func(r *Result) float64 { return float64(r.Goroutines) }, "%.0f"},
	{"storm", "server CPU per handshake in the first ramp", "ms", func(r *Result) float64 { return r.HandshakeCPUms }, "%.3f"},
	{"storm", "storm: all back after", "s", func(r *Result) float64 { return r.StormSecs }, "%.3f"},
	{"storm", "storm: half back after", "ms", func(r *Result) float64 { return r.StormT50ms }, "%.0f"},
	{"storm", "storm: 90% back after", "ms", func(r *Result) float64 { return r.StormT90ms }, "%.0f"},
	{"storm", "storm: server CPU per reconnection", "ms", func(r *Result) float64 { return r.StormCPUms }, "%.3f"},
	{"storm", "storm: client CPU per reconnection", "ms", func(r *Result) float64 { return r.StormClient }, "%.3f"},
	{"echo", "server CPU per 1M msgs", "s", func(r *Result) float64 { return r.ServerCPUPerM }, "%.2f"},
	{"echo", "msg/s", "", func(r *Result) float64 { return r.MsgsPerSec }, "%.0f"},
	{"echo", "p50", "us", func(r *Result) float64 { return r.LatP50us }, "%.0f"},
	{"echo", "p99", "us", func(r *Result) float64 { return r.LatP99us }, "%.0f"},
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// summarize prints a Markdown table: median (min–max) over the
// repetitions per implementation, then for each pair in ratios the ratio of
// the medians, with the range of the per-repetition ratios. Runs with
// errors are left out and counted.
func summarize(w io.Writer, names []string, ratios [][2]string, all []*Result, reps int) {
	fmt.Fprintf(w, "\n| figure | %s |", strings.Join(names, " | "))
	for _, p := range ratios {
		fmt.Fprintf(w, " %s/%s |", p[0], p[1])
	}
	fmt.Fprintf(w, "\n|---|%s", strings.Repeat("---|", len(names)+len(ratios)))
	fmt.Fprintln(w)
	var sizes = map[string]string{}
	for _, r := range all {
		if r.Rep > 0 {
			sizes[r.Scenario] = fmt.Sprintf("%d conns, %d B", r.N, r.Size)
		}
	}
	for _, f := range figures {
		vals := map[string]map[int]float64{}
		used := false
		for _, r := range all {
			if r.Scenario != f.scenario || r.Rep == 0 || len(r.Errors) > 0 {
				continue
			}
			if vals[r.Impl] == nil {
				vals[r.Impl] = map[int]float64{}
			}
			vals[r.Impl][r.Rep] = f.get(r)
			used = true
		}
		if !used {
			continue
		}
		unit := ""
		if f.unit != "" {
			unit = ", " + f.unit
		}
		fmt.Fprintf(w, "| %s (%s%s) |", f.name, sizes[f.scenario], unit)
		meds := map[string]float64{}
		for _, name := range names {
			var v []float64
			for _, x := range vals[name] {
				v = append(v, x)
			}
			if len(v) == 0 {
				fmt.Fprint(w, " - |")
				continue
			}
			meds[name] = median(v)
			cell := fmt.Sprintf(f.format+" ("+f.format+"–"+f.format+")", meds[name], slices.Min(v), slices.Max(v))
			if len(v) < reps {
				cell += fmt.Sprintf(" [%d of %d runs]", len(v), reps)
			}
			fmt.Fprintf(w, " %s |", cell)
		}
		for _, p := range ratios {
			if meds[p[1]] == 0 {
				fmt.Fprint(w, " - |")
				continue
			}
			var rs []float64
			for rep, a := range vals[p[0]] {
				if b, ok := vals[p[1]][rep]; ok && b != 0 {
					rs = append(rs, a/b)
				}
			}
			cell := fmt.Sprintf("%.2f", meds[p[0]]/meds[p[1]])
			if len(rs) > 1 {
				cell += fmt.Sprintf(" (%.2f–%.2f)", slices.Min(rs), slices.Max(rs))
			}
			fmt.Fprintf(w, " %s |", cell)
		}
		fmt.Fprintln(w)
	}
	failed := 0
	for _, r := range all {
		if len(r.Errors) > 0 {
			failed++
		}
	}
	if failed > 0 {
		fmt.Fprintf(w, "\n%d run(s) had errors and are left out (see above).\n", failed)
	}
}
