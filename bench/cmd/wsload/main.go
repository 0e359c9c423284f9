// Command wsload is the load generator: an event-loop WebSocket client (one
// epoll goroutine per -loops, no goroutine per connection) that opens -n
// connections from loopback source addresses 127.x.y.z spread over
// -src-count addresses starting at -src, and runs one scenario:
//
//	idle       hold the connections; server RSS and heap per connection
//	echo       closed-loop request/response, every echo checked byte for byte
//	broadcast  server-side fan-out of "broadcast:" messages to every connection
//
// With -server-pid it reads the server's RSS and CPU time from /proc and,
// with -stats, asks it for Go heap statistics (SIGUSR1). The result is
// printed as one JSON line prefixed "RESULT " (or indented with -pretty).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/wsloop/wsloop/bench/internal/load"
	"github.com/wsloop/wsloop/bench/internal/proc"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9001", "server address (loopback only)")
	path := flag.String("path", "/", "request path")
	scenario := flag.String("scenario", "echo", "idle, echo or broadcast")
	n := flag.Int("n", 1000, "connections")
	size := flag.Int("size", 1024, "message payload bytes (echo), broadcast body bytes (broadcast)")
	loops := flag.Int("loops", 1, "client event loops")
	inflight := flag.Int("inflight", 256, "most handshakes in flight while ramping")
	src := flag.String("src", "127.0.0.2", "first source address")
	srcCount := flag.Int("src-count", 4, "number of consecutive source addresses to spread connections over")
	settle := flag.Duration("settle", 2*time.Second, "idle: wait after the ramp before reading RSS")
	hold := flag.Duration("hold", 10*time.Second, "idle: hold time")
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
	cfg := load.Config{Target: target, Path: *path, Sources: sources, Loops: *loops, Inflight: *inflight}
	o := load.Options{Scenario: *scenario, N: *n, Size: *size, Settle: *settle, Hold: *hold, Warmup: *warmup,
		Duration: *duration, Rounds: *rounds, Window: max(1, *window), ServerPID: *pid, StatsFile: *stats, Label: *label}
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
