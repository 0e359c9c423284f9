// Command benchall runs the whole comparison in one invocation: it builds the
// bench server and the load generator, then for every scenario runs every
// implementation in turn (a fresh server process each time, the order
// rotated between repetitions), and writes a markdown report, the raw
// results as JSON and PNG charts into -out.
//
//	cd bench && go run ./cmd/benchall            # full run (about 45 min)
//	cd bench && go run ./cmd/benchall -quick     # 1-2 minutes, small N
//
// On a machine with 4 or more CPUs the server and the load generator are
// pinned to disjoint halves of them (-server-cpus, -client-cpus), and the
// scaling scenario runs wsloop's echo at -scale-loops event loops. Extra
// server configurations join any scenario as -variant LABEL=SPEC. With
// -bin it uses binaries built elsewhere (bench/device) instead of building.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/bench/internal/child"
	"github.com/wsloop/wsloop/bench/internal/load"
	"github.com/wsloop/wsloop/bench/internal/proc"
)

type config struct {
	quick     bool
	impls     []string
	reps      int
	scenarios map[string]bool
	out       string
	idleN     []int
	echo      []echoCase
	bcastN    int
	bcastSize int
	hold      time.Duration
	settle    time.Duration
	warmup    time.Duration
	duration  time.Duration
	rounds    int
	window    int
	loops     int
	busy      float64
	pause     time.Duration

	variants   map[string]variant // by label; c.impls lists the labels in order
	serverCPUs string
	clientCPUs string
	idleRates  []float64
	echoAll    bool
	scaleLoops []int
	scaleCase  echoCase
	scaleImpls []string
	runTimeout time.Duration
	budget     time.Duration
	bin        string
	idleSample float64

	// openloop scenario
	openConns    []int
	openLevels   []float64
	openReps     int
	openSize     int
	openPeers    []string
	openDuration time.Duration
}

type echoCase struct{ N, Size int }

func (e echoCase) String() string { return fmt.Sprintf("%d x %s", e.N, sizeName(e.Size)) }

