// Command storm measures what accepting connections costs a server, over
// ws:// (cmd/wssload -scenarios storm does the same over wss://):
//
//   - the first ramp: -n connections from -procs wsload processes, as fast
//     as -inflight handshakes in flight allow (unpaced); the server's CPU
//     time (utime+stime from /proc) over the ramp ÷ connections is the
//     CPU per accepted connection;
//   - -storms reconnect storms: every client drops all its connections at
//     once (a reset each, as a network failure or a client restart does)
//     and dials them all again, -storm-inflight handshakes in flight per
//     process: the time until all are back (and half and 90%), and the
//     server's CPU per reconnection (the close and the new accept).
//
// Each implementation runs as a fresh bench server process per run; the
// order rotates between repetitions; the report gives median (min–max)
// and, for each implementation after the first, the ratio of the first's
// median to it with the range of the per-repetition ratios.
//
//	go build -o bin/ ./cmd/server ./cmd/wsload ./cmd/storm
//	bin/storm -impls wsloop,gws,nbio -n 19000 -reps 3 -out results/DIR
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

type round struct {
	Back      int     `json:"back"`
	Failed    int     `json:"failed"`
	Secs      float64 `json:"secs"`
	T50ms     float64 `json:"t50_ms"`
	T90ms     float64 `json:"t90_ms"`
	T99ms     float64 `json:"t99_ms"`
	ServerCPU float64 `json:"server_cpu_secs"`
	CPUus     float64 `json:"server_cpu_us_per_conn"`
}

type run struct {
	Label       string  `json:"label"`
	Spec        string  `json:"spec"`
	Rep         int     `json:"rep"`
	N           int     `json:"n"`
	Opened      int     `json:"opened"`
	Failed      int     `json:"failed"`
	RampSecs    float64 `json:"ramp_secs"`
	RampRate    float64 `json:"ramp_conn_per_sec"`
	AcceptCPUus float64 `json:"server_cpu_us_per_accept"`
	ClientCPUus float64 `json:"client_cpu_us_per_accept"`
	OtherCores  float64 `json:"other_cores_in_ramp"`
	LoadAvg     float64 `json:"loadavg_start"`
	Rounds      []round `json:"storms"`
	Err         string  `json:"error,omitempty"`
}

func main() {
	binDir := flag.String("bin", "bin", "directory with server and wsload")
	impls := flag.String("impls", "wsloop,gws,nbio", "implementations: NAME or LABEL=NAME[@BINARY][ SERVER-ARGS], comma-separated; ratios are of the first to each other")
	n := flag.Int("n", 19000, "connections")
	procs := flag.Int("procs", 1, "wsload processes sharing the connections (each holds at most ~19,900 on a 20,000-descriptor limit)")
	inflight := flag.Int("inflight", 256, "handshakes in flight per process in the first ramp")
	stormInflight := flag.Int("storm-inflight", 2048, "handshakes in flight per process while a storm's connections come back")
	storms := flag.Int("storms", 3, "reconnect storms per run")
	reps := flag.Int("reps", 3, "repetitions")
	serverCPUs := flag.String("server-cpus", "", "pin the servers to these CPUs (taskset -c syntax)")
	clientCPUs := flag.String("client-cpus", "", "pin the wsload processes to these CPUs")
	out := flag.String("out", "", "write storm.md and storm.json here")
	pause := flag.Duration("pause", time.Second, "pause between runs, and before each storm")
	flag.Parse()

	specs := strings.Split(*impls, ",")
	var labels []string
	for _, s := range specs {
		labels = append(labels, child.ParseSpec(s, "", "").Label)
	}
	work, err := os.MkdirTemp("", "storm")
	if err != nil {
		fatal("%v", err)
	}
	defer os.RemoveAll(work)
	proc.RaiseNoFile()
	var runs []run
	seq := 0
	for rep := 1; rep <= *reps; rep++ {
		for i := range specs {
			s := specs[(i+rep-1)%len(specs)]
			sp := child.ParseSpec(s, filepath.Join(*binDir, "server"), "")
			sp.Dir, sp.CPUs = work, *serverCPUs
			seq++
			r := one(sp, s, rep, seq, *binDir, *n, *procs, *inflight, *stormInflight, *storms, *clientCPUs, *pause)
			runs = append(runs, r)
			printRun(r)
			if *out != "" {
				save(*out, runs)
			}
			time.Sleep(*pause)
		}
	}
	md := report(labels, runs, *reps)
	fmt.Println(md)
	if *out != "" {
		save(*out, runs)
		cmdline := "storm " + strings.Join(quoteArgs(os.Args[1:]), " ")
		_ = os.WriteFile(filepath.Join(*out, "storm.md"), []byte("# Accept CPU and reconnect storms (ws://)\n\n`"+cmdline+"`\n\n"+md), 0o644)
	}
}

