package engine_test

import (
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// pauser pauses each connection as it opens and records the sequence
// numbers of the messages it is given.
type pauser struct {
	handler.Base
	opened chan handler.Conn
	got    chan uint32
	closed chan error
}

func newPauser() *pauser {
	return &pauser{opened: make(chan handler.Conn, 1), got: make(chan uint32, 4096), closed: make(chan error, 1)}
}

func (p *pauser) OnOpen(c handler.Conn) {
	c.PauseReading() // before anything is delivered
	p.opened <- c
}

func (p *pauser) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	p.got <- binary.BigEndian.Uint32(data)
}

func (p *pauser) OnClose(c handler.Conn, err error) { p.closed <- err }

// A client that sends as fast as it can to a paused connection is pushed
// back by TCP: its writes block, nothing is delivered, and the server holds
// at most one read buffer of its bytes, however much it sent. Resuming
// delivers everything, in order, and the client's writes go on.
//
// Where reads cannot pause at the poller (-tags wsloop_portable, Windows),
// the fallback is checked instead: the connection is failed with 1008 once
// it holds its bound, so its memory stays bounded too.
func TestPauseReadingPushesBack(t *testing.T) {
	t.Parallel()
	p := newPauser()
	srv, _ := startServer(t, p, engine.Options{EventLoops: 1})
	c := dialWS(t, srv.Addr().String(), "/")
	conn := <-p.opened

	const msgSize = 64 << 10
	const msgs = 512 // 32 MiB: far more than the sockets' buffers take
	frame := func(seq int) []byte {
		payload := make([]byte, msgSize)
		binary.BigEndian.PutUint32(payload, uint32(seq))
		return codec.AppendMaskedFrame(nil, true, codec.OpBinary, 0, randomMask(), payload)
	}
	// The sender reports the first write that TCP holds back: a write
	// deadline (not a sleep) tells it the kernel took nothing for 300 ms.
	blocked := make(chan int, 1)
	sent := make(chan error, 1)
	go func() {
		reported := false
		for i := range msgs {
			b := frame(i)
			for len(b) > 0 {
				_ = c.conn.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
				n, err := c.conn.Write(b)
				b = b[n:]
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					if !reported {
						reported = true
						blocked <- i
					}
					continue
				}
				if err != nil {
					sent <- err
					return
				}
			}
		}
		sent <- nil
	}()

	if !engine.GnetPollerFound(conn) {
		// The fallback: bounded, then failed.
		select {
		case err := <-p.closed:
			if !errors.Is(err, handler.ErrPausedOverflow) {
				t.Fatalf("OnClose: %v, want ErrPausedOverflow", err)
			}
		case <-time.After(2 * readTimeout):
			t.Fatal("a paused connection without a poller was not bounded")
		}
		if len(p.got) != 0 {
			t.Errorf("%d messages delivered while paused", len(p.got))
		}
		return
	}

	var at int
	select {
	case at = <-blocked:
	case err := <-sent:
		t.Fatalf("the client sent all %d MiB to a paused connection (err %v): nothing pushed back", msgs*msgSize>>20, err)
	}
	if n := len(p.got); n != 0 {
		t.Fatalf("%d messages delivered while paused", n)
	}
	if held := engine.InboundBuffered(conn); held > engine.DefaultReadBufferCap {
		t.Errorf("the server holds %d bytes of a paused connection, more than one read buffer", held)
	}
	if st := srv.Stats(); st.InboundBytes != 0 {
		t.Errorf("Stats.InboundBytes %d while paused", st.InboundBytes)
	}
	t.Logf("the client's write of message %d blocked (%d MiB in the sockets' buffers)", at, at*msgSize>>20)

	conn.ResumeReading()
	for want := range uint32(msgs) {
		select {
		case got := <-p.got:
			if got != want {
				t.Fatalf("message %d delivered as number %d: out of order", got, want)
			}
		case <-time.After(readTimeout):
			t.Fatalf("after resuming, %d of %d messages arrived", want, msgs)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}

// A paused connection is not idle: the idle timeout (and its probe) waits
// until the application resumes, then counts from there. The clock moves;
// nothing sleeps.
func TestPausedConnectionIsNotIdle(t *testing.T) {
	t.Parallel()
	p := newPauser()
	const idle = 4 * time.Second
	srv, clk, _ := startClocked(t, p, engine.Options{IdleTimeout: idle})
	c := dialWS(t, srv.Addr().String(), "/")
	conn := <-p.opened
	_ = conn.Ping(nil) // a round trip: the pause has been applied
	if f, err := c.read(readTimeout); err != nil || f.op != codec.OpPing {
		t.Fatalf("ping: %v %v", f, err)
	}
	clk.Advance(3 * idle)
	c.expectNothing(t, "paused, three idle timeouts later")
	conn.ResumeReading()
	if err := c.send(codec.OpBinary, []byte{0, 0, 0, 7}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-p.got:
		if got != 7 {
			t.Fatalf("got message %d", got)
		}
	case <-time.After(readTimeout):
		t.Fatal("nothing delivered after resuming")
	}
	clk.Advance(idle / 2)
	if f, err := c.read(readTimeout); err != nil || f.op != codec.OpPing {
		t.Fatalf("the idle probe after resuming: %v %v", f, err)
	}
	clk.Advance(idle)
	c.expectClose(t, codec.CloseGoingAway)
	c.conn.Close() // the server half-closed after its close frame
	select {
	case err := <-p.closed:
		if !errors.Is(err, handler.ErrIdleTimeout) {
			t.Errorf("OnClose: %v, want ErrIdleTimeout", err)
		}
	case <-time.After(readTimeout):
		t.Fatal("OnClose did not run")
	}
}

// A message already received whole is not delivered once the callback
// before it paused the connection; the rest waits for the resume.
func TestPauseFromCallbackStopsDelivery(t *testing.T) {
	t.Parallel()
	h := &pauseEvery{got: make(chan handler.Conn, 16)}
	srv, _ := startServer(t, h, engine.Options{})
	c := dialWS(t, srv.Addr().String(), "/")
	// Three messages in one write: one read on the server.
	var b []byte
	for i := range 3 {
		b = codec.AppendMaskedFrame(b, true, codec.OpText, 0, randomMask(), []byte{byte('a' + i)})
	}
	if _, err := c.conn.Write(b); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		var conn handler.Conn
		select {
		case conn = <-h.got:
		case <-time.After(readTimeout):
			t.Fatalf("message %d not delivered after the resume", i+1)
		}
		select {
		case <-h.got:
			t.Fatalf("message %d delivered while paused", i+1)
		default:
		}
		conn.ResumeReading()
	}
}

