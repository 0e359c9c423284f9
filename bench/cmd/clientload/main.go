// Command clientload measures WebSocket clients as the load side: wsloop's
// event-loop client (engine.Server.Dial) against gorilla/websocket's and
// gws's clients, in the same run, against the same server (wsloop's bench
// server, bench/servers, in a child process of its own).
//
//	go run ./cmd/clientload                  # echo: 1000 connections x 1 KiB, CPU per message
//	go run ./cmd/clientload -idle 10000      # bytes per idle client connection
//
// Echo: each connection sends a binary message, waits for its echo and
// sends the next (closed loop), for -dur after -warmup. Every run starts a
// fresh server process and a fresh client process (this binary again, with
// -client), rotating the order of the clients between repetitions; the
// table gives medians of -reps runs. The figure to compare is the client
// process's CPU time (user+system, from /proc) per echoed message: client
// and server share this machine's cores, so messages per second mostly
// measures the machine.
//
// Idle: the client process dials -idle connections that then stay quiet,
// and reports its Go heap in use and its RSS, after a forced GC, per
// connection over a baseline taken before dialing.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/lxzan/gws"

	"github.com/wsloop/wsloop/bench/internal/proc"
	"github.com/wsloop/wsloop/bench/servers"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

var clients = []string{"wsloop", "gorilla", "gws"}

var memProfile string

// result is what one client run reports on its stdout, as JSON.
type result struct {
	Impl     string  `json:"impl"`
	Conns    int     `json:"conns"`
	Msgs     int64   `json:"msgs"`
	Seconds  float64 `json:"seconds"`
	CPU      float64 `json:"cpu_seconds"`        // the client process's user+system CPU in the window
	ServerCP float64 `json:"server_cpu_seconds"` // filled in by the parent
	// Idle mode.
	HeapPerConn float64 `json:"heap_per_conn"`
	RSSPerConn  float64 `json:"rss_per_conn"`
	Goroutines  int     `json:"goroutines"`
}

func main() {
	serve := flag.String("serve", "", "internal: run the wsloop bench server on this address")
	client := flag.String("client", "", "internal: run one client implementation against -addr")
	addr := flag.String("addr", "127.0.0.1:0", "internal: the server's address")
	conns := flag.Int("conns", 1000, "connections")
	size := flag.Int("size", 1024, "message size in bytes")
	dur := flag.Duration("dur", 5*time.Second, "measured time per run")
	warmup := flag.Duration("warmup", time.Second, "time before measuring")
	reps := flag.Int("reps", 3, "repetitions per client")
	idle := flag.Int("idle", 0, "measure N idle client connections instead of echo")
	only := flag.String("clients", strings.Join(clients, ","), "clients to run, comma-separated")
	flag.StringVar(&memProfile, "memprofile", "", "with -client and -idle: write a heap profile (every allocation sampled) to this file")
	flag.Parse()
	if memProfile != "" {
		runtime.MemProfileRate = 1
	}
	proc.RaiseNoFile()

	switch {
	case *serve != "":
		runServer(*serve)
	case *client != "":
		r, err := runClient(*client, *addr, *conns, *size, *warmup, *dur, *idle)
		if err != nil {
			fmt.Fprintln(os.Stderr, "clientload:", err)
			os.Exit(1)
		}
		json.NewEncoder(os.Stdout).Encode(r)
	default:
		if err := orchestrate(strings.Split(*only, ","), *conns, *size, *warmup, *dur, *reps, *idle); err != nil {
			fmt.Fprintln(os.Stderr, "clientload:", err)
			os.Exit(1)
		}
	}
}

// runServer runs wsloop's bench server and prints "READY addr".
func runServer(addr string) {
	run, err := servers.Get("wsloop")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ln := addr
	err = run(ln, servers.Settings{}, func() { fmt.Println("READY") })
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}

