// Command deflateload measures permessage-deflate echo cost per server CPU
// second: wsloop against lxzan/gws, each run as its own process so that its
// CPU time can be read from /proc, driven by gorilla/websocket clients that
// offer compression (gorilla offers server_no_context_takeover and
// client_no_context_takeover, and compresses every message it sends). The
// servers alternate within each run (wsloop first in odd runs, gws first in
// even ones), so that other load on the machine falls on both alike; the
// summary gives the median and range over the runs and the ratio of the
// medians.
//
//	go run ./cmd/deflateload -sizes 1024,16384 -conns 8 -dur 5s -runs 5
//
// The figure is echoes divided by the server process's user+system CPU time
// over the measured interval: the client's work (gorilla compresses with
// the standard library) does not count. Both servers compress at level 1
// with a 128-byte threshold, as in ../../deflatecmp.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/lxzan/gws"

	"github.com/wsloop/wsloop/bench/internal/payload"
	"github.com/wsloop/wsloop/bench/internal/proc"
	"github.com/wsloop/wsloop/bench/internal/stat"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

func main() {
	serve := flag.String("serve", "", "child mode: run this server (wsloop or gws) and print READY <addr>")
	cpuProfile := flag.String("cpuprofile", "", "child mode: write a CPU profile here until SIGTERM")
	servers := flag.String("servers", "wsloop,gws", "servers to compare, alternated in each run: wsloop, gws, or LABEL=BINARY:NAME (NAME served by another build of this command, e.g. wsloop-base=bin/deflateload-base:wsloop)")
	sizes := flag.String("sizes", "1024,16384", "message sizes in bytes")
	conns := flag.Int("conns", 8, "client connections, one message in flight on each")
	dur := flag.Duration("dur", 5*time.Second, "measured time per server, size and run")
	warm := flag.Duration("warm", time.Second, "echo time before measuring")
	runs := flag.Int("runs", 5, "runs")
	profDir := flag.String("profdir", "", "write each server's CPU profile of the last run to this directory")
	flag.Parse()

	if *serve != "" {
		if err := runServer(*serve, *cpuProfile); err != nil {
			fmt.Fprintln(os.Stderr, "deflateload:", err)
			os.Exit(1)
		}
		return
	}
	names := strings.Split(*servers, ",") // a spec LABEL=BINARY:NAME is reported as LABEL
	var szs []int
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			fmt.Fprintln(os.Stderr, "deflateload: bad size", s)
			os.Exit(2)
		}
		szs = append(szs, n)
	}
	// results[size][server] is one figure per run.
	results := map[int]map[string][]float64{}
	for r := 1; r <= *runs; r++ {
		order := slices.Clone(names)
		if r%2 == 0 {
			slices.Reverse(order)
		}
		for _, size := range szs {
			if results[size] == nil {
				results[size] = map[string][]float64{}
			}
			for _, name := range order {
				prof := ""
				if *profDir != "" && r == *runs {
					prof = fmt.Sprintf("%s/%s-%d.pprof", *profDir, label(name), size)
				}
				res, err := measure(name, size, *conns, *warm, *dur, prof)
				if err != nil {
					fmt.Fprintf(os.Stderr, "deflateload: %s %d: %v\n", name, size, err)
					os.Exit(1)
				}
				fmt.Printf("run %d size %6d %-7s echoes %8d  server CPU %6.2fs  wall %5.2fs  %8.0f echoes/CPU-s  %8.0f echoes/s\n",
					r, size, label(name), res.echoes, res.cpu.Seconds(), res.wall.Seconds(), res.perCPU(), float64(res.echoes)/res.wall.Seconds())
				results[size][name] = append(results[size][name], res.perCPU())
			}
		}
	}
	fmt.Printf("\nechoes per server CPU-second, median [min-max] of %d runs, %d connections:\n", *runs, *conns)
	for _, size := range szs {
		var meds []float64
		for _, name := range names {
			v := slices.Clone(results[size][name])
			slices.Sort(v)
			meds = append(meds, stat.Median(v))
			fmt.Printf("size %6d %-7s %8.0f [%.0f-%.0f]\n", size, label(name), stat.Median(v), v[0], v[len(v)-1])
		}
		for j := 1; j < len(names); j++ {
			var ratios []float64
			for i := range results[size][names[0]] {
				ratios = append(ratios, results[size][names[0]][i]/results[size][names[j]][i])
			}
			slices.Sort(ratios)
			fmt.Printf("size %6d %s/%s: %.2fx (ratio of medians); per run %.2f-%.2f\n", size, label(names[0]), label(names[j]), meds[0]/meds[j], ratios[0], ratios[len(ratios)-1])
		}
	}
}

