// Command idlemem measures what idle connections cost a server's memory
// over time, and where it goes. For each implementation (a bench server,
// or examples/embed with its /echo) and repetition, on a fresh process:
//
//  1. the baseline: VmRSS and the Go runtime's statistics of the fresh
//     process, read without a GC;
//  2. -n connections ramped at -rate by a wsload process, which then holds
//     them silent (the server's own idle probe may ping them);
//  3. at each -read-at moment after the ramp: VmRSS and the runtime's
//     statistics, without a GC: heap objects (live, or garbage not yet
//     collected), heap spans' unused slots, heap that is free but not
//     returned to the OS, goroutine stacks, the rest of the RSS
//     (runtime metadata, binary), GC count and heap goal;
//  4. then a forced GC for the live heap, and VmRSS 2 s later;
//  5. a sample of the connections must still echo.
//
// Bytes per connection are (value − baseline) ÷ connections. With
// -profile-reps, extra runs sample every allocation
// (GODEBUG=memprofilerate=1) and keep the server's heap profile after the
// forced GC; the report lists the allocation sites that hold the live heap
// per connection (pprof -top, inuse_space). Those runs are slower and
// bigger, so their RSS is not in the tables.
//
//	go build -o bin/ ./cmd/server ./cmd/wsload ./cmd/idlemem
//	(cd ../examples/embed && go build -o ../../bench/bin/embed .)
//	bin/idlemem -impls wsloop,wsloop-http,embed,nbio -n 10000 -reps 3 -out results/DIR
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wsloop/wsloop/bench/internal/child"
	"github.com/wsloop/wsloop/bench/internal/proc"
	"github.com/wsloop/wsloop/bench/internal/stat"
)

type reading struct {
	After float64           `json:"after_ramp_secs"`
	RSS   int64             `json:"rss"`
	Stats *proc.ServerStats `json:"stats,omitempty"`
}

type run struct {
	Label     string            `json:"label"`
	Spec      string            `json:"spec"`
	Rep       int               `json:"rep"`
	Profile   bool              `json:"profile,omitempty"`
	N         int               `json:"n"`
	Opened    int               `json:"opened"`
	RampSecs  float64           `json:"ramp_secs"`
	RampCPU   float64           `json:"ramp_server_cpu_secs"`
	LoadAvg   float64           `json:"loadavg_start"`
	BaseRSS   int64             `json:"base_rss"`
	Base      *proc.ServerStats `json:"base,omitempty"`
	Readings  []reading         `json:"readings"`
	GC        *proc.ServerStats `json:"after_forced_gc,omitempty"`
	RSSAfterG int64             `json:"rss_after_forced_gc"`
	Top       []child.TopRow    `json:"heap_top,omitempty"`
	Err       string            `json:"error,omitempty"`
}

