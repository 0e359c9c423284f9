package engine_test

// A small WebSocket test client over a raw net.Conn, a recording handler and
// a server starter, shared by the engine's behavioural tests. The client
// encodes with codec.AppendMaskedFrame and decodes with a client-side
// codec.Decoder, so every frame the server sends is also checked for RFC
// 6455 conformance (unmasked, valid opcodes, UTF-8 of text).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// readTimeout bounds every read a test makes when it expects something to
// arrive. It is generous: the machine is shared and the race detector slows
// everything down; a test that times out here has failed anyway.
const readTimeout = 5 * time.Second

// testKey is the Sec-WebSocket-Key of RFC 6455 §1.3 and testAccept its answer.
const (
	testKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	testAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

var discardLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// startServer runs a server for h on a free loopback port and shuts it down
// when the test ends. The returned channel yields Wait's result.
func startServer(t testing.TB, h handler.Handler, opts engine.Options) (*engine.Server, <-chan error) {
	t.Helper()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = discardLogger
	}
	srv := engine.New(h, opts)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("server failed to start: %v", err)
	}
	return srv, serveUntilCleanup(t, srv)
}

// serveUntilCleanup shuts srv down when the test ends. The returned
// channel yields Wait's result once the server stopped.
func serveUntilCleanup(t testing.TB, srv *engine.Server) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- srv.Wait(); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Logf("cleanup: Shutdown: %v", err)
		}
	})
	return done
}

// --- recording handler ------------------------------------------------------

type closeEvent struct {
	c   handler.Conn
	err error
}

// recorder is a Handler that echoes by default and records opens and
// closes. Its hooks run on the event loop.
type recorder struct {
	handler.Base
	open    func(c handler.Conn)
	message func(c handler.Conn, op handler.Op, data []byte) // nil: echo
	pong    func(c handler.Conn, data []byte)

	opened chan handler.Conn
	closed chan closeEvent

	mu       sync.Mutex
	closes   map[handler.Conn]int
	opens    map[handler.Conn]bool
	problems []string
}

func newRecorder() *recorder {
	return &recorder{
		opened: make(chan handler.Conn, 8192),
		closed: make(chan closeEvent, 8192),
		closes: map[handler.Conn]int{},
		opens:  map[handler.Conn]bool{},
	}
}

func (r *recorder) OnOpen(c handler.Conn) {
	r.mu.Lock()
	if r.opens[c] {
		r.problems = append(r.problems, fmt.Sprintf("OnOpen twice for %v", c.RemoteAddr()))
	}
	r.opens[c] = true
	r.mu.Unlock()
	if r.open != nil {
		r.open(c)
	}
	select {
	case r.opened <- c:
	default:
	}
}

func (r *recorder) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	if r.message != nil {
		r.message(c, op, data)
		return
	}
	if err := c.WriteMessage(op, data); err != nil && !errors.Is(err, handler.ErrClosed) {
		r.problem("echo: %v", err)
	}
}

func (r *recorder) OnPong(c handler.Conn, data []byte) {
	if r.pong != nil {
		r.pong(c, data)
	}
}

func (r *recorder) OnClose(c handler.Conn, err error) {
	r.mu.Lock()
	if !r.opens[c] {
		r.problems = append(r.problems, fmt.Sprintf("OnClose without OnOpen for %v", c.RemoteAddr()))
	}
	r.closes[c]++
	if r.closes[c] > 1 {
		r.problems = append(r.problems, fmt.Sprintf("OnClose ran %d times for %v", r.closes[c], c.RemoteAddr()))
	}
	r.mu.Unlock()
	select {
	case r.closed <- closeEvent{c, err}:
	default:
	}
}

func (r *recorder) problem(f string, a ...any) {
	r.mu.Lock()
	r.problems = append(r.problems, fmt.Sprintf(f, a...))
	r.mu.Unlock()
}

// check fails the test with every contract violation seen so far.
func (r *recorder) check(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.problems {
		t.Error(p)
	}
}

// waitOpen returns the next connection whose OnOpen ran.
func (r *recorder) waitOpen(t testing.TB) handler.Conn {
	t.Helper()
	select {
	case c := <-r.opened:
		return c
	case <-time.After(readTimeout):
		t.Fatal("no OnOpen within the timeout")
		return nil
	}
}

// waitClose returns the next OnClose event.
func (r *recorder) waitClose(t testing.TB) closeEvent {
	t.Helper()
	select {
	case ev := <-r.closed:
		return ev
	case <-time.After(readTimeout):
		t.Fatal("no OnClose within the timeout")
		return closeEvent{}
	}
}

// --- client -----------------------------------------------------------------

// wsClient is one raw client connection. It is used by one goroutine.
type wsClient struct {
	conn net.Conn
	br   *bufio.Reader
	dec  codec.Decoder
	in   []byte // bytes read but not decoded yet
	msg  []byte // a fragmented message being assembled
	rbuf []byte
	resp *http.Response
	body string // body of a non-101 response
}