// pauseEvery pauses its connection at every message.
type pauseEvery struct {
	handler.Base
	got chan handler.Conn
}

func (p *pauseEvery) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	c.PauseReading()
	p.got <- c
}

// NotifyBacklog runs its function at once when the backlog is at its mark,
// when a slow reader catches up, and when the connection closes; Backlog
// counts what the reader has not taken.
func TestNotifyBacklog(t *testing.T) {
	t.Parallel()
	h := &wholeEcho{opened: make(chan handler.Conn, 1), closed: make(chan error, 1)}
	srv, _ := startServer(t, h, engine.Options{MaxOutboundBytes: 64 << 20})
	c := dialWS(t, srv.Addr().String(), "/")
	conn := <-h.opened

	now := make(chan struct{})
	conn.NotifyBacklog(0, func() { close(now) })
	select {
	case <-now:
	case <-time.After(readTimeout):
		t.Fatal("an idle connection's notification did not run")
	}

	// The client does not read: the backlog builds up once the sockets'
	// buffers are full (how much they take depends on the kernel).
	big := make([]byte, 1<<20)
	written := 0
	for conn.Backlog() < 4<<20 {
		if written == 256 {
			t.Fatalf("Backlog %d after %d MiB to a reader that does not read", conn.Backlog(), written)
		}
		if err := conn.WriteMessage(handler.Binary, big); err != nil {
			t.Fatal(err)
		}
		written++
	}
	drained := make(chan int, 1)
	const mark = 1 << 20
	conn.NotifyBacklog(mark, func() { drained <- conn.Backlog() })
	for range written {
		if f, err := c.read(readTimeout); err != nil || len(f.data) != len(big) {
			t.Fatalf("read: %v", err)
		}
	}
	select {
	case b := <-drained:
		if b > mark {
			t.Errorf("notified at a backlog of %d, above the mark %d", b, mark)
		}
	case <-time.After(readTimeout):
		t.Fatalf("not notified after the reader caught up (Backlog %d)", conn.Backlog())
	}

	// A notification that waits runs when the connection closes.
	for range 8 {
		_ = conn.WriteMessage(handler.Binary, big)
	}
	gone := make(chan struct{})
	conn.NotifyBacklog(0, func() { close(gone) })
	c.conn.Close()
	select {
	case <-gone:
	case <-time.After(readTimeout):
		t.Fatal("a waiting notification did not run when the connection closed")
	}
	if err := conn.WriteMessage(handler.Text, []byte("x")); !errors.Is(err, handler.ErrClosed) {
		t.Errorf("a write after the close: %v", err)
	}
}