func quoteArgs(a []string) []string {
	var q []string
	for _, s := range a {
		if strings.ContainsAny(s, " ,=") && strings.Contains(s, " ") {
			s = "'" + s + "'"
		}
		q = append(q, s)
	}
	return q
}

func save(dir string, runs []run) {
	_ = os.MkdirAll(dir, 0o755)
	b, _ := json.MarshalIndent(runs, "", "  ")
	_ = os.WriteFile(filepath.Join(dir, "storm.json"), b, 0o644)
}

func one(sp child.Spec, spec string, rep, seq int, binDir string, n, procs, inflight, stormInflight, storms int, clientCPUs string, pause time.Duration) run {
	r := run{Label: sp.Label, Spec: spec, Rep: rep, N: n, LoadAvg: proc.LoadAvg()}
	srv, err := child.Start(sp)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer srv.Stop()
	fmt.Fprintf(os.Stderr, "[rep %d] %s (pid %d, %s), load %.2f\n", rep, sp.Label, srv.Pid, srv.Addr, r.LoadAvg)
	m0, _ := proc.ReadMachineCPU()
	cpu0 := srv.CPU()
	t0 := time.Now()
	cl, err := child.StartHold(child.HoldSpec{Bin: filepath.Join(binDir, "wsload"), Addr: srv.Addr, Path: "/", N: n, Procs: procs,
		Src: func(i int) netip.Addr {
			return netip.AddrFrom4([4]byte{127, byte(100 + seq%100), byte(i * 8), 2})
		},
		Args: []string{"-inflight", strconv.Itoa(inflight), "-storm-inflight", strconv.Itoa(stormInflight)},
		CPUs: clientCPUs, Debug: os.Stderr})
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer cl.Kill()
	opened, failed, err := cl.WaitOpened(3 * time.Minute)
	r.RampSecs = time.Since(t0).Seconds()
	cpu1 := srv.CPU()
	m1, _ := proc.ReadMachineCPU()
	r.Opened, r.Failed = opened, failed
	if err != nil {
		r.Err = err.Error()
		return r
	}
	var ccpu time.Duration
	for _, pid := range cl.Pids() {
		c, _ := proc.CPU(pid)
		ccpu += c
	}
	if opened > 0 {
		r.RampRate = float64(opened) / r.RampSecs
		r.AcceptCPUus = (cpu1 - cpu0).Seconds() * 1e6 / float64(opened)
		r.ClientCPUus = ccpu.Seconds() * 1e6 / float64(opened)
		r.OtherCores = max(0, ((m1.Busy-m0.Busy)-(cpu1-cpu0)-ccpu).Seconds()/r.RampSecs)
	}
	for k := 0; k < storms; k++ {
		time.Sleep(pause)
		c0 := srv.CPU()
		ls, err := cl.Lines("storm", "BACK ", 3*time.Minute)
		c1 := srv.CPU()
		if err != nil {
			r.Err = err.Error()
			return r
		}
		var rd round
		for _, f := range ls {
			if len(f) < 8 {
				continue
			}
			v := func(i int) float64 { x, _ := strconv.ParseFloat(f[i], 64); return x }
			rd.Back += int(v(1))
			rd.Failed += int(v(2))
			// Several processes: the slowest one's figures.
			rd.Secs, rd.T50ms, rd.T90ms, rd.T99ms = max(rd.Secs, v(3)), max(rd.T50ms, v(4)), max(rd.T90ms, v(5)), max(rd.T99ms, v(6))
		}
		rd.ServerCPU = (c1 - c0).Seconds()
		if rd.Back > 0 {
			rd.CPUus = rd.ServerCPU * 1e6 / float64(rd.Back)
		}
		r.Rounds = append(r.Rounds, rd)
		if rd.Back < opened {
			r.Err = fmt.Sprintf("storm %d: %d of %d back (%d failed)", k+1, rd.Back, opened, rd.Failed)
		}
	}
	if _, err := cl.Lines("check", "CHECKED ", time.Minute); err != nil && r.Err == "" {
		r.Err = "echo check: " + err.Error()
	}
	cl.Quit()
	if srv.Exited() && r.Err == "" {
		r.Err = "server exited during the run"
	}
	return r
}