// frame is one thing the client received: a whole data message or a
// control frame.
type frame struct {
	op     codec.OpCode
	data   []byte
	code   uint16 // close frames
	reason string // close frames
}

func (f frame) String() string {
	if f.op == codec.OpClose {
		return fmt.Sprintf("close %d %q", f.code, f.reason)
	}
	if len(f.data) > 40 {
		return fmt.Sprintf("%v %d bytes %q...", f.op, len(f.data), f.data[:40])
	}
	return fmt.Sprintf("%v %q", f.op, f.data)
}

func upgradeRequest(host, path string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", path, host, testKey)
	for _, h := range headers {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// dialRaw opens a TCP connection without sending anything.
func dialRaw(addr string) (*wsClient, error) {
	conn, err := net.DialTimeout("tcp", addr, readTimeout)
	if err != nil {
		return nil, err
	}
	return newClient(conn), nil
}

func newClient(conn net.Conn) *wsClient {
	return &wsClient{conn: conn, br: bufio.NewReaderSize(conn, 64<<10), dec: codec.Decoder{Client: true, MaxMessageSize: -1}}
}

// request sends a raw HTTP request and reads the response. The body of a
// non-101 response is read into c.body.
func (c *wsClient) request(req string) error {
	if _, err := io.WriteString(c.conn, req); err != nil {
		return err
	}
	return c.readResponse()
}

func (c *wsClient) readResponse() error {
	_ = c.conn.SetReadDeadline(time.Now().Add(readTimeout))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return err
	}
	c.resp = resp
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, err := io.ReadAll(resp.Body)
		c.body = string(b)
		return err
	}
	return nil
}

// dialWSErr connects and upgrades; it fails unless the answer is a valid 101.
func dialWSErr(addr, path string, headers ...string) (*wsClient, error) {
	conn, err := net.DialTimeout("tcp", addr, readTimeout)
	if err != nil {
		return nil, err
	}
	return upgrade(conn, addr, path, headers...)
}

// upgrade runs the handshake on conn; it fails unless the answer is a
// valid 101.
func upgrade(conn net.Conn, addr, path string, headers ...string) (*wsClient, error) {
	c := newClient(conn)
	if err := c.request(upgradeRequest(addr, path, headers...)); err != nil {
		c.conn.Close()
		return nil, err
	}
	if c.resp.StatusCode != http.StatusSwitchingProtocols {
		c.conn.Close()
		return nil, fmt.Errorf("upgrade answered %s: %q", c.resp.Status, c.body)
	}
	if got := c.resp.Header.Get("Sec-WebSocket-Accept"); got != testAccept {
		c.conn.Close()
		return nil, fmt.Errorf("Sec-WebSocket-Accept %q, want %q", got, testAccept)
	}
	return c, nil
}

func dialWS(t testing.TB, addr, path string, headers ...string) *wsClient {
	t.Helper()
	c, err := dialWSErr(addr, path, headers...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.conn.Close() })
	return c
}

func randomMask() [4]byte {
	v := rand.Uint32()
	return [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
}

func (c *wsClient) sendFrame(fin bool, op codec.OpCode, payload []byte) error {
	b := codec.AppendMaskedFrame(nil, fin, op, 0, randomMask(), payload)
	_, err := c.conn.Write(b)
	return err
}

func (c *wsClient) send(op codec.OpCode, payload []byte) error {
	return c.sendFrame(true, op, payload)
}

func (c *wsClient) sendClose(code uint16, reason string) error {
	return c.send(codec.OpClose, codec.AppendClosePayload(nil, code, reason))
}

// fill reads more bytes into c.in.
func (c *wsClient) fill() error {
	if c.rbuf == nil {
		c.rbuf = make([]byte, 64<<10)
	}
	n, err := c.br.Read(c.rbuf)
	c.in = append(c.in, c.rbuf[:n]...)
	if n > 0 {
		return nil
	}
	return err
}

// read returns the next data message or control frame, waiting at most
// timeout for it.
func (c *wsClient) read(timeout time.Duration) (frame, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		n, ev, err := c.dec.Decode(c.in)
		if err != nil {
			return frame{}, fmt.Errorf("server sent an invalid frame: %w", err)
		}
		c.in = c.in[n:]
		switch ev.Kind {
		case codec.EventControl:
			return frame{op: ev.Op, data: append([]byte(nil), ev.Payload...), code: ev.CloseCode, reason: string(ev.CloseReason)}, nil
		case codec.EventData:
			c.msg = append(c.msg, ev.Payload...)
			if ev.Final {
				f := frame{op: ev.Op, data: c.msg}
				c.msg = nil
				return f, nil
			}
			continue
		}
		if n > 0 {
			continue
		}
		if len(c.in) == 0 {
			c.in = nil // let the buffer go instead of growing it forever
		}
		if err := c.fill(); err != nil {
			return frame{}, err
		}
	}
}