// label is how a -servers entry is reported: LABEL of LABEL=BINARY:NAME.
func label(spec string) string {
	l, _, _ := strings.Cut(spec, "=")
	return l
}

type result struct {
	echoes int64
	cpu    time.Duration
	wall   time.Duration
}

func (r result) perCPU() float64 { return float64(r.echoes) / r.cpu.Seconds() }

// measure starts the server in a child process, loads it and returns what
// it served and the CPU it used while measured.
func measure(name string, size, conns int, warm, dur time.Duration, prof string) (result, error) {
	bin := os.Args[0]
	if _, spec, ok := strings.Cut(name, "="); ok {
		bin, name, _ = strings.Cut(spec, ":")
	}
	args := []string{"-serve", name}
	if prof != "" {
		args = append(args, "-cpuprofile", prof)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return result{}, err
	}
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return result{}, fmt.Errorf("server did not start: %v", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "READY ")
	if !ok {
		return result{}, fmt.Errorf("server said %q", line)
	}
	msgs := payload.JSON(size)
	var clients []*websocket.Conn
	for range conns {
		d := websocket.Dialer{EnableCompression: true, HandshakeTimeout: 5 * time.Second}
		c, resp, err := d.Dial("ws://"+addr+"/", nil)
		if err != nil {
			return result{}, err
		}
		defer c.Close()
		if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
			return result{}, fmt.Errorf("permessage-deflate not negotiated: %q", ext)
		}
		c.EnableWriteCompression(true)
		clients = append(clients, c)
	}
	var (
		counting atomic.Bool
		stop     atomic.Bool
		echoes   atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		loadErr  error
	)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := i; !stop.Load(); j++ {
				m := msgs[j%len(msgs)]
				err := c.WriteMessage(websocket.TextMessage, m)
				var got []byte
				if err == nil {
					_, got, err = c.ReadMessage()
				}
				if err == nil && !bytes.Equal(got, m) {
					err = fmt.Errorf("echo of %d bytes differs (%d bytes back)", len(m), len(got))
				}
				if err != nil {
					errOnce.Do(func() { loadErr = err })
					return
				}
				if counting.Load() {
					echoes.Add(1)
				}
			}
		}()
	}
	time.Sleep(warm)
	cpu0, err := proc.CPU(cmd.Process.Pid)
	if err != nil {
		return result{}, err
	}
	t0 := time.Now()
	counting.Store(true)
	time.Sleep(dur)
	counting.Store(false)
	wall := time.Since(t0)
	cpu1, err := proc.CPU(cmd.Process.Pid)
	n := echoes.Load()
	stop.Store(true)
	wg.Wait()
	if loadErr != nil {
		return result{}, loadErr
	}
	if err != nil {
		return result{}, err
	}
	return result{echoes: n, cpu: cpu1 - cpu0, wall: wall}, nil
}

// runServer is the child: an echo server with permessage-deflate on, level
// 1, threshold 128, no context takeover (what the gorilla client offers).
func runServer(name, cpuProfile string) error {
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	var addr string
	switch name {
	case "wsloop":
		// gnet listens itself: take a free port, then hand it over.
		addr = ln.Addr().String()
		_ = ln.Close()
		srv := engine.New(wsloopEcho{}, engine.Options{
			Addr:    addr,
			Deflate: engine.Deflate{Enabled: true, Level: 1, Threshold: 128},
			Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err := srv.Start(context.Background()); err != nil {
			return err
		}
		go func() { errc <- srv.Wait() }()
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		}()
	case "gws":
		addr = ln.Addr().String()
		srv := gws.NewServer(gwsEcho{}, &gws.ServerOption{
			PermessageDeflate: gws.PermessageDeflate{Enabled: true, Level: 1, Threshold: 128},
			Logger:            quiet{},
		})
		go func() { errc <- srv.RunListener(ln) }()
		defer ln.Close()
	default:
		return fmt.Errorf("unknown server %q", name)
	}
	fmt.Printf("READY %s\n", addr)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sigs:
		return nil
	case err := <-errc:
		return err
	}
}

type wsloopEcho struct{ handler.Base }

func (wsloopEcho) OnMessage(c handler.Conn, op handler.Op, data []byte) { _ = c.WriteMessage(op, data) }

type gwsEcho struct{ gws.BuiltinEventHandler }

func (gwsEcho) OnPing(c *gws.Conn, p []byte) { _ = c.WritePong(p) }
func (gwsEcho) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	_ = c.WriteMessage(m.Opcode, m.Bytes())
}

// quiet drops gws's log lines.
type quiet struct{}

func (quiet) Error(...any) {}
