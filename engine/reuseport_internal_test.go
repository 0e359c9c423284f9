package engine

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/wsloop/wsloop/handler"
)

// loopRecorder records which event loop each connection landed on.
type loopRecorder struct {
	handler.Base
	opened chan int
}

func (l *loopRecorder) OnOpen(c handler.Conn) { l.opened <- c.(*wsConn).lp.idx }

// With ReusePort every event loop has its own listener; all of them must
// listen on the address Addr reports, so that connections to it are spread
// over every loop. With a port of 0 each listener used to bind a port of
// its own, and every loop but one was unreachable.
func TestReusePortSpreadsOverLoops(t *testing.T) {
	const loops, conns = 2, 40
	h := &loopRecorder{opened: make(chan int, conns)}
	srv := New(h, Options{
		Addr: "127.0.0.1:0", EventLoops: loops, ReusePort: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe(context.Background()) }()
	<-srv.Ready()
	if srv.Addr() == nil {
		t.Fatal(<-served)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	addr := srv.Addr().String()
	for i := 0; i < conns; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		req := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade %d: %v %v", i, resp, err)
		}
	}
	used := map[int]int{}
	for i := 0; i < conns; i++ {
		select {
		case idx := <-h.opened:
			used[idx]++
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d OnOpen calls", i)
		}
	}
	if len(used) != loops {
		t.Errorf("%d connections to %s landed on loops %v; want all %d loops used", conns, addr, used, loops)
	}
}