// rawFrame reads one frame as it is on the wire (fin bit included), for
// tests about fragmentation. Do not mix with read in the middle of a frame.
func (c *wsClient) rawFrame(timeout time.Duration) (fin bool, op codec.OpCode, payload []byte, err error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	need := func(n int) error {
		for len(c.in) < n {
			if err := c.fill(); err != nil {
				return err
			}
		}
		return nil
	}
	if err = need(2); err != nil {
		return
	}
	hs, length := 2, int(c.in[1]&0x7F)
	if c.in[1]&0x80 != 0 {
		return false, 0, nil, errors.New("masked server frame")
	}
	switch length {
	case 126:
		hs = 4
	case 127:
		hs = 10
	}
	if err = need(hs); err != nil {
		return
	}
	switch length {
	case 126:
		length = int(c.in[2])<<8 | int(c.in[3])
	case 127:
		length = 0
		for _, b := range c.in[2:10] {
			length = length<<8 | int(b)
		}
	}
	if err = need(hs + length); err != nil {
		return
	}
	fin, op = c.in[0]&0x80 != 0, codec.OpCode(c.in[0]&0x0F)
	payload = append([]byte(nil), c.in[hs:hs+length]...)
	c.in = c.in[hs+length:]
	return fin, op, payload, nil
}

// expect reads the next frame and fails the test unless it has op and data.
func (c *wsClient) expect(t testing.TB, op codec.OpCode, data string) {
	t.Helper()
	f, err := c.read(readTimeout)
	if err != nil {
		t.Fatalf("want %v %q: %v", op, data, err)
	}
	if f.op != op || string(f.data) != data {
		t.Fatalf("got %v, want %v %q", f, op, data)
	}
}

// expectClose reads the next frame and fails the test unless it is a close
// frame with code.
func (c *wsClient) expectClose(t testing.TB, code uint16) frame {
	t.Helper()
	f, err := c.read(readTimeout)
	if err != nil {
		t.Fatalf("want close %d: %v", code, err)
	}
	if f.op != codec.OpClose || f.code != code {
		t.Fatalf("got %v, want close %d", f, code)
	}
	return f
}

// expectEOF reads until the server closes the TCP connection and fails the
// test if anything else arrives first or it does not happen in time.
func (c *wsClient) expectEOF(t testing.TB, timeout time.Duration) {
	t.Helper()
	if err := c.waitEOF(timeout); err != nil {
		t.Fatal(err)
	}
}

func (c *wsClient) waitEOF(timeout time.Duration) error {
	if len(c.in) > 0 {
		return fmt.Errorf("want EOF, %d more bytes buffered: %q", len(c.in), c.in)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	var b [512]byte
	n, err := c.br.Read(b[:])
	if n > 0 {
		return fmt.Errorf("want EOF, got %d more bytes: %q", n, b[:n])
	}
	if err != io.EOF {
		return fmt.Errorf("want EOF, got %v", err)
	}
	return nil
}

// roundTrip sends a text message and expects it back (through an echo
// handler).
func (c *wsClient) roundTrip(t testing.TB, msg string) {
	t.Helper()
	if err := c.send(codec.OpText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.expect(t, codec.OpText, msg)
}

// roundTripAnsweringProbes is roundTrip for a server with an idle timeout:
// a probe ping may arrive before the echo, and is answered as a browser
// would.
func (c *wsClient) roundTripAnsweringProbes(t testing.TB, msg string) {
	t.Helper()
	if err := c.send(codec.OpText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	f, err := c.read(readTimeout)
	for err == nil && f.op == codec.OpPing {
		if err = c.send(codec.OpPong, f.data); err == nil {
			f, err = c.read(readTimeout)
		}
	}
	if err != nil || f.op != codec.OpText || string(f.data) != msg {
		t.Fatalf("got %v %v, want the echo %q", f, err, msg)
	}
}

// closeCleanly runs the client side of a client-initiated close handshake.
func (c *wsClient) closeCleanly(t testing.TB) {
	t.Helper()
	if err := c.sendClose(codec.CloseNormal, "bye"); err != nil {
		t.Fatal(err)
	}
	c.expectClose(t, codec.CloseNormal)
	c.expectEOF(t, readTimeout)
}

// waitN receives n values from ch or fails after timeout.
func waitN[T any](t testing.TB, ch <-chan T, n int, timeout time.Duration) []T {
	t.Helper()
	out := make([]T, 0, n)
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case v := <-ch:
			out = append(out, v)
		case <-deadline:
			t.Fatalf("got %d of %d events within %v", len(out), n, timeout)
		}
	}
	return out
}