// orchestrate runs every client -reps times, each against a fresh server.
func orchestrate(impls []string, conns, size int, warmup, dur time.Duration, reps, idle int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	all := map[string][]result{}
	for rep := 0; rep < reps; rep++ {
		for i := range impls {
			impl := impls[(i+rep)%len(impls)] // rotate the order between repetitions
			r, err := oneRun(self, impl, conns, size, warmup, dur, idle)
			if err != nil {
				return fmt.Errorf("%s: %w", impl, err)
			}
			all[impl] = append(all[impl], r)
			if idle > 0 {
				fmt.Fprintf(os.Stderr, "rep %d %-8s heap %.0f B/conn, RSS %.0f B/conn, %d goroutines\n", rep+1, impl, r.HeapPerConn, r.RSSPerConn, r.Goroutines)
			} else {
				fmt.Fprintf(os.Stderr, "rep %d %-8s %8.0f msg/s  client %.2f µs/msg  server %.2f µs/msg\n", rep+1, impl,
					float64(r.Msgs)/r.Seconds, r.CPU/float64(r.Msgs)*1e6, r.ServerCP/float64(r.Msgs)*1e6)
			}
		}
	}
	fmt.Printf("go %s, %d CPUs, GOMAXPROCS %d\n", runtime.Version(), runtime.NumCPU(), runtime.GOMAXPROCS(0))
	if idle > 0 {
		fmt.Printf("idle: %d client connections, medians of %d runs\n\n", idle, reps)
		fmt.Println("| client | Go heap per conn | RSS per conn | goroutines |")
		fmt.Println("| --- | --- | --- | --- |")
		for _, impl := range impls {
			rs := all[impl]
			fmt.Printf("| %s | %.0f B | %.0f B | %d |\n", impl, median(rs, func(r result) float64 { return r.HeapPerConn }),
				median(rs, func(r result) float64 { return r.RSSPerConn }), rs[0].Goroutines)
		}
		return nil
	}
	fmt.Printf("echo: %d connections x %d B, closed loop, %v per run, medians of %d runs (min-max)\n\n", conns, size, dur, reps)
	fmt.Println("| client | msg/s | client CPU µs/msg | vs wsloop | server CPU µs/msg |")
	fmt.Println("| --- | --- | --- | --- | --- |")
	per := func(r result) float64 { return r.CPU / float64(r.Msgs) * 1e6 }
	base := median(all[impls[0]], per)
	for _, impl := range impls {
		rs := all[impl]
		lo, hi := span(rs, per)
		m := median(rs, per)
		fmt.Printf("| %s | %.0f | %.2f (%.2f-%.2f) | %.2fx | %.2f |\n", impl,
			median(rs, func(r result) float64 { return float64(r.Msgs) / r.Seconds }), m, lo, hi, m/base,
			median(rs, func(r result) float64 { return r.ServerCP / float64(r.Msgs) * 1e6 }))
	}
	return nil
}

// oneRun starts a server process and a client process and returns the
// client's result with the server's CPU over the same run.
func oneRun(self, impl string, conns, size int, warmup, dur time.Duration, idle int) (result, error) {
	srv := exec.Command(self, "-serve", "127.0.0.1:0") // its log lines are not wanted; a failure shows as no READY
	out, _ := srv.StdoutPipe()
	if err := srv.Start(); err != nil {
		return result{}, err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	br := bufio.NewReader(out)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "READY") {
		return result{}, fmt.Errorf("server did not start: %q %v", line, err)
	}
	addr, err := serverAddr(srv.Process.Pid)
	if err != nil {
		return result{}, err
	}
	cpu0, _ := proc.CPU(srv.Process.Pid)
	cl := exec.Command(self, "-client", impl, "-addr", addr, "-conns", fmt.Sprint(conns), "-size", fmt.Sprint(size),
		"-warmup", warmup.String(), "-dur", dur.String(), "-idle", fmt.Sprint(idle))
	cl.Stderr = os.Stderr
	b, err := cl.Output()
	if err != nil {
		return result{}, fmt.Errorf("client: %v", err)
	}
	cpu1, _ := proc.CPU(srv.Process.Pid)
	var r result
	if err := json.Unmarshal(b, &r); err != nil {
		return result{}, fmt.Errorf("client output %q: %v", b, err)
	}
	// The server's CPU covers the client's whole life (dial and warmup
	// too): scale it to the measured window's share of the messages.
	r.ServerCP = (cpu1 - cpu0).Seconds() * r.Seconds / (r.Seconds + warmup.Seconds())
	return r, nil
}

// serverAddr finds the port the server process listens on.
func serverAddr(pid int) (string, error) {
	// The bench server listens on 127.0.0.1:0: find its socket in
	// /proc/net/tcp by the inodes of its descriptors.
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return "", err
	}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] { // 0A: LISTEN
			continue
		}
		var port int
		fmt.Sscanf(f[1][strings.IndexByte(f[1], ':')+1:], "%X", &port)
		return fmt.Sprintf("127.0.0.1:%d", port), nil
	}
	return "", fmt.Errorf("no listening socket for pid %d", pid)
}

func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func span(rs []result, f func(result) float64) (float64, float64) {
	lo, hi := f(rs[0]), f(rs[0])
	for _, r := range rs {
		lo, hi = min(lo, f(r)), max(hi, f(r))
	}
	return lo, hi
}

// --- the client side ------------------------------------------------------

// counter counts echoed messages from the start of the window.
type counter struct {
	on   atomic.Bool
	msgs atomic.Int64
}

func (c *counter) add() {
	if c.on.Load() {
		c.msgs.Add(1)
	}
}