func sizeName(n int) string {
	switch {
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// run is one server process under one scenario. Impl is the variant's
// label.
type run struct {
	Impl     string       `json:"impl"`
	Spec     string       `json:"spec,omitempty"`
	Rep      int          `json:"rep"`
	Case     string       `json:"case"`
	Result   *load.Result `json:"result,omitempty"`
	Err      string       `json:"error,omitempty"`
	Busy     bool         `json:"busy"`
	ServerOK bool         `json:"server_ok"`
}

func main() {
	var c config
	quick := flag.Bool("quick", false, "short run with small N and short durations (about 1-2 minutes)")
	impls := flag.String("impls", "", "comma-separated implementations (default: every one the server binary has)")
	reps := flag.Int("reps", 0, "repetitions per scenario (default 3, quick 1)")
	scen := flag.String("scenarios", "idle,echo,broadcast", "scenarios to run")
	out := flag.String("out", "", "output directory (default results; quick: out/quick, which git ignores, so that trying it leaves a clone clean)")
	idleN := flag.String("idle-n", "", "idle connection counts (default 5000,10000,19000; quick 500,2000)")
	echoCases := flag.String("echo", "", "echo cases as CONNSxBYTES (default 1000x64,1000x1024,1000x16384,10000x1024; quick 200x64,200x1024)")
	bcastN := flag.Int("bcast-n", 0, "broadcast receivers (default 10000, quick 1000)")
	flag.IntVar(&c.bcastSize, "bcast-size", 64, "broadcast message bytes")
	hold := flag.Duration("hold", 0, "idle hold (default 10s, quick 1s)")
	settle := flag.Duration("settle", 0, "idle settle before reading RSS (default 2s, quick 500ms)")
	warmup := flag.Duration("warmup", 0, "echo warmup (default 2s, quick 500ms)")
	duration := flag.Duration("duration", 0, "echo and broadcast-rate measuring time (default 10s, quick 2s)")
	rounds := flag.Int("rounds", 0, "sequential broadcast rounds (default 20, quick 5)")
	flag.IntVar(&c.window, "window", 4, "broadcasts in flight during the rate phase")
	flag.IntVar(&c.loops, "loops", 0, "client event loops (default 1, or one per client CPU when pinned)")
	var variants []string
	flag.Func("variant", "extra server configuration `LABEL=[ENV=VAL ...] IMPL [server flags]` run beside -impls in every scenario (repeatable), e.g. 'wsloop-rbc=wsloop -opt ReadBufferCap=16384'", func(v string) error {
		variants = append(variants, v)
		return nil
	})
	serverCPUs := flag.String("server-cpus", "auto", "pin the server to these CPUs (taskset -c syntax); auto: the first half when the machine has 4 or more, else none")
	clientCPUs := flag.String("client-cpus", "auto", "pin the load generator to these CPUs; auto: the second half when the machine has 4 or more, else none")
	idleRate := flag.String("idle-rate", "10000", "idle: ramp rates in new connections/s, comma-separated (0: as fast as possible)")
	flag.BoolVar(&c.echoAll, "idle-echo-all", false, "idle: echo once on every connection right after the ramp")
	flag.Float64Var(&c.idleSample, "idle-sample", 0.01, "idle: fraction of the connections echo-checked after the hold")
	scaleLoops := flag.String("scale-loops", "1,2,4,8", "scaling: server event loops")
	scaleCase := flag.String("scale-echo", "1000x1024", "scaling: echo case CONNSxBYTES")
	scaleImpls := flag.String("scale-impls", "wsloop", "scaling: implementations (their -loops knob: wsloop event loops, nbio pollers)")
	flag.DurationVar(&c.runTimeout, "run-timeout", 3*time.Minute, "stop a run (server and client) that takes longer than this")
	flag.DurationVar(&c.budget, "budget", 0, "skip runs that would not end within this much time from the start (0: no limit)")
	flag.StringVar(&c.bin, "bin", "", "use the server and wsload binaries in this directory instead of building them")
	noCharts := flag.Bool("no-charts", false, "do not write PNG charts")
	openConns := flag.String("open-conns", "1000,10000", "openloop: connection counts")
	openLevels := flag.String("open-levels", "0.25,0.5,0.8", "openloop: load levels, as fractions of the best peer's closed-loop maximum")
	flag.IntVar(&c.openReps, "open-reps", 5, "openloop: repetitions of each open-loop level (the closed-loop maxima use -reps)")
	flag.IntVar(&c.openSize, "open-size", 1024, "openloop: message bytes")
	openPeers := flag.String("open-peers", "", "openloop: the peers whose best closed-loop maximum sets the levels (default: every implementation whose label does not start with wsloop)")
	flag.DurationVar(&c.openDuration, "open-duration", 0, "openloop: measured time of each open-loop run (default -duration)")
	flag.Float64Var(&c.busy, "busy", 0.3, "flag a run when other processes used more than this many cores")
	flag.DurationVar(&c.pause, "pause", 300*time.Millisecond, "pause between runs")
	flag.Parse()

	c.quick = *quick
	pick := func(v, full, q time.Duration) time.Duration {
		if v != 0 {
			return v
		}
		if c.quick {
			return q
		}
		return full
	}
	pickInt := func(v, full, q int) int {
		if v != 0 {
			return v
		}
		if c.quick {
			return q
		}
		return full
	}
	c.reps = pickInt(*reps, 3, 1)
	c.hold = pick(*hold, 10*time.Second, time.Second)
	c.settle = pick(*settle, 2*time.Second, 500*time.Millisecond)
	c.warmup = pick(*warmup, 2*time.Second, 500*time.Millisecond)
	c.duration = pick(*duration, 10*time.Second, 2*time.Second)
	c.rounds = pickInt(*rounds, 20, 5)
	c.bcastN = pickInt(*bcastN, 10000, 1000)
	c.out = *out
	if c.out == "" {
		c.out = "results"
		if c.quick {
			// Not under results/: a quick run is for trying, and its
			// noisy figures must not replace the published ones or
			// show up as changes in a clone.
			c.out = filepath.Join("out", "quick")
		}
	}
	in := *idleN
	if in == "" {
		in = "5000,10000,19000"
		if c.quick {
			in = "500,2000"
		}
	}
	for _, s := range strings.Split(in, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fatal("bad -idle-n %q", in)
		}
		c.idleN = append(c.idleN, n)
	}
	ec := *echoCases
	if ec == "" {
		ec = "1000x64,1000x1024,1000x16384,10000x1024"
		if c.quick {
			ec = "200x64,200x1024"
		}
	}
	for _, s := range strings.Split(ec, ",") {
		a, b, ok := strings.Cut(strings.TrimSpace(s), "x")
		n, err1 := strconv.Atoi(a)
		sz, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil {
			fatal("bad -echo %q", ec)
		}
		c.echo = append(c.echo, echoCase{n, sz})
	}
	c.scenarios = map[string]bool{}
	for _, s := range strings.Split(*scen, ",") {
		c.scenarios[strings.TrimSpace(s)] = true
	}
	for _, s := range strings.Split(*idleRate, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || v < 0 {
			fatal("bad -idle-rate %q", *idleRate)
		}
		c.idleRates = append(c.idleRates, v)
	}
	for _, s := range strings.Split(*scaleLoops, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v <= 0 {
			fatal("bad -scale-loops %q", *scaleLoops)
		}
		c.scaleLoops = append(c.scaleLoops, v)
	}
	{
		a, b, ok := strings.Cut(*scaleCase, "x")
		n, err1 := strconv.Atoi(a)
		sz, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil {
			fatal("bad -scale-echo %q", *scaleCase)
		}
		c.scaleCase = echoCase{n, sz}
	}
	c.scaleImpls = strings.Split(*scaleImpls, ",")
	for _, f := range strings.Split(*openConns, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			fatal("bad -open-conns %q", *openConns)
		}
		c.openConns = append(c.openConns, v)
	}
	for _, f := range strings.Split(*openLevels, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			fatal("bad -open-levels %q", *openLevels)
		}
		c.openLevels = append(c.openLevels, v)
	}
	if *openPeers != "" {
		c.openPeers = strings.Split(*openPeers, ",")
	}
	if c.openDuration == 0 {
		c.openDuration = c.duration
	}
	c.serverCPUs, c.clientCPUs = splitCPUs(*serverCPUs, *clientCPUs, runtime.NumCPU())
	if c.loops <= 0 {
		c.loops = max(1, countCPUs(c.clientCPUs))
	}

	var bin, note string
	var have []string
	if c.bin != "" {
		bin, have = prebuilt(c.bin)
	} else {
		bin, note, have = build()
	}
	c.bin = bin
	if *impls != "" {
		c.impls = strings.Split(*impls, ",")
	} else {
		c.impls = have
	}
	c.variants = map[string]variant{}
	for _, name := range c.impls {
		c.variants[name] = variant{Label: name, Impl: name}
	}
	for _, s := range variants {
		v, err := parseVariant(s)
		if err != nil {
			fatal("%v", err)
		}
		if _, dup := c.variants[v.Label]; dup {
			fatal("variant label %q used twice", v.Label)
		}
		c.variants[v.Label] = v
		c.impls = append(c.impls, v.Label)
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		fatal("%v", err)
	}
	tmp, err := os.MkdirTemp("", "wsbench")
	if err != nil {
		fatal("%v", err)
	}
	defer os.RemoveAll(tmp)
	limit := proc.RaiseNoFile()

	start := time.Now()
	var runs []run
	b := &bencher{c: c, bin: bin, tmp: tmp, start: start}
	fmt.Printf("benchall: %v, reps %d, implementations %v, RLIMIT_NOFILE %d\n", map[bool]string{true: "quick", false: "full"}[c.quick], c.reps, c.impls, limit)
	fmt.Printf("benchall: server CPUs %s, client CPUs %s, client loops %d\n", orAll(c.serverCPUs), orAll(c.clientCPUs), c.loops)
	for _, l := range c.impls {
		if v := c.variants[l]; v.Label != v.Impl || len(v.Env)+len(v.Flags) > 0 {
			fmt.Printf("benchall: variant %s\n", v)
		}
	}
	if note != "" {
		fmt.Println("benchall:", note)
	}
	if c.scenarios["idle"] {
		for _, rate := range c.idleRates {
			for _, n := range c.idleN {
				name := idleCase(n, rate)
				args := []string{"-scenario", "idle", "-n", fmt.Sprint(n), "-size", "64", "-rate", fmt.Sprint(rate),
					"-read-at", "0s," + c.settle.String(), "-hold", c.hold.String(), "-sample", fmt.Sprint(c.idleSample)}
				if c.echoAll {
					args = append(args, "-echo-all")
				}
				est := c.hold + 12*time.Second
				if rate > 0 {
					est += time.Duration(float64(n) / rate * float64(time.Second))
				}
				runs = append(runs, b.each(name, c.impls, est, func(v variant, rep int) run {
					return b.one(v, rep, name, args)
				})...)
			}
		}
	}
	if c.scenarios["echo"] {
		for _, e := range c.echo {
			name := "echo " + e.String()
			runs = append(runs, b.each(name, c.impls, c.warmup+c.duration+4*time.Second, func(v variant, rep int) run {
				return b.one(v, rep, name, []string{"-scenario", "echo", "-n", fmt.Sprint(e.N), "-size", fmt.Sprint(e.Size),
					"-warmup", c.warmup.String(), "-duration", c.duration.String()})
			})...)
		}
	}
	if c.scenarios["scaling"] {
		e := c.scaleCase
		name := "scaling " + e.String()
		var labels []string
		for _, impl := range c.scaleImpls {
			for _, l := range c.scaleLoops {
				v := variant{Label: fmt.Sprintf("%s loops=%d", impl, l), Impl: impl, Flags: []string{"-loops", fmt.Sprint(l)}}
				c.variants[v.Label] = v
				labels = append(labels, v.Label)
			}
		}
		b.c = c
		runs = append(runs, b.each(name, labels, c.warmup+c.duration+4*time.Second, func(v variant, rep int) run {
			return b.one(v, rep, name, []string{"-scenario", "echo", "-n", fmt.Sprint(e.N), "-size", fmt.Sprint(e.Size),
				"-warmup", c.warmup.String(), "-duration", c.duration.String()})
		})...)
	}
	if c.scenarios["openloop"] {
		runs = append(runs, b.openLoop()...)
	}
	if c.scenarios["broadcast"] {
		name := fmt.Sprintf("broadcast %d x %s", c.bcastN, sizeName(c.bcastSize))
		runs = append(runs, b.each(name, c.impls, c.duration+15*time.Second, func(v variant, rep int) run {
			return b.one(v, rep, name, []string{"-scenario", "broadcast", "-n", fmt.Sprint(c.bcastN), "-size", fmt.Sprint(c.bcastSize),
				"-rounds", fmt.Sprint(c.rounds), "-window", fmt.Sprint(c.window), "-duration", c.duration.String()})
		})...)
	}
	elapsed := time.Since(start)

	raw, _ := json.MarshalIndent(runs, "", "  ")
	if err := os.WriteFile(filepath.Join(c.out, "results.json"), raw, 0o644); err != nil {
		fatal("%v", err)
	}
	md := report(c, runs, elapsed, note)
	if err := os.WriteFile(filepath.Join(c.out, "results.md"), []byte(md), 0o644); err != nil {
		fatal("%v", err)
	}
	if !*noCharts {
		if err := charts(c, runs); err != nil {
			fmt.Fprintln(os.Stderr, "benchall: charts:", err)
		}
	}
	fmt.Println()
	fmt.Println(md)
	fmt.Printf("benchall: wrote %s/results.md, results.json and charts in %v\n", c.out, elapsed.Round(time.Second))
}

