// Command wssload measures wss:// servers: each implementation runs as a
// bench server process (cmd/server -tls, a self-signed ECDSA P-256
// certificate made at start) and is driven by crypto/tls clients, a
// goroutine per connection, from loopback source addresses starting at
// -src. Two scenarios:
//
//	idle  ramp -n connections, hold, read the server's RSS (/proc/PID/status)
//	      and, after a forced GC (SIGUSR1 to the server), its live heap;
//	      then every connection echoes one -big message (-big-inflight at a
//	      time) and the same is read again after another hold, since
//	      crypto/tls keeps the capacity of the largest record it read
//	echo  closed loop: -echo-n connections, each sending its next
//	      -size message when the previous echo came back; msg/s, p50/p99,
//	      and the server's CPU time per million messages (/proc/PID/stat)
//	storm ramp -n connections (the server's CPU per handshake), then
//	      -storms times drop every one at once (a reset each) and dial
//	      them all again, -storm-inflight handshakes at once: the time
//	      until all are back (and half, and 90%), the server's CPU per
//	      reconnection
//
// An implementation may carry its own server arguments, e.g.
// 'wsloop-h16=wsloop -opt MaxTLSHandshakes=16' (MaxTLSHandshakes curves).
//
// Every echoed byte is compared with what was sent. Implementations
// alternate: in each repetition every scenario runs once per
// implementation, in an order that rotates between repetitions, each run on
// a fresh server process. The summary gives median (min–max) over the
// repetitions and the ratios of the first implementation to the others.
//
//	go build -o bin/server ./cmd/server
//	go run ./cmd/wssload -impls wsloop,gws,nbio -n 5000 -reps 5
//
// With -profile DIR, one more idle run per implementation in
// -profile-impls runs with the server's -memprofile and leaves its heap
// profiles after the handshake and after the big echo in DIR (go tool pprof
// -sample_index=inuse_space -top bin/server DIR/wsloop-handshake.pprof).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/bench/internal/child"
	"github.com/wsloop/wsloop/bench/internal/proc"
)

