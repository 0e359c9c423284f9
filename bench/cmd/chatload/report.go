package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// write saves every run so far (results.json) and the summary
// (results.md): for each room size and implementation, each figure as
// median (min–max) over the repetitions, then wsloop's figures as ratios to
// gorilla's from the same repetition.
func (o *orchestration) write() error {
	raw, err := json.MarshalIndent(o.runs, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.out, "results.json"), raw, 0o644); err != nil {
		return err
	}
	var b strings.Builder
	host, _ := os.Hostname()

	fmt.Fprintf(&b, "# chatload, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "One room; a second after every member has joined (got its member list; the join notices of the others may still be on their way), one member sends %d messages at %g/s; every member (the sender too) records each arrival. %d client processes, host %s. Cells: median (min–max) over repetitions. join: from the first dial until every member has its member list; settle: until every member sees the whole room (-1: somebody never did); other load: CPU used by other processes on the machine meanwhile.\n\n",
		o.msgs, o.rate, o.procs, host)
	for _, n := range o.sizes {
		fmt.Fprintf(&b, "## %d members\n\n", n)
		b.WriteString("| impl | runs | lost deliveries | members dropped | p50 ms | p99 ms | max ms | sending took s | server CPU µs/delivery | join s | settle s | other load (cores) |\n")
		b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, impl := range o.impls {
			runs := o.runsOf(impl, n)
			if len(runs) == 0 {
				continue
			}
			col := func(f func(runResult) float64, prec int) string { return cell(runs, f, prec) }
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", impl, len(runs),
				col(func(r runResult) float64 { return float64(r.Lost) }, 0),
				col(func(r runResult) float64 { return float64(r.Dropped) }, 0),
				col(func(r runResult) float64 { return r.P50ms }, 1),
				col(func(r runResult) float64 { return r.P99ms }, 1),
				col(func(r runResult) float64 { return r.Maxms }, 1),
				col(func(r runResult) float64 { return r.SentSecs }, 2),
				col(func(r runResult) float64 { return r.CPUPerDelus }, 2),
				col(func(r runResult) float64 { return r.JoinSecs }, 1),
				settleCell(impl, runs),
				col(func(r runResult) float64 { return r.OtherCores }, 2))
		}
		if base := o.runsOf("gorilla", n); len(base) > 0 {
			for _, impl := range o.impls {
				if impl == "gorilla" {
					continue
				}
				var p99, mx, cpu []float64
				for _, r := range o.runsOf(impl, n) {
					for _, g := range base {
						if g.Rep == r.Rep && g.P99ms > 0 && g.Maxms > 0 && g.CPUPerDelus > 0 {
							p99 = append(p99, r.P99ms/g.P99ms)
							mx = append(mx, r.Maxms/g.Maxms)
							cpu = append(cpu, r.CPUPerDelus/g.CPUPerDelus)
						}
					}
				}
				if len(p99) > 0 {
					fmt.Fprintf(&b, "\n%s ÷ gorilla, same repetition: p99 %s, max %s, server CPU per delivery %s\n",
						impl, spread(p99, 2), spread(mx, 2), spread(cpu, 2))
				}
			}
		}
		for _, r := range o.runs {
			if r.Members == n && len(r.Errors) > 0 {
				fmt.Fprintf(&b, "\n- %s rep %d: %s", r.Impl, r.Rep, strings.Join(r.Errors, "; "))
			}
		}
		b.WriteString("\n\n")
	}
	return os.WriteFile(filepath.Join(o.out, "results.md"), []byte(b.String()), 0o644)
}

func (o *orchestration) runsOf(impl string, n int) []runResult {
	var out []runResult
	for _, r := range o.runs {
		if r.Impl == impl && r.Members == n {
			out = append(out, r)
		}
	}
	return out
}

func cell(runs []runResult, f func(runResult) float64, prec int) string {
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = f(r)
	}
	return spread(v, prec)
}

// spread formats values as "median (min–max)", or the value alone.
func spread(v []float64, prec int) string {
	v = slices.Clone(v)
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	if len(v) == 1 || v[0] == v[len(v)-1] {
		return fmt.Sprintf("%.*f", prec, med)
	}
	return fmt.Sprintf("%.*f (%.*f–%.*f)", prec, med, prec, v[0], prec, v[len(v)-1])
}

// settleCell is the settle time, which gorilla's chat (no member list) does
// not have; -1 marks a run where some member never saw the whole room.
func settleCell(impl string, runs []runResult) string {
	if impl == "gorilla" {
		return "n/a"
	}
	return cell(runs, func(r runResult) float64 { return r.SettleSecs }, 1)
}