func orAll(cpus string) string {
	if cpus == "" {
		return "all (not pinned)"
	}
	return cpus
}

// idleCase names an idle case by its size and ramp rate.
func idleCase(n int, rate float64) string {
	if rate <= 0 {
		return fmt.Sprintf("idle %d, unpaced ramp", n)
	}
	return fmt.Sprintf("idle %d, ramp %.0f/s", n, rate)
}

// prebuilt checks that dir holds the server and wsload binaries and lists
// the server's implementations.
func prebuilt(dir string) (string, []string) {
	dir, _ = filepath.Abs(dir)
	for _, f := range []string{"server", "wsload"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			fatal("-bin: %v", err)
		}
	}
	return dir, listImpls(dir)
}

func listImpls(binDir string) []string {
	outb, err := exec.Command(filepath.Join(binDir, "server"), "-list").Output()
	if err != nil {
		fatal("server -list: %v", err)
	}
	var impls []string
	for _, line := range strings.Split(strings.TrimSpace(string(outb)), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			impls = append(impls, f[0])
		}
	}
	return impls
}

func fatal(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "benchall: "+f+"\n", a...)
	os.Exit(2)
}

// build compiles the server (every implementation, wsloop through the
// replace directive) and the load generator into bin/. When the wsloop
// engine does not compile, the server is built without it and the report
// says so.
func build() (binDir, note string, impls []string) {
	binDir, _ = filepath.Abs("bin")
	args := []string{"build", "-o", binDir + string(os.PathSeparator), "./cmd/server", "./cmd/wsload"}
	cmd := exec.Command("go", args...)
	cmd.Stderr = os.Stderr
	fmt.Println("benchall: go build ./cmd/server ./cmd/wsload")
	if err := cmd.Run(); err != nil {
		note = "the wsloop engine did not compile; wsloop was left out of this run"
		cmd = exec.Command("go", append([]string{"build", "-tags", "nowsloop"}, args[1:]...)...)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fatal("build failed: %v", err)
		}
	}
	return binDir, note, listImpls(binDir)
}