func main() {
	serverBin := flag.String("server", "bin/server", "the bench server binary (go build -o bin/server ./cmd/server)")
	impls := flag.String("impls", "wsloop,gws,nbio", "implementations, comma-separated, each NAME or LABEL=NAME[@BINARY][ SERVER-ARGS] (another server build, e.g. wsloop-new=wsloop@bin/server-new, or other settings, e.g. 'wsloop-h16=wsloop -opt MaxTLSHandshakes=16'); ratios are of the first to each other")
	scenarios := flag.String("scenarios", "idle,echo", "idle, echo, storm, comma-separated")
	storms := flag.Int("storms", 3, "storm: drops and reconnections per run")
	stormInflight := flag.Int("storm-inflight", 1024, "storm: handshakes in flight while the connections come back")
	reps := flag.Int("reps", 3, "repetitions")
	n := flag.Int("n", 5000, "idle: connections")
	big := flag.Int("big", 16384, "idle: the message every connection echoes once before the second reading")
	bigInflight := flag.Int("big-inflight", 256, "idle: connections echoing the big message at once")
	hold := flag.Duration("hold", 5*time.Second, "idle: hold before each reading")
	gcWait := flag.Duration("gc-wait", 2*time.Second, "idle: wait after the last forced GC before the RSS reading after it")
	echoN := flag.Int("echo-n", 1000, "echo: connections")
	size := flag.Int("size", 1024, "echo: message size in bytes")
	warmup := flag.Duration("warmup", 2*time.Second, "echo: run before measuring")
	duration := flag.Duration("duration", 10*time.Second, "echo: measured time")
	rate := flag.Float64("rate", 0, "ramp at this many new connections per second (0: as fast as -inflight allows)")
	inflight := flag.Int("inflight", 64, "handshakes in flight while ramping")
	src := flag.String("src", "127.0.0.2", "first loopback source address; each run takes the next -src-count")
	srcCount := flag.Int("src-count", 4, "source addresses per run")
	curves := flag.String("curves", "default", "client key exchanges: default (Go's: X25519MLKEM768, X25519, ...) or x25519")
	serverArgs := flag.String("server-args", "", "extra arguments for every server, space-separated (e.g. -loops 2)")
	profDir := flag.String("profile", "", "directory for heap profiles from one extra idle run per -profile-impls")
	profImpls := flag.String("profile-impls", "wsloop", "implementations to profile with -profile")
	ratioList := flag.String("ratios", "", "ratios to print, comma-separated A/B label pairs (default: the first implementation to each other)")
	out := flag.String("out", "", "also write every run as JSON to this file")
	quiet := flag.Bool("quiet", false, "no progress output")
	flag.Parse()

	specs := strings.Split(*impls, ",")
	var names []string // labels
	for _, s := range specs {
		label, _, _ := strings.Cut(s, "=")
		names = append(names, label)
	}
	var ratios [][2]string
	if *ratioList == "" {
		for _, o := range names[1:] {
			ratios = append(ratios, [2]string{names[0], o})
		}
	}
	for _, p := range strings.Split(*ratioList, ",") {
		if a, b, ok := strings.Cut(p, "/"); ok {
			ratios = append(ratios, [2]string{a, b})
		} else if p != "" {
			fatal("-ratios: want A/B pairs, got %q", p)
		}
	}
	limit := proc.RaiseNoFile()
	if uint64(max(*n, *echoN))+64 > limit {
		fatal("%d connections need more descriptors than RLIMIT_NOFILE allows (%d)", max(*n, *echoN), limit)
	}
	first, err := netip.ParseAddr(*src)
	if err != nil || !first.Is4() || !first.IsLoopback() {
		fatal("-src must be an IPv4 loopback address, got %q", *src)
	}
	if _, err := os.Stat(*serverBin); err != nil {
		fatal("no server binary %s (go build -o bin/server ./cmd/server): %v", *serverBin, err)
	}
	work, err := os.MkdirTemp("", "wssload")
	if err != nil {
		fatal("%v", err)
	}
	defer os.RemoveAll(work)
	p := params{n: *n, rate: *rate, inflight: *inflight, hold: *hold, bigSize: *big, echoInflight: *bigInflight,
		gcWait: *gcWait, size: *size, warmup: *warmup, duration: *duration, rampTimeout: 2 * time.Minute, progress: os.Stderr,
		storms: *storms, stormInfl: *stormInflight}
	if *quiet {
		p.progress = io.Discard
	}
	next := first
	sources := func() []netip.Addr {
		var s []netip.Addr
		for range max(1, *srcCount) {
			if !next.IsLoopback() {
				next = netip.AddrFrom4([4]byte{127, 0, 0, 2})
			}
			s = append(s, next)
			next = next.Next()
		}
		return s
	}
	one := func(impl, scen string, rep int, prof string) *Result {
		q := p
		q.profile = prof
		if scen == "echo" {
			q.n = *echoN
		}
		r := &Result{Impl: impl, Scenario: scen, Rep: rep, N: q.n}
		if scen == "idle" {
			r.Size = q.bigSize
		} else {
			r.Size = q.size
		}
		bin, name := *serverBin, impl
		var own []string
		if label, spec, ok := strings.Cut(impl, "="); ok {
			f := strings.Fields(spec)
			name, bin, _ = strings.Cut(f[0], "@")
			own = f[1:]
			impl = label
			if bin == "" {
				bin = *serverBin
			}
		}
		r.Impl = impl
		srv, err := startServer(bin, name, append(strings.Fields(*serverArgs), own...), work, prof != "")
		if err != nil {
			r.errf("server: %v", err)
			return r
		}
		defer srv.stop()
		d, err := newDialer(srv.addr, sources(), *curves, 10*time.Second)
		if err != nil {
			fatal("%v", err)
		}
		fmt.Fprintf(p.progress, "%s %s rep %d (pid %d, %s)\n", impl, scen, rep, srv.pid, srv.addr)
		t := target{pid: srv.pid, stats: srv.stats, memprof: srv.memprof}
		switch scen {
		case "idle":
			runIdle(d, q, t, r)
		case "echo":
			runEcho(d, q, t, r)
		case "storm":
			runStorm(d, q, t, r)
		default:
			fatal("unknown scenario %q", scen)
		}
		return r
	}

	var all []*Result
	for rep := 1; rep <= *reps; rep++ {
		for _, scen := range strings.Split(*scenarios, ",") {
			for i := range names {
				r := one(specs[(i+rep-1)%len(specs)], scen, rep, "")
				all = append(all, r)
				printRun(r)
			}
		}
	}
	if *profDir != "" {
		if err := os.MkdirAll(*profDir, 0o755); err != nil {
			fatal("%v", err)
		}
		for _, impl := range strings.Split(*profImpls, ",") {
			label, _, _ := strings.Cut(impl, "=")
			r := one(impl, "idle", 0, filepath.Join(*profDir, label))
			printRun(r)
			fmt.Printf("profiles: %s-handshake.pprof, %s-16k.pprof (heap per connection under -memprofile: %.0f B, %.0f B)\n",
				filepath.Join(*profDir, label), filepath.Join(*profDir, label), r.HeapPerConnHS, r.HeapPerConnBig)
		}
	}
	if *out != "" {
		b, _ := json.MarshalIndent(all, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			fatal("%v", err)
		}
	}
	summarize(os.Stdout, names, ratios, all, *reps)
}