func main() {
	binDir := flag.String("bin", "bin", "directory with server, wsload and embed (a build of examples/embed)")
	impls := flag.String("impls", "wsloop,wsloop-http,embed,nbio", "implementations: NAME (a bench server, or embed) or LABEL=NAME[@BINARY][ ARGS], comma-separated")
	n := flag.Int("n", 10000, "connections")
	rate := flag.Float64("rate", 10000, "ramp rate, new connections per second (0: unpaced)")
	readAt := flag.String("read-at", "1s,60s,150s", "moments after the ramp to read memory at, without a GC")
	reps := flag.Int("reps", 3, "repetitions")
	profReps := flag.Int("profile-reps", 1, "extra runs per implementation with every allocation sampled, for the heap profile")
	profHold := flag.Duration("profile-hold", 5*time.Second, "profiling runs: hold before the forced GC and the profile")
	ratioList := flag.String("ratios", "", "ratios to report, A/B label pairs (default: each label to the first, and wsloop-http/nbio, embed/wsloop-http when present)")
	out := flag.String("out", "", "write idlemem.md, idlemem.json and the heap profiles here")
	serverCPUs := flag.String("server-cpus", "", "pin the servers to these CPUs (bench servers only)")
	clientCPUs := flag.String("client-cpus", "", "pin the wsload process to these CPUs")
	from := flag.String("from", "", "write the report of the runs saved in this idlemem.json instead of running (with the same -impls, -read-at and -n)")
	flag.Parse()

	var moments []time.Duration
	for _, f := range strings.Split(*readAt, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil {
			fatal("bad -read-at %q", *readAt)
		}
		moments = append(moments, d)
	}
	specs := strings.Split(*impls, ",")
	var labels []string
	for _, s := range specs {
		labels = append(labels, child.ParseSpec(s, "", "").Label)
	}
	ratios := parseRatios(*ratioList, labels)
	if *from != "" {
		b, err := os.ReadFile(*from)
		if err != nil {
			fatal("%v", err)
		}
		var runs []run
		if err := json.Unmarshal(b, &runs); err != nil {
			fatal("%s: %v", *from, err)
		}
		fmt.Println(report(labels, ratios, runs, moments, *n))
		return
	}
	work, err := os.MkdirTemp("", "idlemem")
	if err != nil {
		fatal("%v", err)
	}
	defer os.RemoveAll(work)
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			fatal("%v", err)
		}
	}
	proc.RaiseNoFile()
	var runs []run
	seq := 0
	do := func(s string, rep int, profile bool) {
		sp := child.ParseSpec(s, filepath.Join(*binDir, "server"), filepath.Join(*binDir, "embed"))
		sp.Dir, sp.Profile = work, profile
		if sp.Impl != "embed" {
			sp.CPUs = *serverCPUs
		}
		seq++
		ms := moments
		if profile {
			ms = []time.Duration{*profHold}
		}
		r := one(sp, s, rep, seq, *binDir, *n, *rate, ms, *clientCPUs, *out)
		runs = append(runs, r)
		printRun(r)
		if *out != "" {
			b, _ := json.MarshalIndent(runs, "", "  ")
			_ = os.WriteFile(filepath.Join(*out, "idlemem.json"), b, 0o644)
		}
		time.Sleep(time.Second)
	}
	for rep := 1; rep <= *reps; rep++ {
		for i := range specs {
			do(specs[(i+rep-1)%len(specs)], rep, false)
		}
	}
	for rep := 1; rep <= *profReps; rep++ {
		for _, s := range specs {
			do(s, rep, true)
		}
	}
	md := report(labels, ratios, runs, moments, *n)
	fmt.Println(md)
	if *out != "" {
		cmdline := "idlemem " + strings.Join(os.Args[1:], " ")
		_ = os.WriteFile(filepath.Join(*out, "idlemem.md"), []byte("# Idle memory over time, and where it goes\n\n`"+cmdline+"`\n\n"+md), 0o644)
	}
}

func parseRatios(list string, labels []string) [][2]string {
	var rs [][2]string
	if list != "" {
		for _, p := range strings.Split(list, ",") {
			a, b, ok := strings.Cut(p, "/")
			if !ok {
				fatal("-ratios: want A/B, got %q", p)
			}
			rs = append(rs, [2]string{a, b})
		}
		return rs
	}
	has := map[string]bool{}
	for _, l := range labels {
		has[l] = true
	}
	for _, l := range labels[1:] {
		rs = append(rs, [2]string{l, labels[0]})
	}
	if has["wsloop-http"] && has["nbio"] {
		rs = append(rs, [2]string{"wsloop-http", "nbio"})
	}
	if has["embed"] && has["wsloop-http"] {
		rs = append(rs, [2]string{"embed", "wsloop-http"})
	}
	return rs
}