func runClient(impl, addr string, conns, size int, warmup, dur time.Duration, idle int) (result, error) {
	url := "ws://" + addr + "/"
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i)
	}
	n := conns
	if idle > 0 {
		n = idle
	}
	var cnt counter
	var heap0, rss0 float64
	if idle > 0 {
		heap0, rss0 = memNow()
	}
	var stop func()
	var err error
	switch impl {
	case "wsloop":
		stop, err = wsloopClients(url, n, payload, idle > 0, &cnt)
	case "gorilla":
		stop, err = gorillaClients(url, n, payload, idle > 0, &cnt)
	case "gws":
		stop, err = gwsClients(url, n, payload, idle > 0, &cnt)
	default:
		return result{}, fmt.Errorf("unknown client %q (have %v)", impl, clients)
	}
	if err != nil {
		return result{}, err
	}
	defer stop()
	r := result{Impl: impl, Conns: n}
	if idle > 0 {
		heap1, rss1 := memNow()
		r.HeapPerConn = (heap1 - heap0) / float64(n)
		r.RSSPerConn = (rss1 - rss0) / float64(n)
		r.Goroutines = runtime.NumGoroutine()
		if memProfile != "" {
			f, err := os.Create(memProfile)
			if err != nil {
				return r, err
			}
			defer f.Close()
			if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
				return r, err
			}
		}
		return r, nil
	}
	time.Sleep(warmup)
	cpu0, _ := proc.CPU(os.Getpid())
	t0 := time.Now()
	cnt.on.Store(true)
	time.Sleep(dur)
	cnt.on.Store(false)
	cpu1, _ := proc.CPU(os.Getpid())
	r.Seconds = time.Since(t0).Seconds()
	r.Msgs = cnt.msgs.Load()
	r.CPU = (cpu1 - cpu0).Seconds()
	return r, nil
}

// memNow returns the live Go heap and the RSS after a forced GC.
func memNow() (heap, rss float64) {
	runtime.GC()
	debug.FreeOSMemory()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	r, _ := proc.RSS(os.Getpid())
	return float64(s[0].Value.Uint64()), float64(r)
}

// wsloop: every connection on the loops of one engine, echoing from
// OnMessage: no goroutine per connection.
type wsloopEcho struct {
	handler.Base
	cnt     *counter
	payload []byte
}

func (h *wsloopEcho) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	h.cnt.add()
	_ = c.WriteMessage(handler.Binary, h.payload)
}

func wsloopClients(url string, n int, payload []byte, idle bool, cnt *counter) (func(), error) {
	h := &wsloopEcho{cnt: cnt, payload: payload}
	srv := engine.New(h, engine.Options{
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		IdleTimeout: -1, // the idle measurement must not ping
	})
	if err := srv.Start(context.Background()); err != nil {
		return nil, err
	}
	conns := make([]handler.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, _, err := srv.Dial(context.Background(), url, nil)
		if err != nil {
			return nil, fmt.Errorf("dial %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	if !idle {
		for _, c := range conns {
			c.WriteMessage(handler.Binary, payload)
		}
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}

// gorilla: a goroutine per connection reading and writing, as its
// documentation shows.
func gorillaClients(url string, n int, payload []byte, idle bool, cnt *counter) (func(), error) {
	conns := make([]*websocket.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			return nil, fmt.Errorf("dial %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !idle {
				if c.WriteMessage(websocket.BinaryMessage, payload) != nil {
					return
				}
			}
			for {
				_, _, err := c.ReadMessage()
				if err != nil {
					return
				}
				cnt.add()
				if c.WriteMessage(websocket.BinaryMessage, payload) != nil {
					return
				}
			}
		}()
	}
	return func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}, nil
}

// gws: its client with a read-loop goroutine per connection, echoing from
// OnMessage.
type gwsEcho struct {
	gws.BuiltinEventHandler
	cnt     *counter
	payload []byte
}

func (h *gwsEcho) OnMessage(c *gws.Conn, m *gws.Message) {
	m.Close()
	h.cnt.add()
	_ = c.WriteMessage(gws.OpcodeBinary, h.payload)
}

func gwsClients(url string, n int, payload []byte, idle bool, cnt *counter) (func(), error) {
	h := &gwsEcho{cnt: cnt, payload: payload}
	conns := make([]*gws.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, _, err := gws.NewClient(h, &gws.ClientOption{Addr: url, RequestHeader: http.Header{}})
		if err != nil {
			return nil, fmt.Errorf("dial %d: %w", i, err)
		}
		conns = append(conns, c)
		go c.ReadLoop()
	}
	if !idle {
		for _, c := range conns {
			c.WriteMessage(gws.OpcodeBinary, payload)
		}
	}
	return func() {
		for _, c := range conns {
			c.NetConn().Close()
		}
	}, nil
}
