package engine

import (
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
	srv := startLocal(t, h, Options{EventLoops: loops, ReusePort: true})
	for i := 0; i < conns; i++ {
		upgradeLocal(t, srv.Addr().String())
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
		t.Errorf("%d connections to %s landed on loops %v; want all %d loops used", conns, srv.Addr(), used, loops)
	}
}
