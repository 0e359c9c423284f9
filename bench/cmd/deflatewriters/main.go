// Command deflatewriters measures what many goroutines writing compressed
// messages cost wsloop (issue 20, item 6). Each event loop has one
// compressor, shared under a mutex (engine/deflate.go, loopDeflate.mu) by
// every goroutine that writes to one of the loop's connections: do writers
// queue on it?
//
// One process: a wsloop server with permessage-deflate (level 1,
// threshold 128, no context takeover) and -conns raw clients that offer
// permessage-deflate and read and discard every byte (no decompression, so
// the client costs little). Then -writers goroutines on the server side
// each send -size byte JSON-like messages with Conn.WriteMessage, round
// robin over all connections, for -dur. Every run records:
//
//   - messages per second and the process's CPU per message (client
//     included, which only reads);
//
//   - the mutex profile (runtime.SetMutexProfileFraction(1)): the time
//     writers spent waiting for a contended lock, total and on the
//     compressor's (stacks through engine.(*wsConn).writeDeflate);
//
//   - with -profdir, a CPU profile per run.
//
//     go run ./cmd/deflatewriters -writers 1,8,64 -loops 1,2 -runs 5
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsloop/wsloop/bench/internal/payload"
	"github.com/wsloop/wsloop/bench/internal/proc"
	"github.com/wsloop/wsloop/bench/internal/stat"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

type rec struct{ handler.Base }

func main() {
	writers := flag.String("writers", "1,8,64", "writing goroutines, comma-separated")
	loops := flag.String("loops", "1,2", "event loops, comma-separated")
	conns := flag.Int("conns", 64, "client connections")
	size := flag.Int("size", 1024, "message bytes")
	dur := flag.Duration("dur", 3*time.Second, "measured time per run")
	runs := flag.Int("runs", 5, "runs of each configuration, alternated")
	profDir := flag.String("profdir", "", "write a CPU profile of each configuration's last run here")
	flag.Parse()
	runtime.SetMutexProfileFraction(1)

	var ws, ls []int
	for _, f := range strings.Split(*writers, ",") {
		n, _ := strconv.Atoi(f)
		ws = append(ws, n)
	}
	for _, f := range strings.Split(*loops, ",") {
		n, _ := strconv.Atoi(f)
		ls = append(ls, n)
	}
	type key struct{ loops, writers int }
	res := map[key][]result{}
	var keys []key
	for _, l := range ls {
		for _, w := range ws {
			keys = append(keys, key{l, w})
		}
	}
	for r := 0; r < *runs; r++ {
		for i := range keys {
			k := keys[(i+r)%len(keys)]
			prof := ""
			if *profDir != "" && r == *runs-1 {
				_ = os.MkdirAll(*profDir, 0o755)
				prof = filepath.Join(*profDir, fmt.Sprintf("cpu-l%d-w%d.pprof", k.loops, k.writers))
			}
			x, err := measure(k.loops, k.writers, *conns, *size, *dur, prof)
			if err != nil {
				fmt.Fprintln(os.Stderr, "deflatewriters:", err)
				os.Exit(1)
			}
			fmt.Printf("run %d loops %d writers %2d: %8.0f msg/s  %6.2f us CPU/msg  lock wait %6.2f us/msg (compressor %6.2f)  %.2f cores, load %.1f\n",
				r+1, k.loops, k.writers, x.rate(), x.cpuPerMsg(), x.waitPerMsg(), x.deflWaitPerMsg(), x.cpu.Seconds()/x.wall.Seconds(), x.load)
			res[k] = append(res[k], x)
		}
	}
	fmt.Printf("\n%d connections, %d-byte messages, %v per run, %d runs alternated; median (min–max)\n\n", *conns, *size, *dur, *runs)
	fmt.Println("| loops | writers | msg/s | process CPU µs/msg | lock wait µs/msg, all | on the compressor | cores used |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, k := range keys {
		rs := res[k]
		col := func(f func(result) float64, fm string) string {
			var v []float64
			for _, r := range rs {
				v = append(v, f(r))
			}
			slices.Sort(v)
			return fmt.Sprintf(fm+" ("+fm+"–"+fm+")", stat.Median(v), v[0], v[len(v)-1])
		}
		fmt.Printf("| %d | %d | %s | %s | %s | %s | %s |\n", k.loops, k.writers, col(result.rate, "%.0f"), col(result.cpuPerMsg, "%.2f"),
			col(result.waitPerMsg, "%.2f"), col(result.deflWaitPerMsg, "%.2f"), col(func(r result) float64 { return r.cpu.Seconds() / r.wall.Seconds() }, "%.2f"))
	}
}

