package engine_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// The timer wheel ticks at a quarter of the smallest timeout, so a timeout
// d fires between about 3/4·d and d plus a tick after it starts. The upper
// bounds below add generous slack for a loaded machine under -race.
const timerSlack = 1500 * time.Millisecond

func checkElapsed(t *testing.T, what string, start time.Time, d time.Duration) {
	t.Helper()
	el := time.Since(start)
	if el < d*5/8 || el > d+timerSlack {
		t.Errorf("%s after %v, want about %v", what, el.Round(time.Millisecond), d)
	}
}

// trickle writes b one byte per interval until stop is closed or a write
// fails. It returns a channel closed when it has stopped.
func trickle(c *wsClient, b []byte, every time.Duration, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for i := 0; ; i++ {
			if _, err := c.conn.Write(b[i%len(b) : i%len(b)+1]); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()
	return done
}

// A client trickling its upgrade request a byte every 20 ms is answered 408
// and disconnected after HandshakeTimeout, although bytes keep arriving.
func TestHandshakeTimeoutSlowloris(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	srv, _ := startServer(t, newRecorder(), engine.Options{HandshakeTimeout: timeout})
	addr := srv.Addr().String()

	c, err := dialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	start := time.Now()
	// An endless header: a request line, then a header line that never ends.
	req := []byte("GET / HTTP/1.1\r\nHost: " + addr + "\r\nX-Slow: " + strings.Repeat("a", 1<<16))
	stop := make(chan struct{})
	done := trickle(c, req, 20*time.Millisecond, stop)
	defer func() { close(stop); <-done }()

	if err := c.readResponse(); err != nil {
		t.Fatalf("no response: %v", err)
	}
	checkElapsed(t, "408", start, timeout)
	if c.resp.StatusCode != 408 || !strings.Contains(c.body, "not completed in time") {
		t.Fatalf("got %s %q, want 408 with a reason", c.resp.Status, c.body)
	}
	c.expectEOF(t, readTimeout)
	if el := time.Since(start); el > timeout+timerSlack {
		t.Errorf("EOF only after %v", el)
	}
	if st := srv.Stats(); st.Rejected["408 handshake timeout"] != 1 || st.Timeouts != 1 {
		t.Errorf("Stats: Rejected %v, Timeouts %d", st.Rejected, st.Timeouts)
	}
}

// A silent client gets a ping at half the idle timeout and, still silent, a
// 1001 close and EOF at the idle timeout; OnClose reports ErrIdleTimeout.
func TestIdleTimeoutProbeThenClose(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{IdleTimeout: idle})
	c := dialWS(t, srv.Addr().String(), "/")
	start := time.Now()

	f, err := c.read(readTimeout)
	if err != nil || f.op != codec.OpPing {
		t.Fatalf("want the idle probe ping first, got %v %v", f, err)
	}
	checkElapsed(t, "probe ping", start, idle/2)
	f = c.expectClose(t, codec.CloseGoingAway)
	checkElapsed(t, "idle close", start, idle)
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
// often than the idle timeout, both stay connected over several periods.
func TestIdleTimeoutKeepsLiveClients(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{IdleTimeout: idle})
	addr := srv.Addr().String()
	ponger := dialWS(t, addr, "/")
	talker := dialWS(t, addr, "/")

	end := time.Now().Add(5 * idle)
	talkDone := make(chan error, 1)
	go func() {
		tk := time.NewTicker(idle / 3)
		defer tk.Stop()
		for i := 0; time.Now().Before(end); i++ {
			msg := []byte{byte('a' + i%26)}
			if err := talker.send(codec.OpText, msg); err != nil {
				talkDone <- err
				return
			}
			f, err := talker.read(readTimeout)
			for err == nil && f.op == codec.OpPing {
				// The probe is timed in wheel ticks, so it may come a
				// tick early; answering it is harmless.
				if err = talker.send(codec.OpPong, f.data); err == nil {
					f, err = talker.read(readTimeout)
				}
			}
			if err != nil || f.op != codec.OpText || string(f.data) != string(msg) {
				talkDone <- fmt.Errorf("talker: got %v %v instead of its echo", f, err)
				return
			}
			<-tk.C
		}
		talkDone <- nil
	}()

	pings := 0
	for time.Now().Before(end) {
		f, err := ponger.read(time.Until(end))
		if err != nil {
			break // the deadline: nothing but pings arrived
		}
		if f.op != codec.OpPing {
			t.Fatalf("quiet client got %v, want only pings", f)
		}
		pings++
		if err := ponger.send(codec.OpPong, f.data); err != nil {
			t.Fatal(err)
		}
	}
	if pings < 3 {
		t.Errorf("quiet client got %d probe pings over %v, want at least 3", pings, 5*idle)
	}
	if err := <-talkDone; err != nil {
		t.Fatal(err)
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
	const timeout = 250 * time.Millisecond
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{IdleTimeout: 10 * time.Second, MessageTimeout: timeout})
	addr := srv.Addr().String()

	t.Run("frame a byte at a time", func(t *testing.T) {
		c := dialWS(t, addr, "/")
		frame := codec.AppendMaskedFrame(nil, true, codec.OpText, 0, randomMask(), []byte(strings.Repeat("x", 500)))
		start := time.Now()
		stop := make(chan struct{})
		done := trickle(c, frame[:len(frame)-1], 20*time.Millisecond, stop)
		defer func() { close(stop); <-done }()
		f := c.expectClose(t, codec.ClosePolicyViolation)
		checkElapsed(t, "1008", start, timeout)
		if f.reason != "message not completed in time" {
			t.Errorf("reason %q", f.reason)
		}
		c.expectEOF(t, readTimeout)
		c.conn.Close()
		if ev := h.waitClose(t); !errors.Is(ev.err, handler.ErrMessageTimeout) {
			t.Errorf("OnClose err = %v, want ErrMessageTimeout", ev.err)
		}
	})
	t.Run("fragments that never end", func(t *testing.T) {
		c := dialWS(t, addr, "/")
		start := time.Now()
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			tk := time.NewTicker(30 * time.Millisecond)
			defer tk.Stop()
			op := codec.OpBinary
			for {
				if c.sendFrame(false, op, []byte("part")) != nil {
					return
				}
				op = codec.OpContinuation
				select {
				case <-stop:
					return
				case <-tk.C:
				}
			}
		}()
		defer func() { close(stop); <-done }()
		c.expectClose(t, codec.ClosePolicyViolation)
		checkElapsed(t, "1008", start, timeout)
		c.expectEOF(t, readTimeout)
		c.conn.Close()
		if ev := h.waitClose(t); !errors.Is(ev.err, handler.ErrMessageTimeout) {
			t.Errorf("OnClose err = %v, want ErrMessageTimeout", ev.err)
		}
	})
	t.Run("complete messages are not cut", func(t *testing.T) {
		c := dialWS(t, addr, "/")
		// A message sent in two halves well within the timeout is served,
		// and the timer of the first does not fire on the second.
		frame := codec.AppendMaskedFrame(nil, true, codec.OpText, 0, randomMask(), []byte("two halves"))
		for i := 0; i < 3; i++ {
			if _, err := c.conn.Write(frame[:5]); err != nil {
				t.Fatal(err)
			}
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
	const interval, pongWait = 150 * time.Millisecond, 150 * time.Millisecond
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{PingInterval: interval, PongTimeout: pongWait})
	addr := srv.Addr().String()
	deaf := dialWS(t, addr, "/")
	polite := dialWS(t, addr, "/")
	start := time.Now()

	politeDone := make(chan error, 1)
	go func() {
		end := time.Now().Add(4 * (interval + pongWait))
		n := 0
		for time.Now().Before(end) {
			f, err := polite.read(time.Until(end))
			if err != nil {
				break
			}
			if f.op != codec.OpPing {
				politeDone <- errors.New("polite client got " + f.String())
				return
			}
			n++
			if err := polite.send(codec.OpPong, f.data); err != nil {
				politeDone <- err
				return
			}
		}
		if n < 3 {
			politeDone <- errors.New("polite client got fewer than 3 pings")
			return
		}
		politeDone <- nil
	}()

	f, err := deaf.read(readTimeout)
	if err != nil || f.op != codec.OpPing {
		t.Fatalf("want a ping, got %v %v", f, err)
	}
	checkElapsed(t, "server ping", start, interval)
	f = deaf.expectClose(t, codec.ClosePolicyViolation)
	checkElapsed(t, "pong timeout", start, interval+pongWait)
	if f.reason != "pong timeout" {
		t.Errorf("reason %q", f.reason)
	}
	deaf.expectEOF(t, readTimeout)
	deaf.conn.Close()
	if ev := h.waitClose(t); !errors.Is(ev.err, handler.ErrPongTimeout) {
		t.Errorf("OnClose err = %v, want ErrPongTimeout", ev.err)
	}
	if err := <-politeDone; err != nil {
		t.Fatal(err)
	}
	polite.roundTrip(t, "alive")
	h.check(t)
}

// A server-initiated close that the client never answers ends the TCP
// connection after CloseTimeout; one that is answered reports the code.
func TestCloseTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
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
	srv, _ := startServer(t, h, engine.Options{CloseTimeout: timeout})
	addr := srv.Addr().String()

	t.Run("unanswered", func(t *testing.T) {
		c := dialWS(t, addr, "/")
		if err := c.send(codec.OpText, []byte("close me")); err != nil {
			t.Fatal(err)
		}
		f := c.expectClose(t, 4000)
		start := time.Now()
		if f.reason != "x" {
			t.Errorf("reason %q", f.reason)
		}
		c.expectEOF(t, readTimeout)
		checkElapsed(t, "TCP close", start, timeout)
		// Either says what happened: the close handshake the server
		// started timed out, or the server closed with 4000 (as a drain
		// or a protocol error reports its code without an answer).
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
	if st := srv.Stats(); st.ClosesByCode[4000] != 2 {
		t.Errorf("ClosesByCode %v", st.ClosesByCode)
	}
	h.check(t)
}
