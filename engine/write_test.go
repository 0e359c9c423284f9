package engine_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// Messages written from another goroutine arrive complete and in order.
func TestWriteFromGoroutineInOrder(t *testing.T) {
	t.Parallel()
	const n = 1000
	h := newRecorder()
	errc := make(chan error, 1)
	h.open = func(c handler.Conn) {
		go func() {
			for i := 0; i < n; i++ {
				if err := c.WriteMessage(handler.Text, []byte("msg-"+strconv.Itoa(i))); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	srv, _ := startServer(t, h, engine.Options{})
	c := dialWS(t, srv.Addr().String(), "/")
	for i := 0; i < n; i++ {
		c.expect(t, codec.OpText, "msg-"+strconv.Itoa(i))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	c.roundTrip(t, "done")
	h.check(t)
}

// Writes from the connection's callbacks and from another goroutine at the
// same time interleave frame by frame, each stream in its own order.
func TestWriteCallbackAndGoroutineInterleave(t *testing.T) {
	t.Parallel()
	const n = 500
	h := newRecorder()
	errc := make(chan error, 1)
	h.open = func(c handler.Conn) {
		go func() {
			payload := bytes.Repeat([]byte("b"), 3000) // frames over 125 and 4 KiB pool classes
			for i := 0; i < n; i++ {
				msg := append([]byte("bg-"+strconv.Itoa(i)+"-"), payload[:i*7%3000]...)
				if err := c.WriteMessage(handler.Binary, msg); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	srv, _ := startServer(t, h, engine.Options{})
	c := dialWS(t, srv.Addr().String(), "/")

	sendErr := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			if err := c.send(codec.OpText, []byte("fg-"+strconv.Itoa(i)+"-"+strings.Repeat("f", i%200))); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	fg, bg := 0, 0
	for fg < n || bg < n {
		f, err := c.read(readTimeout)
		if err != nil {
			t.Fatalf("after %d echoes and %d background messages: %v", fg, bg, err)
		}
		switch f.op {
		case codec.OpText:
			want := "fg-" + strconv.Itoa(fg) + "-" + strings.Repeat("f", fg%200)
			if string(f.data) != want {
				t.Fatalf("echo %d: got %v", fg, f)
			}
			fg++
		case codec.OpBinary:
			prefix := "bg-" + strconv.Itoa(bg) + "-"
			if !bytes.HasPrefix(f.data, []byte(prefix)) || len(f.data) != len(prefix)+bg*7%3000 || bytes.Count(f.data, []byte("b")) != bg*7%3000+1 {
				t.Fatalf("background %d: got %v", bg, f)
			}
			bg++
		default:
			t.Fatalf("unexpected %v", f)
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	h.check(t)
}

// Writes on a closed connection return ErrClosed, whether the close was
// started by the server or the peer, and from any goroutine.
func TestWriteAfterClose(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{})
	addr := srv.Addr().String()
	prep := codec.NewPreparedFrame(codec.OpText, []byte("prepared"))

	writes := func(c handler.Conn) map[string]error {
		errs := map[string]error{
			"WriteMessage":  c.WriteMessage(handler.Text, []byte("x")),
			"WritePrepared": c.WritePrepared(prep),
			"Ping":          c.Ping(nil),
			"Pong":          c.Pong(nil),
			"Close":         c.Close(1000, ""),
		}
		if w, err := c.NextWriter(handler.Binary); err != nil {
			errs["NextWriter"] = err
		} else if _, err := w.Write([]byte("x")); err != nil {
			errs["NextWriter"] = err
		} else {
			errs["NextWriter"] = w.Close()
		}
		return errs
	}
	check := func(t *testing.T, errs map[string]error) {
		t.Helper()
		for name, err := range errs {
			if !errors.Is(err, handler.ErrClosed) {
				t.Errorf("%s after close: %v, want ErrClosed", name, err)
			}
		}
	}

	// Peer closed, OnClose ran: writes from a goroutine fail.
	c := dialWS(t, addr, "/")
	sc := h.waitOpen(t)
	c.closeCleanly(t)
	h.waitClose(t)
	check(t, writes(sc))

	// Server closed, waiting for the peer's answer: writes fail at once.
	c = dialWS(t, addr, "/")
	sc = h.waitOpen(t)
	if err := sc.Close(4001, "going"); err != nil {
		t.Fatal(err)
	}
	check(t, writes(sc))
	c.expectClose(t, 4001)
	if err := c.sendClose(4001, ""); err != nil {
		t.Fatal(err)
	}
	c.expectEOF(t, readTimeout)
	h.waitClose(t)
	check(t, writes(sc))

	// Bad opcodes are refused without touching the connection.
	c = dialWS(t, addr, "/")
	sc = h.waitOpen(t)
	if err := sc.WriteMessage(codec.OpPing, nil); err == nil {
		t.Error("WriteMessage(OpPing) succeeded")
	}
	if _, err := sc.NextWriter(codec.OpClose); err == nil {
		t.Error("NextWriter(OpClose) succeeded")
	}
	c.roundTrip(t, "fine")
	h.check(t)
}

// NextWriter sends a message as fragments: each Write one non-final frame,
// Close the final continuation frame. WritePrepared sends the prepared
// frame unchanged. Control frames over 125 bytes are refused.
func TestNextWriterPreparedAndControlLimits(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	prep := codec.NewPreparedFrame(codec.OpBinary, bytes.Repeat([]byte{7}, 300))
	errc := make(chan error, 8)
	h.message = func(c handler.Conn, op handler.Op, data []byte) {
		switch string(data) {
		case "fragments": // from the callback
			w, err := c.NextWriter(handler.Text)
			if err != nil {
				errc <- err
				return
			}
			for _, p := range []string{"ab", "cd", strings.Repeat("e", 200)} {
				if _, err := w.Write([]byte(p)); err != nil {
					errc <- err
				}
			}
			errc <- w.Close()
		case "fragments from a goroutine":
			go func() {
				w, err := c.NextWriter(handler.Binary)
				if err != nil {
					errc <- err
					return
				}
				_, _ = io.Copy(w, strings.NewReader("xyz"))
				errc <- w.Close()
			}()
		case "prepared":
			errc <- c.WritePrepared(prep)
		case "control":
			big := bytes.Repeat([]byte("p"), 126)
			if err := c.Ping(big); !errors.Is(err, handler.ErrTooLarge) {
				errc <- fmt.Errorf("Ping(126 bytes) = %v, want ErrTooLarge", err)
				return
			}
			if err := c.Pong(big); !errors.Is(err, handler.ErrTooLarge) {
				errc <- fmt.Errorf("Pong(126 bytes) = %v, want ErrTooLarge", err)
				return
			}
			if err := c.Ping(big[:125]); err != nil {
				errc <- err
				return
			}
			errc <- c.Pong([]byte("unsolicited"))
		}
	}
	srv, _ := startServer(t, h, engine.Options{})
	c := dialWS(t, srv.Addr().String(), "/")

	type raw struct {
		fin  bool
		op   codec.OpCode
		data string
	}
	expectRaw := func(want ...raw) {
		t.Helper()
		for _, w := range want {
			fin, op, p, err := c.rawFrame(readTimeout)
			if err != nil {
				t.Fatal(err)
			}
			if got := (raw{fin, op, string(p)}); got != w {
				t.Fatalf("frame %+v, want %+v", got, w)
			}
		}
	}
	ask := func(s string) {
		t.Helper()
		if err := c.send(codec.OpText, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	ask("fragments")
	expectRaw(raw{false, codec.OpText, "ab"}, raw{false, codec.OpContinuation, "cd"},
		raw{false, codec.OpContinuation, strings.Repeat("e", 200)}, raw{true, codec.OpContinuation, ""})
	ask("fragments from a goroutine")
	expectRaw(raw{false, codec.OpBinary, "xyz"}, raw{true, codec.OpContinuation, ""})
	ask("prepared")
	expectRaw(raw{true, codec.OpBinary, string(bytes.Repeat([]byte{7}, 300))})
	ask("control")
	expectRaw(raw{true, codec.OpPing, strings.Repeat("p", 125)}, raw{true, codec.OpPong, "unsolicited"})
	for i := 0; i < 4; i++ {
		select {
		case err := <-errc:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(readTimeout):
			t.Fatal("handler did not report")
		}
	}
	// The fragmented messages also decode as whole messages.
	ask("fragments")
	c.expect(t, codec.OpText, "abcd"+strings.Repeat("e", 200))
	h.check(t)
}

// OnClose runs exactly once for every connection whose OnOpen ran, however
// it ended: client close frame, TCP drop mid-frame, TCP reset, server
// Close, protocol error.
func TestOnCloseExactlyOnce(t *testing.T) {
	const perKind = 40
	kinds := []string{"client-close", "drop-mid-frame", "reset", "server-close", "protocol-error"}
	h := newRecorder()
	h.message = func(c handler.Conn, op handler.Op, data []byte) {
		if string(data) == "close me" {
			_ = c.Close(4002, "as you wish")
			return
		}
		_ = c.WriteMessage(op, data)
	}
	srv, _ := startServer(t, h, engine.Options{EventLoops: 2})
	addr := srv.Addr().String()

	var wg sync.WaitGroup
	errc := make(chan error, len(kinds)*perKind)
	for _, kind := range kinds {
		for i := 0; i < perKind; i++ {
			wg.Add(1)
			go func(kind string) {
				defer wg.Done()
				if err := endConnection(addr, kind); err != nil {
					errc <- fmt.Errorf("%s: %w", kind, err)
				}
			}(kind)
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	total := len(kinds) * perKind
	events := waitN(t, h.closed, total, 10*time.Second)
	byKind := map[string]int{}
	for _, ev := range events {
		kind := ev.c.RawQuery()
		byKind[kind]++
		var ce *handler.CloseError
		isClose := errors.As(ev.err, &ce)
		switch kind {
		case "client-close":
			if !isClose || ce.Code != 1000 || !ce.Remote || ce.Reason != "bye" {
				t.Errorf("%s: OnClose err %v", kind, ev.err)
			}
		case "server-close":
			if !isClose || ce.Code != 4002 || ce.Remote {
				t.Errorf("%s: OnClose err %v", kind, ev.err)
			}
		case "protocol-error":
			if !isClose || ce.Code != codec.CloseProtocolError || ce.Remote {
				t.Errorf("%s: OnClose err %v", kind, ev.err)
			}
		default:
			if isClose || ev.err == nil {
				t.Errorf("%s: OnClose err %v, want a TCP-level error", kind, ev.err)
			}
		}
	}
	for _, kind := range kinds {
		if byKind[kind] != perKind {
			t.Errorf("%s: %d OnClose calls, want %d", kind, byKind[kind], perKind)
		}
	}
	// No second OnClose arrives later, and counters agree.
	if st := srv.Stats(); st.Open != 0 || st.Upgraded != int64(total) {
		t.Errorf("Stats: Open %d Upgraded %d", st.Open, st.Upgraded)
	}
	select {
	case ev := <-h.closed:
		t.Errorf("extra OnClose for %s: %v", ev.c.RawQuery(), ev.err)
	default:
	}
	h.check(t)
}

// endConnection opens a connection and ends it the way kind says.
func endConnection(addr, kind string) error {
	c, err := dialWSErr(addr, "/?"+kind)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	switch kind {
	case "client-close":
		if err := c.sendClose(1000, "bye"); err != nil {
			return err
		}
		if f, err := c.read(readTimeout); err != nil || f.op != codec.OpClose || f.code != 1000 {
			return fmt.Errorf("close answer %v %v", f, err)
		}
		return c.waitEOF(readTimeout)
	case "drop-mid-frame":
		frame := codec.AppendMaskedFrame(nil, true, codec.OpBinary, 0, randomMask(), make([]byte, 1000))
		_, err := c.conn.Write(frame[:600])
		return err
	case "reset":
		if err := c.send(codec.OpText, []byte("hi")); err != nil {
			return err
		}
		if f, err := c.read(readTimeout); err != nil || string(f.data) != "hi" {
			return fmt.Errorf("echo %v %v", f, err)
		}
		_ = c.conn.(*net.TCPConn).SetLinger(0)
		return nil
	case "server-close":
		if err := c.send(codec.OpText, []byte("close me")); err != nil {
			return err
		}
		if f, err := c.read(readTimeout); err != nil || f.op != codec.OpClose || f.code != 4002 {
			return fmt.Errorf("want close 4002: %v %v", f, err)
		}
		if err := c.sendClose(4002, ""); err != nil {
			return err
		}
		return c.waitEOF(readTimeout)
	case "protocol-error":
		// An unmasked client frame (RFC 6455 §5.1).
		if _, err := c.conn.Write(codec.AppendFrame(nil, true, codec.OpText, 0, []byte("unmasked"))); err != nil {
			return err
		}
		if f, err := c.read(readTimeout); err != nil || f.op != codec.OpClose || f.code != codec.CloseProtocolError {
			return fmt.Errorf("want close 1002: %v %v", f, err)
		}
		return c.waitEOF(readTimeout)
	}
	return nil
}