type bencher struct {
	c     config
	bin   string
	tmp   string
	seq   int
	port  int
	start time.Time
	done  []run // every run so far, in order
}

// save writes the runs so far to results.json.
func (b *bencher) save() {
	raw, _ := json.MarshalIndent(b.done, "", "  ")
	tmp := filepath.Join(b.c.out, "results.json.tmp")
	if err := os.WriteFile(tmp, raw, 0o644); err == nil {
		_ = os.Rename(tmp, filepath.Join(b.c.out, "results.json"))
	}
}

// each runs fn for every variant in labels, reps times, rotating the order
// so that no variant always runs first or right after the same one. Once
// a run would end after the -budget (est is how long one takes), the
// remaining runs are recorded as skipped. Every finished run is saved to
// results.json at once, so a run killed from outside keeps what it had.
func (b *bencher) each(name string, labels []string, est time.Duration, fn func(v variant, rep int) run) []run {
	var out []run
	for rep := 1; rep <= b.c.reps; rep++ {
		n := len(labels)
		for i := 0; i < n; i++ {
			v := b.c.variants[labels[(i+rep-1)%n]]
			if b.c.budget > 0 && time.Since(b.start)+est > b.c.budget {
				fmt.Printf("[%s] rep %d/%d %s: skipped, it would end after the -budget %v\n", name, rep, b.c.reps, v.Label, b.c.budget)
				out = append(out, run{Impl: v.Label, Spec: v.String(), Rep: rep, Case: name, Err: "skipped: would end after the time budget"})
				continue
			}
			fmt.Printf("[%s] rep %d/%d %s\n", name, rep, b.c.reps, v.Label)
			r := fn(v, rep)
			if r.Err != "" {
				fmt.Printf("  ERROR: %s\n", r.Err)
			} else {
				fmt.Printf("  %s\n", summary(r))
			}
			out = append(out, r)
			b.done = append(b.done, r)
			b.save()
			time.Sleep(b.c.pause)
		}
	}
	return out
}

