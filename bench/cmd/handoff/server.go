package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// The server side of the benchmark: an echo server whose connections move
// (handler.Mover, handler.Restorer, no state of their own). It runs as a
// process of its own (this binary with -role server) and says what it
// does on stdout, one line per event, for the driver:
//
//	ready ADDR PID
//	tookover PID restored=N refused=N restore_ms=F
//	handedoff moved=N stayed=N pause_ms=F duration_ms=F
//	stopped PID
//
// SIGHUP deploys without disconnecting: the server starts this executable
// again with -takeover and hands it everything. SIGTERM drains (1001 to
// every client) and exits, as a plain restart does.

type echoMover struct{ handler.Base }

func (echoMover) OnMessage(c handler.Conn, op handler.Op, data []byte) { _ = c.WriteMessage(op, data) }
func (echoMover) OnMove(handler.Conn) ([]byte, error)                  { return nil, nil }
func (echoMover) OnMoved(handler.Conn)                                 {}
func (echoMover) OnRestore(handler.Conn, []byte) (handler.Handler, any, error) {
	return nil, nil, nil
}

type serverFlags struct {
	addr, dir, takeover string
	loops               int
	reusePort           bool
}

func runServer(f serverFlags) error {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("HANDOFF_BENCH_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	opts := engine.Options{Addr: f.addr, EventLoops: f.loops, ReusePort: f.reusePort, Logger: log}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	served := make(chan error, 1)
	var srv *engine.Server
	if f.takeover != "" {
		if p := os.Getenv("HANDOFF_BENCH_CPUPROFILE"); p != "" {
			// The successor's takeover, for go tool pprof.
			if pf, err := os.Create(p); err == nil {
				_ = pprof.StartCPUProfile(pf)
				defer func() { pprof.StopCPUProfile(); pf.Close() }()
			}
		}
		tk, err := engine.TakeOver(ctx, f.takeover, &engine.TakeOverOptions{Logger: log})
		if err != nil {
			return err
		}
		opts.Addr, opts.Listener = "", tk.Listener("")
		srv = engine.New(echoMover{}, opts)
		if err := srv.Start(ctx); err != nil {
			return err
		}
		go func() { served <- srv.Wait() }()
		res, err := tk.Restore(ctx, srv)
		if err != nil {
			return err
		}
		pprof.StopCPUProfile()
		fmt.Printf("tookover %d restored=%d refused=%d restore_ms=%.3f\n", os.Getpid(), res.Restored, res.Refused, ms(res.Duration))
	} else {
		srv = engine.New(echoMover{}, opts)
		if err := srv.Start(ctx); err != nil {
			return err
		}
		go func() { served <- srv.Wait() }()
		fmt.Printf("ready %s %d\n", srv.Addr(), os.Getpid())
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	for {
		select {
		case err := <-served:
			fmt.Printf("stopped %d\n", os.Getpid())
			return err
		case <-hup:
		}
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		cmd := exec.Command(exe, "-role", "server", "-takeover", f.dir, "-loops", fmt.Sprint(f.loops))
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		hctx, cancel := context.WithTimeout(ctx, time.Minute)
		res, err := srv.HandOff(hctx, f.dir, &engine.HandOffOptions{DrainTimeout: -1})
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "handoff failed: %v\n", err)
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			continue
		}
		stayed := 0
		for _, v := range res.Stayed {
			stayed += v
		}
		fmt.Printf("handedoff moved=%d stayed=%d pause_ms=%.3f duration_ms=%.3f\n", res.Moved, stayed, ms(res.Pause), ms(res.Duration))
		<-served
		return nil
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
