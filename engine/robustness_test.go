package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
)

// Goroutines that keep writing to connections while those close and new
// ones take their descriptor numbers never reach the wrong client, and end
// with ErrClosed.
func TestWritesNeverCrossConnections(t *testing.T) {
	const rounds, perRound, maxWrites = 4, 50, 400
	h := newRecorder()
	writerErrs := make(chan error, rounds*perRound)
	h.open = func(c handler.Conn) {
		go func() {
			for i := 0; i < maxWrites; i++ {
				if err := c.WriteMessage(handler.Text, []byte(c.Path()+"#"+strconv.Itoa(i))); err != nil {
					writerErrs <- err
					return
				}
			}
			writerErrs <- nil
		}()
	}
	srv, _ := startServer(t, h, engine.Options{EventLoops: 2})
	addr := srv.Addr().String()

	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		errc := make(chan error, perRound)
		for i := 0; i < perRound; i++ {
			wg.Add(1)
			go func(id string) {
				defer wg.Done()
				c, err := dialWSErr(addr, id)
				if err != nil {
					errc <- err
					return
				}
				defer c.conn.Close() // abruptly, while the writer still writes
				want := 0
				for want < 5 {
					f, err := c.read(readTimeout)
					if err != nil {
						errc <- fmt.Errorf("%s: %w", id, err)
						return
					}
					if string(f.data) != id+"#"+strconv.Itoa(want) {
						errc <- fmt.Errorf("%s got %v, want message %d of its own", id, f, want)
						return
					}
					want++
				}
			}("/r" + strconv.Itoa(r) + "c" + strconv.Itoa(i))
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Error(err)
		}
	}
	for i := 0; i < rounds*perRound; i++ {
		select {
		case err := <-writerErrs:
			if err != nil && !errors.Is(err, handler.ErrClosed) {
				t.Errorf("writer ended with %v, want ErrClosed", err)
			}
		case <-time.After(readTimeout):
			t.Fatalf("%d writers still running", rounds*perRound-i)
		}
	}
	waitN(t, h.closed, rounds*perRound, readTimeout)
	h.check(t)
}

// Ending the context given to Start drains like Shutdown, and Wait returns
// nil once the server stopped.
func TestStartContextDrains(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := engine.New(h, engine.Options{Addr: "127.0.0.1:0", Logger: discardLogger})
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Wait() }()
	c := dialWS(t, srv.Addr().String(), "/")
	c.roundTrip(t, "hi")
	cancel()
	c.expectClose(t, codec.CloseGoingAway)
	if err := c.sendClose(codec.CloseGoingAway, ""); err != nil {
		t.Fatal(err)
	}
	c.expectEOF(t, readTimeout)
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
	case <-time.After(readTimeout):
		t.Fatal("the server did not stop after its context was cancelled")
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown of a stopped server: %v", err)
	}
	if _, _, err := srv.Dial(context.Background(), "ws://"+srv.Addr().String()+"/", nil); !errors.Is(err, engine.ErrNotServing) {
		t.Errorf("Dial on a stopped server: %v, want ErrNotServing", err)
	}
	h.waitClose(t)
}

// A busy address makes Start fail with the listener's error, and the
// server is then stopped: Wait returns the same error, Addr stays nil and
// a second Start is refused.
func TestListenError(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv := engine.New(newRecorder(), engine.Options{Addr: l.Addr().String(), Logger: discardLogger})
	err = srv.Start(context.Background())
	var op *net.OpError
	if !errors.As(err, &op) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start on a busy address: %v, want the listener's *net.OpError (address already in use)", err)
	}
	if werr := srv.Wait(); werr != err {
		t.Errorf("Wait after a failed Start = %v, want %v", werr, err)
	}
	if srv.Addr() != nil {
		t.Errorf("Addr() = %v after a failed Start", srv.Addr())
	}
	if err := srv.Start(context.Background()); err == nil {
		t.Error("a second Start succeeded")
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after a failed Start: %v", err)
	}
}

