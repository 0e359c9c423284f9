package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
)

// Timer tests run the server on an enginetest.Clock: a timeout fires when
// the test moves the clock past it, and Advance returns once every loop has
// handled the ticks. Nothing here sleeps or measures how long anything took.
// The wheel ticks at a quarter of the shortest timeout, so a timeout d
// fires once the clock has moved between d and d plus a tick past its
// start: the tests check "not yet" a tick before d and "now" at d plus a
// tick.

// quiet is how long a test waits to see that nothing arrives: bytes the
// server wrote while the clock moved are already in the client's socket when
// Advance returns, so this only has to cover the local read.
const quiet = 50 * time.Millisecond

// expectNothing checks that the server sent nothing.
func (c *wsClient) expectNothing(t testing.TB, when string) {
	t.Helper()
	if f, err := c.read(quiet); err == nil {
		t.Fatalf("%s: got %v, want nothing yet", when, f)
	}
}

// startClocked starts a server on a fake clock; the returned channel gets a
// value each time the server takes a connection in.
func startClocked(t *testing.T, h handler.Handler, opts engine.Options) (*engine.Server, *enginetest.Clock, <-chan struct{}) {
	t.Helper()
	clk := enginetest.NewClock()
	opts.Clock = clk
	opened := make(chan struct{}, 64)
	opts.Addr = "127.0.0.1:0"
	opts.Logger = discardLogger
	srv := engine.New(h, opts)
	engine.SetOpenedHook(srv, func() {
		select { // on the loop: never block it
		case opened <- struct{}{}:
		default:
		}
	})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, srv)
	return srv, clk, opened
}

// A client trickling its upgrade request is answered 408 and disconnected
// at HandshakeTimeout, although bytes keep arriving.
func TestHandshakeTimeoutSlowloris(t *testing.T) {
	t.Parallel()
	const timeout = 8 * time.Second // ticks of 500 ms
	srv, clk, opened := startClocked(t, newRecorder(), engine.Options{HandshakeTimeout: timeout})
	addr := srv.Addr().String()

	c, err := dialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	waitN(t, opened, 1, readTimeout)
	// An endless header: a request line, then a header line that never ends.
	req := []byte("GET / HTTP/1.1\r\nHost: " + addr + "\r\nX-Slow: " + strings.Repeat("a", 64))
	for i := 0; i < 3; i++ { // 6 s of trickling
		if _, err := c.conn.Write(req[i*10 : i*10+10]); err != nil {
			t.Fatal(err)
		}
		clk.Advance(2 * time.Second)
	}
	if st := srv.Stats(); st.Timeouts != 0 || len(st.Rejected) != 0 {
		t.Fatalf("before the timeout: Timeouts %d, Rejected %v", st.Timeouts, st.Rejected)
	}
	if _, err := c.conn.Write(req[30:40]); err != nil {
		t.Fatal(err)
	}
	clk.Advance(4 * time.Second)
	if err := c.readResponse(); err != nil {
		t.Fatalf("no response: %v", err)
	}
	if c.resp.StatusCode != 408 || !strings.Contains(c.body, "not completed in time") {
		t.Fatalf("got %s %q, want 408 with a reason", c.resp.Status, c.body)
	}
	if _, err := c.conn.Write(req[40:]); err != nil { // read and dropped until we close
		t.Fatal(err)
	}
	clk.Advance(engine.DefaultCloseTimeout + 2*time.Second) // the linger after the response is bounded too
	c.expectEOF(t, readTimeout)
	if st := srv.Stats(); st.Rejected["408 handshake timeout"] != 1 || st.Timeouts != 1 {
		t.Errorf("Stats: Rejected %v, Timeouts %d", st.Rejected, st.Timeouts)
	}
}