func one(sp child.Spec, spec string, rep, seq int, binDir string, n int, rate float64, moments []time.Duration, clientCPUs, outDir string) run {
	r := run{Label: sp.Label, Spec: spec, Rep: rep, Profile: sp.Profile, N: n, LoadAvg: proc.LoadAvg()}
	srv, err := child.Start(sp)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer srv.Stop()
	fmt.Fprintf(os.Stderr, "[rep %d%s] %s (pid %d, %s), load %.2f\n", rep, map[bool]string{true: " profile"}[sp.Profile], sp.Label, srv.Pid, srv.Addr, r.LoadAvg)
	r.BaseRSS = srv.RSS()
	r.Base = srv.Stats(false)
	var baseProf string
	if sp.Profile {
		// The profile's baseline: what the fresh process holds (a forced
		// GC does not matter here, RSS is not reported for these runs).
		baseProf = filepath.Join(sp.Dir, fmt.Sprintf("base-%d.pprof", seq))
		if _, err := srv.HeapProfile(baseProf); err != nil {
			r.Err = err.Error()
			return r
		}
		r.Base = srv.Stats(false)
	}
	path := "/"
	if sp.Impl == "embed" {
		path = "/echo"
	}
	cpu0 := srv.CPU()
	t0 := time.Now()
	cl, err := child.StartHold(child.HoldSpec{Bin: filepath.Join(binDir, "wsload"), Addr: srv.Addr, Path: path, N: n, Procs: 1,
		Src: func(int) netip.Addr {
			return netip.AddrFrom4([4]byte{127, byte(100 + seq%100), byte(seq / 100 * 8), 2})
		},
		Args: []string{"-rate", strconv.FormatFloat(rate, 'f', -1, 64), "-sample", "0.01"}, CPUs: clientCPUs, Debug: os.Stderr})
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer cl.Kill()
	opened, _, err := cl.WaitOpened(3 * time.Minute)
	rampEnd := time.Now()
	r.RampSecs = rampEnd.Sub(t0).Seconds()
	r.RampCPU = (srv.CPU() - cpu0).Seconds()
	r.Opened = opened
	if err != nil {
		r.Err = err.Error()
		return r
	}
	for _, at := range moments {
		time.Sleep(time.Until(rampEnd.Add(at)))
		rd := reading{After: time.Since(rampEnd).Seconds(), RSS: srv.RSS()}
		rd.Stats = srv.Stats(false)
		r.Readings = append(r.Readings, rd)
	}
	if sp.Profile {
		pf := filepath.Join(outDir, fmt.Sprintf("heap-%s-%d.pprof", sp.Label, rep))
		if outDir == "" {
			pf = filepath.Join(sp.Dir, "heap.pprof")
		}
		r.GC, err = srv.HeapProfile(pf)
		if err != nil {
			r.Err = err.Error()
		} else if rows, text, err := child.Top(sp.Bin, pf, baseProf, 25); err != nil {
			r.Err = err.Error()
		} else {
			r.Top = rows
			if outDir != "" {
				_ = os.WriteFile(strings.TrimSuffix(pf, ".pprof")+"-top.txt", []byte(text), 0o644)
			}
		}
	} else {
		r.GC = srv.Stats(true)
	}
	time.Sleep(2 * time.Second)
	r.RSSAfterG = srv.RSS()
	if ls, err := cl.Lines("check", "CHECKED ", time.Minute); err != nil {
		r.Err = "echo check: " + err.Error()
	} else if len(ls) > 0 && len(ls[0]) >= 3 && ls[0][1] != ls[0][2] {
		r.Err = fmt.Sprintf("echo check: %s of %s sampled connections echoed", ls[0][2], ls[0][1])
	}
	cl.Quit()
	if srv.Exited() && r.Err == "" {
		r.Err = "server exited during the run"
	}
	return r
}

func perConn(r run, v, base float64) float64 { return (v - base) / float64(max(1, r.Opened)) }

func printRun(r run) {
	fmt.Printf("rep %d %-12s %d/%d in %.1fs, %.1f us CPU/conn", r.Rep, r.Label, r.Opened, r.N, r.RampSecs, r.RampCPU*1e6/float64(max(1, r.Opened)))
	for _, rd := range r.Readings {
		fmt.Printf("; %.0fs: %.0f B/conn", rd.After, perConn(r, float64(rd.RSS), float64(r.BaseRSS)))
		if rd.Stats != nil && r.Base != nil {
			fmt.Printf(" (free %.0f, stacks %.0f, gcs %d)", perConn(r, float64(rd.Stats.HeapFree), float64(r.Base.HeapFree)),
				perConn(r, float64(rd.Stats.StackInuse), float64(r.Base.StackInuse)), rd.Stats.NumGC)
		}
	}
	if r.GC != nil && r.Base != nil {
		fmt.Printf("; live heap %.0f B/conn", perConn(r, float64(r.GC.HeapAlloc), float64(r.Base.HeapAlloc)))
	}
	if r.Err != "" {
		fmt.Printf("  ERROR: %s", r.Err)
	}
	fmt.Println()
}