func printRun(r *Result) {
	switch r.Scenario {
	case "idle":
		fmt.Printf("run %d %-7s idle  %5d conns (%s)  hs %.2f ms CPU  RSS/conn after handshake %6.0f B, after %d B echo %6.0f B (%6.0f B after GC)  heap/conn %6.0f / %6.0f B  goroutines %d\n",
			r.Rep, r.Impl, r.Connected, r.TLS, r.HandshakeCPUms, r.PerConnHS, r.Size, r.PerConnBig, r.PerConnBigGC, r.HeapPerConnHS, r.HeapPerConnBig, r.Goroutines)
	case "storm":
		fmt.Printf("run %d %-7s storm %5d conns (%s)  ramp: hs %.3f ms CPU; storm: all back in %.3f s (half %.0f ms, 90%% %.0f ms), server %.3f ms CPU per reconnection, client %.3f\n",
			r.Rep, r.Impl, r.Connected, r.TLS, r.HandshakeCPUms, r.StormSecs, r.StormT50ms, r.StormT90ms, r.StormCPUms, r.StormClient)
	case "echo":
		fmt.Printf("run %d %-7s echo  %5d x %d B  %8.0f msg/s  p50 %6.0f us  p99 %6.0f us  server %.3f CPU-s/1M msgs  client %.1fs  other %.2f cores\n",
			r.Rep, r.Impl, r.Connected, r.Size, r.MsgsPerSec, r.LatP50us, r.LatP99us, r.ServerCPUPerM, r.ClientCPU, r.OtherCores)
	}
	for _, e := range r.Errors {
		fmt.Printf("  error: %s\n", e)
	}
}

// server is a bench server child process.
type server struct {
	cmd     *exec.Cmd
	pid     int
	addr    netip.AddrPort
	stats   string
	memprof string
}

// startServer runs the bench server for impl with -tls on a free loopback
// port, with the Go runtime's defaults (GOGC, GOMEMLIMIT and GOMAXPROCS
// removed from its environment), and waits for its READY line.
func startServer(bin, impl string, extra []string, dir string, profile bool) (*server, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	_ = ln.Close()
	s := &server{addr: addr, stats: filepath.Join(dir, impl+".stats")}
	_ = os.Remove(s.stats)
	args := []string{"-impl", impl, "-addr", addr.String(), "-tls", "-stats", s.stats, "-max-life", "15m"}
	if profile {
		s.memprof = filepath.Join(dir, impl+".pprof")
		args = append(args, "-memprofile", s.memprof)
	}
	args = append(args, extra...)
	s.cmd = exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != "GOGC" && k != "GOMEMLIMIT" && k != "GOMAXPROCS" {
			s.cmd.Env = append(s.cmd.Env, kv)
		}
	}
	s.cmd.Stderr = os.Stderr
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	select {
	case ok := <-child.ScanReady(stdout):
		if !ok {
			_ = s.cmd.Wait()
			return nil, fmt.Errorf("%s exited before READY", impl)
		}
	case <-time.After(30 * time.Second):
		s.stop()
		return nil, fmt.Errorf("%s not ready after 30 s", impl)
	}
	s.pid = s.cmd.Process.Pid
	return s, nil
}

// stop ends the server: SIGTERM, then SIGKILL after 5 s.
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

func fatal(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "wssload: "+f+"\n", a...)
	os.Exit(2)
}