func summary(r run) string {
	x := r.Result
	s := ""
	switch x.Scenario {
	case "idle":
		s = fmt.Sprintf("%d conns at %.0f conn/s (server %.1f us CPU each), RSS %.0f B/conn after the hold (%.0f after a server GC), live Go %.0f B/conn, allocated %.0f B/conn", x.Connected, x.ConnectRate, x.AcceptCPUPerUS, x.RSSPerConn, x.RSSPerConnGC, x.HeapPerConn, x.AllocPerConn)
	case "echo":
		s = fmt.Sprintf("%.0f msg/s, p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, server %.2f CPU-s per 1M msgs", x.MsgsPerSec, x.LatP50us/1000, x.LatP99us/1000, x.LatP999us/1000, x.ServerCPUPerM)
		if x.OpenRate > 0 {
			s += fmt.Sprintf(", open loop at %.0f msg/s (%d sends late by over 1 ms)", x.OpenRate, x.LateSends)
		}
	case "broadcast":
		s = fmt.Sprintf("time-to-all p50 %.2f ms, %.0f deliveries/s", x.FanoutP50ms, x.FanoutRate)
	}
	if r.Busy {
		s += fmt.Sprintf("  [busy: other processes used %.2f cores]", x.OtherCPUCores)
	}
	if len(x.Errors) > 0 {
		s += "  problems: " + strings.Join(x.Errors, "; ")
	}
	return s
}

