package engine

import (
	"context"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// A resume that lands after frames() stopped at a pause, but before the
// loop applied the pause, still reads what the pause left. The poller
// never stopped reading then, yet the messages already in gnet's buffer
// raise no event of their own: without a wake they wait for bytes the
// peer may never send (seen in CI as a test that hung until its package
// timed out). The race is a few instructions wide, so the test puts the
// connection in the state it leaves, on the loop, and runs the resume's
// task there.
func TestResumeWakesHaltedReads(t *testing.T) {
	h := &pauseFirst{opened: make(chan *wsConn, 1), got: make(chan string, 4)}
	srv := startLocal(t, h, Options{})
	c, _ := upgradeLocal(t, srv.Addr().String())
	wc := <-h.opened
	var b []byte
	for _, m := range []string{"a", "b"} {
		b = codec.AppendMaskedFrame(b, true, codec.OpText, 0, [4]byte{1, 2, 3, 4}, []byte(m))
	}
	if _, err := c.Write(b); err != nil { // one read on the server
		t.Fatal(err)
	}
	if m := h.next(t); m != "a" {
		t.Fatalf("first message %q", m)
	}

	state := make(chan string, 1)
	_ = wc.lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		if !wc.has(sReadHalted) || !wc.has(sPaused) || !wc.inputLeft() {
			state <- "frames() did not stop at the pause with the second message left"
			return nil
		}
		// As if frames() had not applied the pause at its end: the
		// resume cleared the wanted bit first.
		wc.set(sPaused, false)
		wc.setReadInterest(true)
		wc.set(sPauseWanted, false) // ResumeReading, from another goroutine
		wc.applyReadState()         // the task that PauseReading queued
		state <- ""
		return nil
	}))
	select {
	case s := <-state:
		if s != "" {
			t.Fatal(s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not run the task")
	}
	if m := h.next(t); m != "b" {
		t.Fatalf("second message %q", m)
	}
}

// pauseFirst pauses its connection at its first message.
type pauseFirst struct {
	handler.Base
	opened chan *wsConn
	got    chan string
	n      int // loop only
}

func (p *pauseFirst) OnOpen(c handler.Conn) { p.opened <- c.(*wsConn) }

func (p *pauseFirst) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	if p.n++; p.n == 1 {
		c.PauseReading()
	}
	p.got <- string(data)
}

func (p *pauseFirst) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-p.got:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message delivered")
		return ""
	}
}