// part is one row of the breakdown: a value read at one moment, per
// connection over the baseline.
type part struct {
	name string
	get  func(r run, rd reading) (float64, bool)
}

func statPart(name string, f func(s *proc.ServerStats) float64) part {
	return part{name, func(r run, rd reading) (float64, bool) {
		if rd.Stats == nil || r.Base == nil {
			return 0, false
		}
		return perConn(r, f(rd.Stats), f(r.Base)), true
	}}
}

var parts = []part{
	{"**RSS**", func(r run, rd reading) (float64, bool) { return perConn(r, float64(rd.RSS), float64(r.BaseRSS)), true }},
	statPart("heap objects (live + garbage not yet swept)", func(s *proc.ServerStats) float64 { return float64(s.HeapAlloc) }),
	statPart("heap spans' unused slots", func(s *proc.ServerStats) float64 { return float64(s.HeapInuse - s.HeapAlloc) }),
	statPart("heap free, not returned to the OS", func(s *proc.ServerStats) float64 { return float64(s.HeapFree) }),
	statPart("goroutine stacks", func(s *proc.ServerStats) float64 { return float64(s.StackInuse) }),
	{"rest of RSS (runtime metadata, binary, returned pages touched again)", func(r run, rd reading) (float64, bool) {
		if rd.Stats == nil || r.Base == nil {
			return 0, false
		}
		g := func(s *proc.ServerStats) float64 { return float64(s.HeapInuse + s.HeapFree + s.StackInuse) }
		return perConn(r, float64(rd.RSS), float64(r.BaseRSS)) - perConn(r, g(rd.Stats), g(r.Base)), true
	}},
}