// one starts a server, runs wsload against it and stops the server. Both
// are stopped after -run-timeout whatever happens.
func (b *bencher) one(v variant, rep int, name string, args []string) run {
	r := run{Impl: v.Label, Spec: v.String(), Rep: rep, Case: name}
	b.seq++
	port := 20000 + (b.seq*7+os.Getpid())%9000
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// A fresh range of client source addresses for every run, so nothing
	// left by the previous run (TIME_WAIT, half-closed sockets) shares a
	// 4-tuple with this one.
	src := netip.AddrFrom4([4]byte{127, byte(1 + b.seq%250), byte(rand8(b.seq)), 2})
	stats := filepath.Join(b.tmp, fmt.Sprintf("stats-%d.json", b.seq))
	life := b.c.runTimeout + 30*time.Second
	sargs := []string{"-impl", v.Impl, "-addr", addr, "-stats", stats, "-max-life", life.String()}
	if b.c.serverCPUs != "" {
		sargs = append(sargs, "-cpus", b.c.serverCPUs)
	}
	bin := filepath.Join(b.bin, "server")
	if v.Bin != "" {
		bin = v.Bin
	}
	srv := exec.Command(bin, append(sargs, v.Flags...)...)
	srv.Env = serverEnv(os.Environ(), v)
	// If benchall is killed (a timeout around the whole run), the kernel
	// kills its server and client too.
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	errLog := filepath.Join(b.tmp, fmt.Sprintf("server-%d.log", b.seq))
	if f, err := os.Create(errLog); err == nil {
		srv.Stderr = f
		defer f.Close()
	}
	stdout, err := srv.StdoutPipe()
	if err != nil {
		r.Err = err.Error()
		return r
	}
	if err := srv.Start(); err != nil {
		r.Err = err.Error()
		return r
	}
	exited := make(chan error, 1)
	ready := child.ScanReady(stdout)
	go func() { exited <- srv.Wait() }()
	stop := func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(3 * time.Second):
			_ = srv.Process.Kill()
			<-exited
		}
	}
	select {
	case ok := <-ready:
		if !ok {
			r.Err = "server exited before listening: " + tail(errLog, 300)
			stop()
			return r
		}
	case <-time.After(15 * time.Second):
		r.Err = "server did not report READY within 15 s"
		stop()
		return r
	}
	time.Sleep(200 * time.Millisecond) // let the fresh process settle before the baseline

	largs := append([]string{"-addr", addr, "-src", src.String(), "-src-count", "4", "-loops", fmt.Sprint(b.c.loops),
		"-server-pid", fmt.Sprint(srv.Process.Pid), "-stats", stats, "-label", v.Label, "-max-life", b.c.runTimeout.String()}, args...)
	if b.c.clientCPUs != "" {
		largs = append(largs, "-cpus", b.c.clientCPUs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.c.runTimeout)
	ld := exec.CommandContext(ctx, filepath.Join(b.bin, "wsload"), largs...)
	ld.Stderr = os.Stderr
	ld.WaitDelay = 5 * time.Second
	ld.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	outb, err := ld.Output()
	if ctx.Err() != nil {
		r.Err = fmt.Sprintf("run stopped after -run-timeout %v", b.c.runTimeout)
	}
	cancel()
	select {
	case werr := <-exited:
		r.Err = fmt.Sprintf("server exited during the run: %v", werr)
		exited <- werr
	default:
		r.ServerOK = true
	}
	stop()
	if err != nil && r.Err == "" {
		r.Err = fmt.Sprintf("wsload: %v", err)
	}
	for _, line := range strings.Split(string(outb), "\n") {
		if js, ok := strings.CutPrefix(line, "RESULT "); ok {
			var res load.Result
			if err := json.Unmarshal([]byte(js), &res); err != nil {
				r.Err = "bad RESULT line: " + err.Error()
				break
			}
			r.Result = &res
		}
	}
	if r.Result == nil && r.Err == "" {
		r.Err = "wsload printed no result"
	}
	if r.Result != nil {
		r.Busy = r.Result.OtherCPUCores > b.c.busy
		if r.Err != "" {
			r.Result.Errors = append(r.Result.Errors, r.Err)
			r.Err = ""
		}
	}
	return r
}