// Options that are invalid under the zero/negative rule make Start fail
// before it listens, with an error that names the field.
func TestStartRejectsInvalidOptions(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		field string
		opts  engine.Options
	}{
		{"EventLoops", engine.Options{EventLoops: -1}},
		{"MaxHeaderBytes", engine.Options{MaxHeaderBytes: -1}},
		{"HandshakeTimeout", engine.Options{HandshakeTimeout: -time.Second}},
		{"PongTimeout", engine.Options{PongTimeout: -time.Second}},
		{"CloseTimeout", engine.Options{CloseTimeout: -time.Second}},
		{"FDReserve", engine.Options{FDReserve: -1}},
		{"MaxTLSHandshakes", engine.Options{MaxTLSHandshakes: -1}},
		{"ReadBufferCap", engine.Options{ReadBufferCap: -1}},
		{"Deflate.ContextTakeoverBudget", engine.Options{Deflate: engine.Deflate{ContextTakeoverBudget: -1}}},
		{"Deflate.Level", engine.Options{Deflate: engine.Deflate{Level: 10}}},
		{"Deflate.Level", engine.Options{Deflate: engine.Deflate{Level: -3}}},
		{"Deflate.TakeoverWindow", engine.Options{Deflate: engine.Deflate{TakeoverWindow: 100}}},
		{"Listener", engine.Options{Addr: "127.0.0.1:0", Listener: l}},
	} {
		tc.opts.Logger = discardLogger
		srv := engine.New(newRecorder(), tc.opts)
		err := srv.Start(context.Background())
		if err == nil {
			srv.Shutdown(context.Background())
			t.Errorf("Start with an invalid %s succeeded", tc.field)
			continue
		}
		if !strings.Contains(err.Error(), "Options."+tc.field) {
			t.Errorf("Start with an invalid %s: %q does not name the field", tc.field, err)
		}
	}
	// Negative where off has a meaning is valid.
	srv := engine.New(newRecorder(), engine.Options{
		Logger: discardLogger, IdleTimeout: -1, MessageTimeout: -1, WriteStallTimeout: -1, PingInterval: -1,
		MaxOutboundBytes: -1, MaxConns: -1, MaxInboundMemory: -1, MaxMessageSize: -1, TCPKeepAlive: -1,
		Deflate: engine.Deflate{Enabled: true, Threshold: -1, Level: -2},
	})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("Start with every off-able field off: %v", err)
	}
	srv.Shutdown(context.Background())
}

// A server given a Listener serves it and closes it when it stops.
func TestStartListener(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := enginetest.Start(t, newRecorder(), engine.Options{Listener: l, Logger: discardLogger})
	if srv.Addr().String() != l.Addr().String() {
		t.Errorf("Addr() = %v, want the listener's %v", srv.Addr(), l.Addr())
	}
	c := dialWS(t, srv.Addr().String(), "/")
	c.roundTrip(t, "hi")
	enginetest.Stop(t, srv)
	if _, err := l.Accept(); err == nil {
		t.Error("the listener still accepts after the server stopped")
	}
}

// A server listens on a unix socket as well.
func TestUnixSocket(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ws.sock")
	srv, _ := startServer(t, newRecorder(), engine.Options{Addr: "unix://" + path})
	if a, ok := srv.Addr().(*net.UnixAddr); !ok || a.Name != path {
		t.Fatalf("Addr() = %#v, want the unix socket %s", srv.Addr(), path)
	}
	conn, err := net.DialTimeout("unix", path, readTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c, err := upgrade(conn, "localhost", "/")
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	defer c.conn.Close()
	c.roundTrip(t, "over a unix socket")
	c.closeCleanly(t)
}

// Messages over MaxMessageSize, whole or summed over fragments, close the
// connection with 1009 before their payload is buffered.
func TestMaxMessageSize(t *testing.T) {
	t.Parallel()
	const max = 1000
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{MaxMessageSize: max})
	addr := srv.Addr().String()

	c := dialWS(t, addr, "/")
	c.roundTrip(t, strings.Repeat("m", max)) // at the limit: fine
	// Only the header of a 1 GiB frame: refused on the header alone.
	hdr := codec.AppendMaskedFrame(nil, true, codec.OpBinary, 0, randomMask(), nil)
	hdr = append(codec.AppendFrameHeader(nil, true, codec.OpBinary, 0, 1<<30), hdr[2:]...)
	hdr[1] |= 0x80
	if _, err := c.conn.Write(hdr); err != nil {
		t.Fatal(err)
	}
	c.expectClose(t, codec.CloseMessageTooBig)
	c.expectEOF(t, readTimeout)
	c.conn.Close()
	ev := h.waitClose(t)
	var ce *handler.CloseError
	if !errors.As(ev.err, &ce) || ce.Code != codec.CloseMessageTooBig || ce.Remote {
		t.Errorf("OnClose err %v, want the server's 1009", ev.err)
	}

	c = dialWS(t, addr, "/")
	for i := 0; i < 3; i++ {
		op := codec.OpText
		if i > 0 {
			op = codec.OpContinuation
		}
		if err := c.sendFrame(false, op, bytes.Repeat([]byte("f"), 400)); err != nil {
			t.Fatal(err)
		}
	}
	c.expectClose(t, codec.CloseMessageTooBig)
	c.expectEOF(t, readTimeout)
	h.check(t)
}