// TestGnetPollerFound guards the one dependency of PauseReading on gnet's
// internals (gnetpoll_unix.go): where the poller is expected, it is found.
func TestGnetPollerFound(t *testing.T) {
	if engine.PortableBuild {
		t.Skip("no gnet poller to find in this build (Windows, or -tags wsloop_portable)")
	}
	p := newPauser()
	srv, _ := startServer(t, p, engine.Options{})
	dialWS(t, srv.Addr().String(), "/")
	conn := <-p.opened
	if !engine.GnetPollerFound(conn) {
		t.Fatal("gnet's poller is not found in its connection (fields loop, poller, fd): PauseReading falls back to closing a paused connection at its bound; update gnetpoll_unix.go for this gnet release")
	}
}

// A producer that waits for the backlog to fall to a low-water mark never
// trips the slow-consumer policy against a client that reads slowly, and
// every message arrives in order; the same producer without waiting is
// dropped by the policy (the control: the test would fail without the
// waits).
func TestProducerWaitsForBacklog(t *testing.T) {
	t.Parallel()
	for _, wait := range []bool{true, false} {
		h := &wholeEcho{opened: make(chan handler.Conn, 1), closed: make(chan error, 1)}
		const limit = 1 << 20
		srv, _ := startServer(t, h, engine.Options{MaxOutboundBytes: limit})
		c := dialWS(t, srv.Addr().String(), "/")
		conn := <-h.opened

		const msgs, size = 200, 64 << 10 // 12.5 MiB through a 1 MiB cap
		produced := make(chan error, 1)
		go func() {
			payload := make([]byte, size)
			for i := range msgs {
				if wait && conn.Backlog() > limit/2 {
					drained := make(chan struct{})
					conn.NotifyBacklog(limit/8, func() { close(drained) })
					<-drained
				}
				binary.BigEndian.PutUint32(payload, uint32(i))
				if err := conn.WriteMessage(handler.Binary, payload); err != nil {
					produced <- err
					return
				}
			}
			produced <- nil
		}()
		// The client reads slowly: a little at a time.
		c.rbuf = make([]byte, 4<<10)
		got := 0
		for got < msgs {
			f, err := c.read(readTimeout)
			if err != nil {
				break
			}
			if f.op == codec.OpClose {
				break
			}
			if n := binary.BigEndian.Uint32(f.data); int(n) != got {
				t.Fatalf("message %d arrived as number %d", n, got)
			}
			got++
		}
		err := <-produced
		switch {
		case wait && (err != nil || got != msgs):
			t.Fatalf("waiting producer: %d of %d messages, producer error %v, slow consumers %d", got, msgs, err, srv.Stats().SlowConsumers)
		case wait && srv.Stats().SlowConsumers != 0:
			t.Fatalf("the waiting producer tripped the slow-consumer policy")
		case !wait && !errors.Is(err, handler.ErrSlowConsumer):
			t.Fatalf("the producer that does not wait got %v (%d messages read), want ErrSlowConsumer: the control does not trip the policy", err, got)
		}
	}
}