// openLoop runs the open-loop comparison: for each connection count, the
// closed-loop echo of every implementation (-reps times) gives each one's
// maximum; the best of the peers' medians sets the load levels; then every
// implementation runs open-loop at each level (-open-reps times), with
// latency measured from each message's scheduled send time.
func (b *bencher) openLoop() []run {
	c := b.c
	var out []run
	peers := c.openPeers
	if len(peers) == 0 {
		for _, l := range c.impls {
			if !strings.HasPrefix(l, "wsloop") {
				peers = append(peers, l)
			}
		}
	}
	for _, n := range c.openConns {
		e := echoCase{n, c.openSize}
		maxCase := "openloop-max " + e.String()
		est := c.warmup + c.duration + 4*time.Second
		closed := b.each(maxCase, c.impls, est, func(v variant, rep int) run {
			return b.one(v, rep, maxCase, []string{"-scenario", "echo", "-n", fmt.Sprint(n), "-size", fmt.Sprint(c.openSize),
				"-warmup", c.warmup.String(), "-duration", c.duration.String()})
		})
		out = append(out, closed...)
		best, bestImpl := 0.0, ""
		for _, p := range peers {
			if st := collect(closed, p, maxCase, func(r *load.Result) float64 { return r.MsgsPerSec }); st.N > 0 && st.Med > best {
				best, bestImpl = st.Med, p
			}
		}
		if best == 0 {
			fmt.Printf("[%s] no peer reached a closed-loop maximum; open-loop levels skipped\n", maxCase)
			continue
		}
		fmt.Printf("[%s] best peer: %s at %.0f msg/s\n", maxCase, bestImpl, best)
		saved := b.c.reps
		b.c.reps = c.openReps
		for _, lv := range c.openLevels {
			rate := math.Round(best * lv)
			name := fmt.Sprintf("openloop %s at %.0f%% of %s's maximum (%.0f msg/s)", e, lv*100, bestImpl, rate)
			out = append(out, b.each(name, c.impls, c.warmup+c.openDuration+8*time.Second, func(v variant, rep int) run {
				return b.one(v, rep, name, []string{"-scenario", "echo", "-n", fmt.Sprint(n), "-size", fmt.Sprint(c.openSize),
					"-warmup", c.warmup.String(), "-duration", c.openDuration.String(), "-open-rate", fmt.Sprint(rate)})
			})...)
		}
		b.c.reps = saved
	}
	return out
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

func rand8(i int) int { return (i * 37) % 256 }

func machineInfo() []string {
	var lines []string
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		l, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(l)
		if len(f) >= 2 {
			kb, _ := strconv.Atoi(f[1])
			mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	thp := "unknown"
	if b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled"); err == nil {
		thp = strings.TrimSpace(string(b))
	}
	lines = append(lines,
		fmt.Sprintf("CPU: %s, %d logical CPUs", cpu, runtime.NumCPU()),
		fmt.Sprintf("Transparent huge pages: %s (with always, the kernel may back the Go heap with 2 MiB pages, which changes RSS)", thp),
		fmt.Sprintf("Memory: %s; kernel %s; %s %s/%s", mem, kernel, runtime.Version(), runtime.GOOS, runtime.GOARCH))
	return lines
}