// A client that reads nothing while the server has written less than the
// outbound cap is closed after WriteStallTimeout.
func TestWriteStallTimeout(t *testing.T) {
	t.Parallel()
	const stall = 8 * time.Second // ticks of 500 ms, the longest tick
	h := newRecorder()
	big := bytes.Repeat([]byte{2}, 64<<10)
	wrote := make(chan struct{}, 1)
	h.message = func(c handler.Conn, op handler.Op, data []byte) {
		defer func() { wrote <- struct{}{} }()
		for i := 0; i < 128; i++ { // 8 MiB: more than the kernel takes
			if err := c.WriteMessage(handler.Binary, big); err != nil {
				h.problem("write %d: %v", i, err)
				return
			}
		}
	}
	srv, clk, _ := startClocked(t, h, engine.Options{WriteStallTimeout: stall, MaxOutboundBytes: 64 << 20})
	c := dialSmallWindow(t, srv.Addr().String(), "/")
	if err := c.send(codec.OpText, []byte("send me a lot")); err != nil {
		t.Fatal(err)
	}
	waitN(t, wrote, 1, readTimeout)
	clk.Advance(stall - 2*time.Second)
	select {
	case ev := <-h.closed:
		t.Fatalf("closed before the stall timeout: %v", ev.err)
	case <-time.After(quiet):
	}
	clk.Advance(3 * time.Second)
	ev := h.waitClose(t)
	if !errors.Is(ev.err, handler.ErrWriteStall) {
		t.Errorf("OnClose err %v, want ErrWriteStall", ev.err)
	}
	if st := srv.Stats(); st.Timeouts != 1 {
		t.Errorf("Timeouts %d", st.Timeouts)
	}
	h.check(t)
}

// A HEAD request to the fallback gets the headers without the body.
func TestFallbackHead(t *testing.T) {
	t.Parallel()
	srv, _ := startServer(t, newRecorder(), engine.Options{
		Fallback: func(r *handler.Request) *engine.FallbackResponse {
			return &engine.FallbackResponse{Status: http.StatusOK, Body: []byte("page")}
		},
	})
	addr := srv.Addr().String()
	c, err := dialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	if _, err := c.conn.Write([]byte("HEAD / HTTP/1.1\r\nHost: " + addr + "\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(readTimeout))
	resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodHead})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Errorf("HEAD: %s", resp.Status)
	}
	c.expectEOF(t, readTimeout) // no body bytes follow the header
}

// Shutdown does not wait for a connection still in its handshake: it is
// closed at once, and the drain ends as soon as the WebSocket connections
// answered.
func TestShutdownClosesHandshakes(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{})
	addr := srv.Addr().String()
	half, err := dialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer half.conn.Close()
	if _, err := half.conn.Write([]byte("GET / HTTP/1.1\r\nHost: " + addr + "\r\n")); err != nil {
		t.Fatal(err)
	}
	ws := dialWS(t, addr, "/")
	ws.roundTrip(t, "hi")
	// The half connection may sit on the other loop, not yet registered: a
	// connection that arrives during the drain gets 503 instead, which is
	// not what this test is about. No callback runs for a connection in its
	// handshake, so wait for the server's own count of TCP connections.
	for deadline := time.Now().Add(readTimeout); srv.Stats().Conns < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server counts %d connections, want 2", srv.Stats().Conns)
		}
	}

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	if err := half.waitEOF(readTimeout); err != nil {
		t.Errorf("connection in the handshake: %v", err)
	}
	ws.expectClose(t, codec.CloseGoingAway)
	if err := ws.sendClose(codec.CloseGoingAway, ""); err != nil {
		t.Fatal(err)
	}
	ws.expectEOF(t, readTimeout)
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(readTimeout):
		t.Fatal("Shutdown waited for the connection in its handshake")
	}
	if ev := h.waitClose(t); ev.c.Path() != "/" {
		t.Errorf("OnClose for %q", ev.c.Path())
	}
	h.check(t)
}