type result struct {
	msgs           int64
	wall, cpu      time.Duration
	wait, deflWait time.Duration // contended-lock delay during the run
	load           float64
}

func (r result) rate() float64           { return float64(r.msgs) / r.wall.Seconds() }
func (r result) cpuPerMsg() float64      { return r.cpu.Seconds() * 1e6 / float64(max(1, r.msgs)) }
func (r result) waitPerMsg() float64     { return r.wait.Seconds() * 1e6 / float64(max(1, r.msgs)) }
func (r result) deflWaitPerMsg() float64 { return r.deflWait.Seconds() * 1e6 / float64(max(1, r.msgs)) }

type opener struct {
	handler.Base
	mu    sync.Mutex
	conns []handler.Conn
	got   chan struct{}
}

func (o *opener) OnOpen(c handler.Conn) {
	o.mu.Lock()
	o.conns = append(o.conns, c)
	o.mu.Unlock()
	o.got <- struct{}{}
}

func measure(loops, writers, conns, size int, dur time.Duration, cpuProf string) (result, error) {
	var r result
	h := &opener{got: make(chan struct{}, conns)}
	srv := engine.New(h, engine.Options{Addr: "127.0.0.1:0", EventLoops: loops, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Deflate: engine.Deflate{Enabled: true, Level: 1, Threshold: 128}, MaxOutboundBytes: 64 << 20})
	if err := srv.Start(context.Background()); err != nil {
		return r, err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	var read atomic.Int64
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			return r, err
		}
		clients = append(clients, c)
		req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover\r\n\r\n"
		if _, err := io.WriteString(c, req); err != nil {
			return r, err
		}
		br := bufio.NewReaderSize(c, 64<<10)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 || !strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
			return r, fmt.Errorf("handshake: %v %v", resp, err)
		}
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := br.Read(buf)
				read.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	for i := 0; i < conns; i++ {
		<-h.got
	}
	h.mu.Lock()
	all := slices.Clone(h.conns)
	h.mu.Unlock()
	msgs := payload.JSON(size)
	var stop atomic.Bool
	var sent atomic.Int64
	var wg sync.WaitGroup
	runtime.GC()
	mp0 := mutexDelay()
	cpu0, _ := proc.CPU(os.Getpid())
	t0 := time.Now()
	if cpuProf != "" {
		f, err := os.Create(cpuProf)
		if err == nil {
			_ = pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	r.load = proc.LoadAvg()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var n int64
			for i := w; !stop.Load(); i++ {
				c := all[i%len(all)]
				if err := c.WriteMessage(handler.Text, msgs[i%len(msgs)]); err != nil {
					break
				}
				n++
			}
			sent.Add(n)
		}(w)
	}
	time.Sleep(dur)
	stop.Store(true)
	wg.Wait()
	r.wall = time.Since(t0)
	cpu1, _ := proc.CPU(os.Getpid())
	r.cpu = cpu1 - cpu0
	r.msgs = sent.Load()
	mp1 := mutexDelay()
	r.wait = mp1.all - mp0.all
	r.deflWait = mp1.defl - mp0.defl
	if st := srv.Stats(); st.SlowConsumers > 0 {
		return r, fmt.Errorf("%d connections were dropped as slow consumers", st.SlowConsumers)
	}
	return r, nil
}

type delays struct{ all, defl time.Duration }

// mutexDelay sums the contention delay in the mutex profile so far: all of
// it, and the part whose stack passes through writeDeflate (the loop's
// compressor, or a context-takeover connection's own lock). It reads the
// profile's text form (debug=1): a header with cycles/second, then per
// stack "cycles count @ pcs" and one "#\tfunction" line per frame.
func mutexDelay() delays {
	var b strings.Builder
	_ = pprof.Lookup("mutex").WriteTo(&b, 1)
	var d delays
	perSec := 1.0
	var cur float64
	inDefl := false
	flush := func() {
		v := time.Duration(cur / perSec * 1e9)
		d.all += v
		if inDefl {
			d.defl += v
		}
		cur, inDefl = 0, false
	}
	for _, line := range strings.Split(b.String(), "\n") {
		switch {
		case strings.HasPrefix(line, "cycles/second="):
			perSec, _ = strconv.ParseFloat(strings.TrimPrefix(line, "cycles/second="), 64)
		case strings.Contains(line, " @ "):
			flush()
			f := strings.Fields(line)
			cur, _ = strconv.ParseFloat(f[0], 64)
		case strings.HasPrefix(line, "#\t") && strings.Contains(line, "writeDeflate"):
			inDefl = true
		}
	}
	flush()
	return d
}