// A silent client gets a ping at half the idle timeout and, still silent, a
// 1001 close and EOF at the idle timeout; OnClose reports ErrIdleTimeout.
func TestIdleTimeoutProbeThenClose(t *testing.T) {
	t.Parallel()
	const idle = 8 * time.Second // ticks of 500 ms, the longest tick
	h := newRecorder()
	srv, clk, _ := startClocked(t, h, engine.Options{IdleTimeout: idle})
	c := dialWS(t, srv.Addr().String(), "/")
	h.waitOpen(t)

	clk.Advance(idle/2 - 2*time.Second)
	c.expectNothing(t, "before half the idle timeout")
	clk.Advance(2 * time.Second)
	if f, err := c.read(readTimeout); err != nil || f.op != codec.OpPing {
		t.Fatalf("want the idle probe ping, got %v %v", f, err)
	}
	clk.Advance(idle/2 - 2*time.Second)
	c.expectNothing(t, "before the idle timeout")
	clk.Advance(2 * time.Second)
	f := c.expectClose(t, codec.CloseGoingAway)
	if f.reason != "idle timeout" {
		t.Errorf("close reason %q", f.reason)
	}
	c.expectEOF(t, readTimeout)
	c.conn.Close()
	if ev := h.waitClose(t); !errors.Is(ev.err, handler.ErrIdleTimeout) {
		t.Errorf("OnClose err = %v, want ErrIdleTimeout", ev.err)
	}
	if st := srv.Stats(); st.Timeouts != 1 || st.ClosesByCode[codec.CloseGoingAway] != 1 {
		t.Errorf("Stats: Timeouts %d, ClosesByCode %v", st.Timeouts, st.ClosesByCode)
	}
	h.check(t)
}

// A quiet client that answers the probes, and one that sends messages more
// often than the idle timeout, both stay connected over many periods.
func TestIdleTimeoutKeepsLiveClients(t *testing.T) {
	t.Parallel()
	const idle = 6 * time.Second
	h := newRecorder()
	pongs := make(chan struct{}, 16)
	h.pong = func(handler.Conn, []byte) { pongs <- struct{}{} }
	srv, clk, _ := startClocked(t, h, engine.Options{IdleTimeout: idle})
	addr := srv.Addr().String()
	ponger := dialWS(t, addr, "/")
	talker := dialWS(t, addr, "/")
	waitN(t, h.opened, 2, readTimeout)

	pings := 0
	for i := 0; i < 15; i++ { // 5 idle periods
		clk.Advance(idle / 3)
		// The talker talks; an echo means the server read it.
		talker.roundTripAnsweringProbes(t, "tick "+string(rune('a'+i)))
		// The quiet one answers whatever probe came; OnPong means the
		// server read the answer before the clock moves again.
		if f, err := ponger.read(quiet); err == nil {
			if f.op != codec.OpPing {
				t.Fatalf("quiet client got %v, want only pings", f)
			}
			pings++
			if err := ponger.send(codec.OpPong, f.data); err != nil {
				t.Fatal(err)
			}
			waitN(t, pongs, 1, readTimeout)
		}
	}
	if pings < 3 {
		t.Errorf("quiet client got %d probe pings over 5 idle periods, want at least 3", pings)
	}
	ponger.roundTripAnsweringProbes(t, "still here")
	talker.roundTripAnsweringProbes(t, "me too")
	if st := srv.Stats(); st.Open != 2 || st.Timeouts != 0 {
		t.Errorf("Stats: Open %d, Timeouts %d", st.Open, st.Timeouts)
	}
}

