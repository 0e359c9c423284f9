package engine

import (
	"context"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/codec"
)

// The idle probe is written by the loop itself: when the timer sends it,
// no flush task is left queued for the connection (a task costs gnet an
// allocation, once per probe period for every idle connection), and the
// client gets the ping.
func TestIdleProbeQueuesNoTask(t *testing.T) {
	h := &echoRecorder{opened: make(chan *wsConn, 1)}
	srv := startLocal(t, h, Options{IdleTimeout: time.Minute})
	c, br := upgradeLocal(t, srv.Addr().String())
	wc := <-h.opened

	queued := make(chan bool, 1)
	_ = wc.lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		// As if the connection had been silent for half the idle timeout.
		wc.lastRead = wc.lp.now - srv.ticks(srv.opts.IdleTimeout/2)
		wc.onTimer()
		queued <- wc.has(sFlushQueued)
		return nil
	}))
	if <-queued {
		t.Error("the idle probe left a flush task queued on the loop")
	}
	var dec codec.Decoder
	dec.Client = true
	var buf []byte
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		b := make([]byte, 256)
		n, err := br.Read(b)
		if err != nil {
			t.Fatalf("no ping: %v", err)
		}
		buf = append(buf, b[:n]...)
		_, ev, err := dec.Decode(buf)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind != codec.EventNone {
			if ev.Op != codec.OpPing {
				t.Fatalf("got %v, want the idle probe ping", ev.Op)
			}
			return
		}
	}
}