func report(labels []string, ratios [][2]string, runs []run, moments []time.Duration, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d idle connections. Bytes per connection = (value − the fresh process's value) ÷ connections; median (min–max) over the repetitions. Readings at the stated time after the ramp, without a GC; \"after a forced GC\" comes after the last one. The fresh process's heap is read without a GC too, so \"live heap after the forced GC\" is low for a server that starts with garbage (nbio); the profiles below give each one's live heap by site.\n\n", n)
	cell := func(label string, get func(r run) (float64, bool), f string) (string, map[int]float64) {
		vals := map[int]float64{}
		for _, r := range runs {
			if r.Label != label || r.Profile || r.Err != "" {
				continue
			}
			if v, ok := get(r); ok {
				vals[r.Rep] = v
			}
		}
		return stat.Cell(stat.Values(vals), f), vals
	}
	reading := func(i int, p part) func(r run) (float64, bool) {
		return func(r run) (float64, bool) {
			if i >= len(r.Readings) {
				return 0, false
			}
			return p.get(r, r.Readings[i])
		}
	}
	// Headline: RSS per connection at each moment, and the ratios.
	fmt.Fprintf(&b, "### RSS per connection (bytes)\n\n| read | %s |", strings.Join(labels, " | "))
	for _, p := range ratios {
		fmt.Fprintf(&b, " %s / %s |", p[0], p[1])
	}
	fmt.Fprintf(&b, "\n|---|%s\n", strings.Repeat("---|", len(labels)+len(ratios)))
	rows := []struct {
		name string
		get  func(r run) (float64, bool)
	}{}
	for i, m := range moments {
		rows = append(rows, struct {
			name string
			get  func(r run) (float64, bool)
		}{fmt.Sprintf("%v after the ramp", m), reading(i, parts[0])})
	}
	rows = append(rows, struct {
		name string
		get  func(r run) (float64, bool)
	}{"growth from the first reading to the last", func(r run) (float64, bool) {
		if len(r.Readings) < 2 {
			return 0, false
		}
		return perConn(r, float64(r.Readings[len(r.Readings)-1].RSS), float64(r.Readings[0].RSS)), true
	}}, struct {
		name string
		get  func(r run) (float64, bool)
	}{"2 s after a forced GC", func(r run) (float64, bool) {
		return perConn(r, float64(r.RSSAfterG), float64(r.BaseRSS)), r.RSSAfterG > 0
	}},
		struct {
			name string
			get  func(r run) (float64, bool)
		}{"live heap after the forced GC", func(r run) (float64, bool) {
			if r.GC == nil || r.Base == nil {
				return 0, false
			}
			return perConn(r, float64(r.GC.HeapAlloc), float64(r.Base.HeapAlloc)), true
		}}, struct {
			name string
			get  func(r run) (float64, bool)
		}{"heap allocated during the ramp", func(r run) (float64, bool) {
			if len(r.Readings) == 0 || r.Readings[0].Stats == nil || r.Base == nil {
				return 0, false
			}
			return perConn(r, float64(r.Readings[0].Stats.TotalAlloc), float64(r.Base.TotalAlloc)), true
		}}, struct {
			name string
			get  func(r run) (float64, bool)
		}{"server CPU per connection in the ramp, µs", func(r run) (float64, bool) {
			return r.RampCPU * 1e6 / float64(max(1, r.Opened)), r.Opened > 0
		}})
	for _, row := range rows {
		fmt.Fprintf(&b, "| %s |", row.name)
		vals := map[string]map[int]float64{}
		for _, l := range labels {
			c, v := cell(l, row.get, "%.0f")
			vals[l] = v
			fmt.Fprintf(&b, " %s |", c)
		}
		for _, p := range ratios {
			fmt.Fprintf(&b, " %s |", stat.Ratio(vals[p[0]], vals[p[1]]))
		}
		b.WriteString("\n")
	}
	// Breakdown at each moment.
	for i, m := range moments {
		fmt.Fprintf(&b, "\n### Where it goes, %v after the ramp (bytes per connection)\n\n| part | %s |\n|---|%s\n", m, strings.Join(labels, " | "), strings.Repeat("---|", len(labels)))
		for _, p := range parts {
			fmt.Fprintf(&b, "| %s |", p.name)
			for _, l := range labels {
				c, _ := cell(l, reading(i, p), "%.0f")
				fmt.Fprintf(&b, " %s |", c)
			}
			b.WriteString("\n")
		}
		for _, extra := range []struct {
			name string
			f    func(s *proc.ServerStats) float64
		}{
			{"GC cycles so far", func(s *proc.ServerStats) float64 { return float64(s.NumGC) }},
			{"heap goal, MiB", func(s *proc.ServerStats) float64 { return float64(s.HeapGoal) / (1 << 20) }},
			{"goroutines", func(s *proc.ServerStats) float64 { return float64(s.NumGoroutine) }},
		} {
			fmt.Fprintf(&b, "| %s |", extra.name)
			for _, l := range labels {
				c, _ := cell(l, func(r run) (float64, bool) {
					if i >= len(r.Readings) || r.Readings[i].Stats == nil {
						return 0, false
					}
					return extra.f(r.Readings[i].Stats), true
				}, "%.1f")
				fmt.Fprintf(&b, " %s |", c)
			}
			b.WriteString("\n")
		}
	}
	// Heap profiles.
	for _, r := range runs {
		if !r.Profile || len(r.Top) == 0 {
			continue
		}
		var sum float64
		for _, t := range r.Top {
			if pc := t.Flat / float64(max(1, r.Opened)); pc >= 1 {
				sum += pc
			}
		}
		fmt.Fprintf(&b, "\n### %s: live heap by allocation site after a forced GC (profiling run %d, every allocation sampled, less the fresh process's profile; the rows sum to %.0f B per connection)\n\n| bytes per connection | function that allocated |\n|---|---|\n", r.Label, r.Rep, sum)
		for _, t := range r.Top {
			if pc := t.Flat / float64(max(1, r.Opened)); pc >= 1 {
				fmt.Fprintf(&b, "| %.1f | %s |\n", pc, t.Func)
			}
		}
	}
	bad := 0
	for _, r := range runs {
		if r.Err != "" {
			bad++
			fmt.Fprintf(&b, "\nrep %d %s: %s", r.Rep, r.Label, r.Err)
		}
	}
	if bad > 0 {
		fmt.Fprintf(&b, "\n\n%d run(s) with errors are left out.\n", bad)
	}
	return b.String()
}

func fatal(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "idlemem: "+f+"\n", a...)
	os.Exit(2)
}