// A frame trickled a byte at a time, or a fragmented message that never
// ends, is closed with 1008 after MessageTimeout although bytes keep coming.
func TestMessageTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 8 * time.Second // ticks of 500 ms, the longest tick
	h := newRecorder()
	srv, clk, _ := startClocked(t, h, engine.Options{IdleTimeout: time.Hour, MessageTimeout: timeout})
	addr := srv.Addr().String()
	ping := codec.AppendMaskedFrame(nil, true, codec.OpPing, 0, randomMask(), []byte("sync"))

	// trickle sends b in pieces while the clock moves by step after each,
	// until the server closes; it returns how far the clock moved.
	trickle := func(c *wsClient, b []byte, step time.Duration) {
		for i := 0; i < len(b); i++ {
			if _, err := c.conn.Write(b[i : i+1]); err != nil {
				return
			}
			clk.Advance(step)
		}
	}
	t.Run("frame a byte at a time", func(t *testing.T) {
		c := dialWS(t, addr, "/")
		frame := codec.AppendMaskedFrame(nil, true, codec.OpText, 0, randomMask(), []byte(strings.Repeat("x", 500)))
		// A ping, then the first bytes of the frame, in one write: the
		// pong says the server read both, so the timer has started.
		if _, err := c.conn.Write(append(append([]byte(nil), ping...), frame[:3]...)); err != nil {
			t.Fatal(err)
		}
		c.expect(t, codec.OpPong, "sync")
		trickle(c, frame[3:10], time.Second) // 7 s
		c.expectNothing(t, "7 s into the message")
		trickle(c, frame[10:13], time.Second)
		f := c.expectClose(t, codec.ClosePolicyViolation)
		if f.reason != "message not completed in time" {
			t.Errorf("reason %q", f.reason)
		}
		clk.Advance(engine.DefaultCloseTimeout + 2*time.Second)
		c.expectEOF(t, readTimeout)
		c.conn.Close()
		if ev := h.waitClose(t); !errors.Is(ev.err, handler.ErrMessageTimeout) {
			t.Errorf("OnClose err = %v, want ErrMessageTimeout", ev.err)
		}
	})
	t.Run("fragments that never end", func(t *testing.T) {
		c := dialWS(t, addr, "/")
		first := codec.AppendMaskedFrame(nil, false, codec.OpBinary, 0, randomMask(), []byte("part"))
		if _, err := c.conn.Write(append(first, ping...)); err != nil {
			t.Fatal(err)
		}
		c.expect(t, codec.OpPong, "sync")
		for i := 0; i < 7; i++ {
			part := codec.AppendMaskedFrame(nil, false, codec.OpContinuation, 0, randomMask(), []byte("part"))
			if _, err := c.conn.Write(part); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Second)
		}
		c.expectNothing(t, "7 s into the message")
		clk.Advance(3 * time.Second)
		c.expectClose(t, codec.ClosePolicyViolation)
		clk.Advance(engine.DefaultCloseTimeout + 2*time.Second)
		c.expectEOF(t, readTimeout)
		c.conn.Close()
		if ev := h.waitClose(t); !errors.Is(ev.err, handler.ErrMessageTimeout) {
			t.Errorf("OnClose err = %v, want ErrMessageTimeout", ev.err)
		}
	})
	t.Run("complete messages are not cut", func(t *testing.T) {
		c := dialWS(t, addr, "/")
		// A message sent in two halves within the timeout is served, and
		// the timer of the first does not fire on the next ones.
		frame := codec.AppendMaskedFrame(nil, true, codec.OpText, 0, randomMask(), []byte("two halves"))
		for i := 0; i < 4; i++ {
			if _, err := c.conn.Write(append(append([]byte(nil), ping...), frame[:5]...)); err != nil {
				t.Fatal(err)
			}
			c.expect(t, codec.OpPong, "sync")
			clk.Advance(timeout / 2)
			if _, err := c.conn.Write(frame[5:]); err != nil {
				t.Fatal(err)
			}
			c.expect(t, codec.OpText, "two halves")
		}
	})
	h.check(t)
}

// With PingInterval, a client that never answers is closed with 1008 after
// PongTimeout; one that answers stays.
func TestPingIntervalPongTimeout(t *testing.T) {
	t.Parallel()
	const interval, pongWait = 8 * time.Second, 8 * time.Second // ticks of 500 ms
	h := newRecorder()
	pongs := make(chan struct{}, 16)
	h.pong = func(handler.Conn, []byte) { pongs <- struct{}{} }
	srv, clk, _ := startClocked(t, h, engine.Options{PingInterval: interval, PongTimeout: pongWait, IdleTimeout: time.Hour})
	addr := srv.Addr().String()
	deaf := dialWS(t, addr, "/")
	polite := dialWS(t, addr, "/")
	waitN(t, h.opened, 2, readTimeout)

	clk.Advance(interval - 2*time.Second)
	deaf.expectNothing(t, "before the ping interval")
	clk.Advance(2 * time.Second)
	for _, c := range []*wsClient{deaf, polite} {
		if f, err := c.read(readTimeout); err != nil || f.op != codec.OpPing {
			t.Fatalf("want a ping, got %v %v", f, err)
		}
	}
	if err := polite.send(codec.OpPong, nil); err != nil {
		t.Fatal(err)
	}
	waitN(t, pongs, 1, readTimeout)
	clk.Advance(pongWait - 2*time.Second)
	deaf.expectNothing(t, "before the pong timeout")
	clk.Advance(2 * time.Second)
	f := deaf.expectClose(t, codec.ClosePolicyViolation)
	if f.reason != "pong timeout" {
		t.Errorf("reason %q", f.reason)
	}
	clk.Advance(engine.DefaultCloseTimeout + 2*time.Second)
	deaf.expectEOF(t, readTimeout)
	deaf.conn.Close()
	if ev := h.waitClose(t); !errors.Is(ev.err, handler.ErrPongTimeout) {
		t.Errorf("OnClose err = %v, want ErrPongTimeout", ev.err)
	}
	// The polite client keeps answering, period after period (its next
	// ping went out with the deaf one's close).
	for i := 0; i < 3; i++ {
		if i > 0 {
			clk.Advance(interval)
		}
		f, err := polite.read(readTimeout)
		if err != nil || f.op != codec.OpPing {
			t.Fatalf("period %d: want a ping, got %v %v", i, f, err)
		}
		if err := polite.send(codec.OpPong, f.data); err != nil {
			t.Fatal(err)
		}
		waitN(t, pongs, 1, readTimeout)
	}
	polite.roundTrip(t, "alive")
	h.check(t)
}

