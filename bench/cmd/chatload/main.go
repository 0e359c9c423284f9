// Command chatload is the load test of the chat example: members join one
// room through the chat's protocol, a second after the last of them sees
// the whole room one member sends -msgs messages at -rate per second, and
// every member records when each message arrives. It runs the same load
// against wsloop's examples/chat and against gorilla/websocket's
// examples/chat (built from the module cache: goroutine per connection, one
// room, every text message to everyone), alternately in one invocation,
// and reports delivery latency (p50, p99, max), lost deliveries, dropped
// members and server CPU per delivery.
//
//	cd bench
//	go run ./cmd/chatload -members 1000,2000 -reps 3
//	go run ./cmd/chatload -impls wsloop,wsloop-nats -members 10000 -procs 4 -reps 3
//
// Implementations (-impls): wsloop (one chat process), wsloop-nats (two
// chat processes sharing the room through a nats-server process, members
// split between them), gorilla; "NAME=wsloop ARGS" or "NAME=wsloop-nats
// ARGS" for the chat with arguments ("wsloop-1=wsloop -loops 1"); and
// "NAME=PATH ARGS" for any chat binary that takes -addr and speaks the
// wsloop chat protocol (an older build, say).
//
// The members live in -procs client processes (this binary with -worker),
// each member a goroutine that reads continuously, as a browser tab does;
// their connections come from several 127.x.y.z source addresses so the
// ephemeral ports of one address are never the limit. Everything runs on
// loopback and every process stops by itself (-max-life).
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"
)

func main() {
	isWorker := flag.Bool("worker", false, "run as a client process (started by the orchestrator)")
	// worker flags
	impl := flag.String("impl", "wsloop", "worker: wsloop or gorilla protocol")
	addrs := flag.String("addrs", "", "worker: comma-separated server addresses; member i uses the (i mod n)th")
	first := flag.Int("first", 0, "worker: first member id")
	count := flag.Int("count", 0, "worker: members in this process")
	src := flag.String("src", "127.0.0.2", "worker: first source address")
	srcCount := flag.Int("src-count", 4, "worker: consecutive source addresses")
	dialers := flag.Int("dialers", 64, "worker: handshakes in flight")
	// shared
	total := flag.Int("total", 0, "worker: members in the room")
	room := flag.String("room", "load", "room name")
	msgs := flag.Int("msgs", 200, "messages the sender sends")
	rate := flag.Float64("rate", 20, "messages per second")
	settle := flag.Duration("settle-timeout", 5*time.Minute, "longest wait for every member to see the whole room")
	// orchestrator flags
	impls := flag.String("impls", "wsloop,gorilla", "implementations: wsloop, wsloop-nats, gorilla, NAME=wsloop ARGS, NAME=PATH ARGS")
	sizes := flag.String("members", "1000,2000", "room sizes")
	reps := flag.Int("reps", 3, "repetitions (the order of the implementations rotates)")
	procs := flag.Int("procs", 2, "client processes per run")
	wait := flag.Duration("wait", time.Second, "pause between the room filling and the first message")
	grace := flag.Duration("grace", 20*time.Second, "longest wait for the last deliveries after the last message was sent")
	out := flag.String("out", "bin/chatload-results", "directory for binaries, logs and results")
	noBuild := flag.Bool("no-build", false, "use the servers already built in -out (chat, gorilla-chat, nats-server) instead of building them")
	maxLife := flag.Duration("max-life", 3*time.Hour, "exit after this long whatever happens")
	flag.Parse()

	time.AfterFunc(*maxLife, func() {
		fmt.Fprintln(os.Stderr, "chatload: max-life reached, exiting")
		os.Exit(3)
	})
	if *isWorker {
		sources, err := sourceRange(*src, *srcCount)
		if err != nil {
			fatal("%v", err)
		}
		runWorker(workerConfig{impl: *impl, addrs: strings.Split(*addrs, ","), room: *room, first: *first,
			count: *count, total: *total, sources: sources, msgs: *msgs, rate: *rate, sender: *first == 0,
			dialers: *dialers, settleTO: *settle})
		return
	}
	o := orchestration{impls: splitList(*impls), room: *room, reps: *reps, procs: *procs, msgs: *msgs, rate: *rate,
		wait: *wait, grace: *grace, settle: *settle, out: *out, dialers: *dialers, noBuild: *noBuild}
	for _, s := range splitList(*sizes) {
		var n int
		if _, err := fmt.Sscan(s, &n); err != nil || n < 2 {
			fatal("bad room size %q", s)
		}
		o.sizes = append(o.sizes, n)
	}
	if err := o.run(); err != nil {
		fatal("%v", err)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// sourceRange returns n consecutive loopback addresses from first.
func sourceRange(first string, n int) ([]netip.Addr, error) {
	a, err := netip.ParseAddr(first)
	if err != nil || !a.Is4() || !a.IsLoopback() {
		return nil, fmt.Errorf("-src must be an IPv4 loopback address, got %q", first)
	}
	var out []netip.Addr
	for range max(1, n) {
		if !a.IsLoopback() {
			return nil, fmt.Errorf("source range leaves 127.0.0.0/8")
		}
		out = append(out, a)
		a = a.Next()
	}
	return out, nil
}

func fatal(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "chatload: "+f+"\n", a...)
	os.Exit(2)
}