func printRun(r run) {
	fmt.Printf("rep %d %-12s %5d/%d conns in %.2fs (%.0f/s): server %.1f us CPU per accept, client %.1f, other %.2f cores",
		r.Rep, r.Label, r.Opened, r.N, r.RampSecs, r.RampRate, r.AcceptCPUus, r.ClientCPUus, r.OtherCores)
	for _, s := range r.Rounds {
		fmt.Printf("; storm %.3fs (t50 %.0f ms, t90 %.0f ms) %.1f us/conn", s.Secs, s.T50ms, s.T90ms, s.CPUus)
	}
	if r.Err != "" {
		fmt.Printf("  ERROR: %s", r.Err)
	}
	fmt.Println()
}

type fig struct {
	name, format string
	get          func(r run) (float64, bool)
}

func stormMedian(r run, f func(round) float64) (float64, bool) {
	var v []float64
	for _, s := range r.Rounds {
		v = append(v, f(s))
	}
	return stat.Median(v), len(v) > 0
}

var figs = []fig{
	{"first ramp: connections/s", "%.0f", func(r run) (float64, bool) { return r.RampRate, r.Opened > 0 }},
	{"first ramp: server CPU per accepted connection, µs", "%.1f", func(r run) (float64, bool) { return r.AcceptCPUus, r.Opened > 0 }},
	{"first ramp: other processes' CPU, cores", "%.2f", func(r run) (float64, bool) { return r.OtherCores, r.Opened > 0 }},
	{"storm: all back after, s (median of the run's storms)", "%.3f", func(r run) (float64, bool) { return stormMedian(r, func(s round) float64 { return s.Secs }) }},
	{"storm: half back after, ms", "%.0f", func(r run) (float64, bool) { return stormMedian(r, func(s round) float64 { return s.T50ms }) }},
	{"storm: 90% back after, ms", "%.0f", func(r run) (float64, bool) { return stormMedian(r, func(s round) float64 { return s.T90ms }) }},
	{"storm: server CPU per reconnection (close + accept), µs", "%.1f", func(r run) (float64, bool) {
		return stormMedian(r, func(s round) float64 { return s.CPUus })
	}},
}

func report(labels []string, runs []run, reps int) string {
	var b strings.Builder
	n := 0
	for _, r := range runs {
		n = max(n, r.N)
	}
	fmt.Fprintf(&b, "%d connections; median (min–max) over %d repetitions; ratios are %s's median ÷ the other's, with the range of the per-repetition ratios.\n\n", n, reps, labels[0])
	fmt.Fprintf(&b, "| figure | %s |", strings.Join(labels, " | "))
	for _, l := range labels[1:] {
		fmt.Fprintf(&b, " %s / %s |", labels[0], l)
	}
	fmt.Fprintf(&b, "\n|---|%s\n", strings.Repeat("---|", 2*len(labels)-1))
	for _, f := range figs {
		vals := map[string]map[int]float64{}
		for _, r := range runs {
			if r.Err != "" {
				continue
			}
			if v, ok := f.get(r); ok {
				if vals[r.Label] == nil {
					vals[r.Label] = map[int]float64{}
				}
				vals[r.Label][r.Rep] = v
			}
		}
		fmt.Fprintf(&b, "| %s |", f.name)
		for _, l := range labels {
			fmt.Fprintf(&b, " %s |", stat.Cell(stat.Values(vals[l]), f.format))
		}
		for _, l := range labels[1:] {
			fmt.Fprintf(&b, " %s |", stat.Ratio(vals[labels[0]], vals[l]))
		}
		b.WriteString("\n")
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
	fmt.Fprintf(os.Stderr, "storm: "+f+"\n", a...)
	os.Exit(2)
}