// A server-initiated close that the client never answers ends the TCP
// connection after CloseTimeout; one that is answered reports the code.
func TestCloseTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 4 * time.Second // ticks of 500 ms
	h := newRecorder()
	h.message = func(c handler.Conn, op handler.Op, data []byte) {
		if string(data) == "close me" {
			if err := c.Close(4000, "x"); err != nil {
				h.problem("Close: %v", err)
			}
			if err := c.WriteMessage(handler.Text, []byte("after close")); !errors.Is(err, handler.ErrClosed) {
				h.problem("write after Close: %v, want ErrClosed", err)
			}
		}
	}
	srv, clk, _ := startClocked(t, h, engine.Options{CloseTimeout: timeout})
	addr := srv.Addr().String()

	t.Run("unanswered", func(t *testing.T) {
		c := dialWS(t, addr, "/")
		if err := c.send(codec.OpText, []byte("close me")); err != nil {
			t.Fatal(err)
		}
		f := c.expectClose(t, 4000)
		if f.reason != "x" {
			t.Errorf("reason %q", f.reason)
		}
		clk.Advance(timeout - 2*time.Second)
		if err := c.waitEOF(quiet); err == nil {
			t.Fatal("TCP closed before CloseTimeout")
		}
		clk.Advance(3 * time.Second)
		c.expectEOF(t, readTimeout)
		ev := h.waitClose(t)
		var ce *handler.CloseError
		if !errors.As(ev.err, &ce) || ce.Code != 4000 || ce.Remote {
			t.Errorf("OnClose err = %v, want the server's CloseError 4000", ev.err)
		}
	})
	t.Run("answered", func(t *testing.T) {
		c := dialWS(t, addr, "/")
		if err := c.send(codec.OpText, []byte("close me")); err != nil {
			t.Fatal(err)
		}
		c.expectClose(t, 4000)
		if err := c.sendClose(4000, ""); err != nil {
			t.Fatal(err)
		}
		c.expectEOF(t, readTimeout)
		ev := h.waitClose(t)
		var ce *handler.CloseError
		if !errors.As(ev.err, &ce) || ce.Code != 4000 || ce.Remote {
			t.Errorf("OnClose err = %#v, want a server CloseError 4000", ev.err)
		}
	})
	t.Run("long reason is cut to fit", func(t *testing.T) {
		c := dialWS(t, addr, "/long")
		sc := h.waitOpen(t)
		for sc.Path() != "/long" { // skip the connections of the subtests above
			sc = h.waitOpen(t)
		}
		if err := sc.Close(4003, strings.Repeat("é", 100)); err != nil { // 200 bytes
			t.Fatal(err)
		}
		f := c.expectClose(t, 4003)
		if len(f.reason) > 123 || !strings.HasPrefix(strings.Repeat("é", 100), f.reason) || len(f.reason) < 120 {
			t.Errorf("reason of %d bytes: %q", len(f.reason), f.reason)
		}
		if err := c.sendClose(4003, ""); err != nil {
			t.Fatal(err)
		}
		c.expectEOF(t, readTimeout)
		h.waitClose(t)
	})
	// 4000-4999 are counted together: a peer picks the code the server echoes.
	if st := srv.Stats(); st.ClosesByCode[4000] != 3 {
		t.Errorf("ClosesByCode %v, want 3 under 4000", st.ClosesByCode)
	}
	h.check(t)
}
