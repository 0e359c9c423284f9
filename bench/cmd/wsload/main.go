// Command wsload is the load generator: an event-loop WebSocket client (one
// epoll goroutine per -loops, no goroutine per connection) that opens -n
// connections from loopback source addresses 127.x.y.z spread over
// -src-count addresses starting at -src, and runs one scenario:
//
//	idle       hold the connections; server RSS and heap per connection
//	echo       closed-loop request/response, every echo checked byte for byte
//	broadcast  server-side fan-out of "broadcast:" messages to every connection
//	hold       hold the connections for a controller (cmd/million,
//	           cmd/storm): prints "OPENED n failed", then answers "check"
//	           on stdin with "CHECKED sent ok", "storm" (drop every
//	           connection at once and reconnect them) with "BACK opened
//	           failed secs t50ms t90ms t99ms hsp99ms", and ends on "quit"
//	           or end of input
//
// With -open-rate, echo is open-loop: each connection sends on a fixed
// schedule whether or not its last echo came back, and latency runs from
// the scheduled send time (coordinated omission corrected, as in wrk2).
//
// -rate paces the ramp (new connections per second). With -server-pid it
// reads the server's RSS and CPU time from /proc and, with -stats, asks it
// for Go runtime statistics: SIGUSR2 (no GC) at every idle reading, SIGUSR1
// (a forced GC) only after the last RSS reading, for the live heap. The
// result is printed as one JSON line prefixed "RESULT " (or indented with
// -pretty).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/wsloop/wsloop/bench/internal/load"
	"github.com/wsloop/wsloop/bench/internal/pin"
	"github.com/wsloop/wsloop/bench/internal/proc"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9001", "server address (loopback only)")
	path := flag.String("path", "/", "request path")
	scenario := flag.String("scenario", "echo", "idle, echo, broadcast or hold")
	n := flag.Int("n", 1000, "connections")
	size := flag.Int("size", 1024, "message payload bytes (echo), broadcast body bytes (broadcast)")
	loops := flag.Int("loops", 1, "client event loops")
	rampTimeout := flag.Duration("ramp-timeout", 2*time.Minute, "give up waiting for the ramp after this long")
	inflight := flag.Int("inflight", 256, "most handshakes in flight while ramping")
	stormInflight := flag.Int("storm-inflight", 0, "hold: most handshakes in flight while a storm's connections come back (0: -inflight)")
	openRate := flag.Float64("open-rate", 0, "echo: open loop at this many messages per second in all (0: closed loop)")
	src := flag.String("src", "127.0.0.2", "first source address")
	srcCount := flag.Int("src-count", 4, "number of consecutive source addresses to spread connections over")
	rate := flag.Float64("rate", 0, "ramp at this many new connections per second (0: as fast as -inflight allows)")
	readAt := flag.String("read-at", "0s,2s", "idle: also read the server's memory at these moments after the ramp (comma-separated durations)")
	settle := flag.Duration("settle", 0, "idle: an extra reading this long after the ramp (kept for older scripts; see -read-at)")
	hold := flag.Duration("hold", 10*time.Second, "idle: hold time after the ramp; the headline RSS is read at its end")
	serverGC := flag.Bool("server-gc", true, "idle: after the last reading, force a GC in the server (SIGUSR1) for its live heap and read RSS again")
	gcWait := flag.Duration("gc-wait", 2*time.Second, "idle: wait between the forced server GC and the RSS reading after it")
	baseGC := flag.Bool("base-gc", false, "idle: force a GC in the fresh server before the baseline (the old method)")
	echoAll := flag.Bool("echo-all", false, "idle: send one echo on every connection right after the ramp, before the readings")
	sample := flag.Float64("sample", 0.01, "idle, hold: fraction of the connections echo-checked after the hold (at least 20)")
	cpus := flag.String("cpus", "", "run only on these CPUs (taskset -c syntax, e.g. 8-15)")
	warmup := flag.Duration("warmup", 2*time.Second, "echo: warmup")
	duration := flag.Duration("duration", 10*time.Second, "echo/broadcast: measured time")
	rounds := flag.Int("rounds", 20, "broadcast: sequential rounds for time-to-all")
	window := flag.Int("window", 4, "broadcast: broadcasts in flight during the rate phase")
	pid := flag.Int("server-pid", 0, "server process to measure (RSS, CPU)")
	stats := flag.String("stats", "", "server's -stats file (Go heap via SIGUSR1)")
	label := flag.String("label", "", "label copied into the result")
	pretty := flag.Bool("pretty", false, "print the result indented instead of a RESULT line")
	quiet := flag.Bool("quiet", false, "no progress output")
	maxLife := flag.Duration("max-life", 15*time.Minute, "exit after this long whatever happens")
	flag.Parse()
	if err := pin.Apply(*cpus); err != nil {
		fatal("%v", err)
	}

	time.AfterFunc(*maxLife, func() {
		fmt.Fprintln(os.Stderr, "wsload: max-life reached, exiting")
		os.Exit(3)
	})
	target, err := netip.ParseAddrPort(*addr)
	if err != nil || !target.Addr().Is4() || !target.Addr().IsLoopback() {
		fatal("-addr must be an IPv4 loopback address with a port, got %q", *addr)
	}
	first, err := netip.ParseAddr(*src)
	if err != nil || !first.Is4() || !first.IsLoopback() {
		fatal("-src must be an IPv4 loopback address, got %q", *src)
	}
	var sources []netip.Addr
	a := first
	for i := 0; i < max(1, *srcCount); i++ {
		if !a.IsLoopback() {
			fatal("source range leaves 127.0.0.0/8")
		}
		sources = append(sources, a)
		a = a.Next()
	}
	limit := proc.RaiseNoFile()
	if uint64(*n)+32 > limit {
		fatal("-n %d needs more descriptors than RLIMIT_NOFILE allows (%d); split the connections over more processes", *n, limit)
	}
	cfg := load.Config{Target: target, Path: *path, Sources: sources, Loops: *loops, Inflight: *inflight,
		MaxInflight: max(*inflight, *stormInflight)}
	var moments []time.Duration
	for _, f := range strings.Split(*readAt, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil || d < 0 {
			fatal("bad -read-at %q", *readAt)
		}
		moments = append(moments, d)
	}
	if *settle > 0 {
		moments = append(moments, *settle)
	}
	o := load.Options{Scenario: *scenario, N: *n, Size: *size, Rate: *rate, ReadAt: moments, Hold: *hold,
		ServerGC: *serverGC, GCWait: *gcWait, BaseGC: *baseGC, EchoAll: *echoAll, Sample: *sample, Warmup: *warmup,
		Duration: *duration, Rounds: *rounds, Window: max(1, *window), ServerPID: *pid, StatsFile: *stats, Label: *label,
		Control: os.Stdin, Out: os.Stdout, RampTimeout: *rampTimeout, OpenRate: *openRate, StormInflight: *stormInflight}
	if !*quiet {
		o.Progress = os.Stderr
	}
	r, err := load.Run(cfg, o)
	if err != nil {
		fatal("%v", err)
	}
	if *pretty {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Println(string(b))
	} else {
		b, _ := json.Marshal(r)
		fmt.Printf("RESULT %s\n", b)
	}
}

func fatal(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "wsload: "+f+"\n", a...)
	os.Exit(2)
}
