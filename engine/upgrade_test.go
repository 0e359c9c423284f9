package engine_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// startLoops runs a server's event loops without a listener (no
// Options.Addr), for connections upgraded through net/http, until the test
// ends.
func startLoops(t *testing.T, h handler.Handler, opts engine.Options) *engine.Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = discardLogger
	}
	srv := engine.New(h, opts)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = srv.Wait()
	})
	return srv
}

// httpFront serves h on an httptest server; it returns the server's address.
func httpFront(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

// upperHandler answers every message in upper case.
type upperHandler struct{ handler.Base }

func (upperHandler) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	_ = c.WriteMessage(op, bytes.ToUpper(data))
}

// A net/http handler upgrades onto the loops: the connection echoes, and
// the per-connection choices (handler, subprotocol, headers, context,
// message limit) hold.
func TestUpgradeFromHTTP(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	contexts := make(chan any, 4)
	h.open = func(c handler.Conn) { contexts <- c.Context() }
	srv := startLoops(t, h, engine.Options{Subprotocols: []string{"chat.v1"}})
	upgradeErr := make(chan error, 4)
	addr := httpFront(t, func(w http.ResponseWriter, r *http.Request) {
		opts := &engine.UpgradeOptions{Context: "ctx:" + r.URL.Path, Header: http.Header{"X-Route": {r.URL.Path}}}
		switch r.URL.Path {
		case "/upper":
			opts.Handler = upperHandler{}
		case "/small":
			opts.MaxMessageSize = 1024
		}
		_, err := srv.Upgrade(w, r, opts)
		upgradeErr <- err
	})

	t.Run("echo", func(t *testing.T) {
		c := dialWS(t, addr, "/echo?x=1", "Sec-WebSocket-Protocol: mqtt, chat.v1")
		if err := <-upgradeErr; err != nil {
			t.Fatal(err)
		}
		if got := c.resp.Header.Get("X-Route"); got != "/echo" {
			t.Errorf("X-Route %q", got)
		}
		if got := c.resp.Header.Get("Sec-WebSocket-Protocol"); got != "chat.v1" {
			t.Errorf("subprotocol %q", got)
		}
		sc := h.waitOpen(t)
		if sc.Path() != "/echo" || sc.RawQuery() != "x=1" || sc.Subprotocol() != "chat.v1" {
			t.Errorf("Path %q RawQuery %q Subprotocol %q", sc.Path(), sc.RawQuery(), sc.Subprotocol())
		}
		if ctx := <-contexts; ctx != "ctx:/echo" {
			t.Errorf("Context in OnOpen = %v", ctx)
		}
		if ra := sc.RemoteAddr(); ra == nil || ra.String() != c.conn.LocalAddr().String() {
			t.Errorf("RemoteAddr %v, want %v", ra, c.conn.LocalAddr())
		}
		c.roundTrip(t, "through net/http")
		big := bytes.Repeat([]byte("x"), 200<<10)
		if err := c.send(codec.OpBinary, big); err != nil {
			t.Fatal(err)
		}
		if f, err := c.read(readTimeout); err != nil || !bytes.Equal(f.data, big) {
			t.Fatalf("echo of 200 KiB: %d bytes, %v", len(f.data), err)
		}
		c.closeCleanly(t)
		h.waitClose(t)
	})
	t.Run("per-connection handler", func(t *testing.T) {
		c := dialWS(t, addr, "/upper")
		if err := <-upgradeErr; err != nil {
			t.Fatal(err)
		}
		if err := c.send(codec.OpText, []byte("shout")); err != nil {
			t.Fatal(err)
		}
		c.expect(t, codec.OpText, "SHOUT")
	})
	t.Run("per-connection limit", func(t *testing.T) {
		c := dialWS(t, addr, "/small")
		if err := <-upgradeErr; err != nil {
			t.Fatal(err)
		}
		<-contexts
		if err := c.send(codec.OpBinary, make([]byte, 2048)); err != nil {
			t.Fatal(err)
		}
		c.expectClose(t, codec.CloseMessageTooBig)
	})
	h.check(t)
}

// A frame the client sent in the same packet as its request sits in
// net/http's reader when the handler runs: it is carried over, not lost.
func TestUpgradeFromHTTPPipelined(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	srv := startLoops(t, h, engine.Options{})
	addr := httpFront(t, func(w http.ResponseWriter, r *http.Request) { _, _ = srv.Upgrade(w, r, nil) })
	c, err := dialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	req := []byte(upgradeRequest(addr, "/"))
	req = codec.AppendMaskedFrame(req, true, codec.OpText, 0, randomMask(), []byte("pipelined"))
	// And the first half of another frame: the rest comes later.
	second := codec.AppendMaskedFrame(nil, true, codec.OpText, 0, randomMask(), []byte("split across"))
	req = append(req, second[:4]...)
	if _, err := c.conn.Write(req); err != nil {
		t.Fatal(err)
	}
	if err := c.readResponse(); err != nil || c.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("%v %v", c.resp, err)
	}
	c.expect(t, codec.OpText, "pipelined")
	if _, err := c.conn.Write(second[4:]); err != nil {
		t.Fatal(err)
	}
	c.expect(t, codec.OpText, "split across")
	h.check(t)
}

// Every WebSocket-level fault is answered through net/http with the same
// status, reason and headers as on the server's own listener.
func TestUpgradeFromHTTPRejections(t *testing.T) {
	t.Parallel()
	native, _ := startServer(t, newRecorder(), engine.Options{})
	srv := startLoops(t, newRecorder(), engine.Options{})
	front := httpFront(t, func(w http.ResponseWriter, r *http.Request) {
		if _, err := srv.Upgrade(w, r, nil); err == nil {
			t.Errorf("%s %s: upgraded", r.Method, r.URL)
		}
	})
	cases := map[string]func(addr string) string{
		"plain GET":    func(a string) string { return "GET / HTTP/1.1\r\nHost: " + a + "\r\n\r\n" },
		"cross-origin": func(a string) string { return upgradeRequest(a, "/", "Origin: http://evil.example") },
		"bad key":      func(a string) string { return strings.Replace(upgradeRequest(a, "/"), testKey, "c2hvcnQ=", 1) },
		"version 8":    func(a string) string { return strings.Replace(upgradeRequest(a, "/"), "Version: 13", "Version: 8", 1) },
		"POST":         func(a string) string { return strings.Replace(upgradeRequest(a, "/"), "GET", "POST", 1) },
		"no Connection": func(a string) string {
			return strings.Replace(upgradeRequest(a, "/"), "Connection: Upgrade", "Connection: keep-alive", 1)
		},
		"no key": func(a string) string {
			return strings.Replace(upgradeRequest(a, "/"), "Sec-WebSocket-Key: "+testKey+"\r\n", "", 1)
		},
		"websocket typo": func(a string) string {
			return strings.Replace(upgradeRequest(a, "/"), "Upgrade: websocket", "Upgrade: websockets", 1)
		},
	}
	for name, req := range cases {
		t.Run(name, func(t *testing.T) {
			answer := func(addr string) (*http.Response, string) {
				c, err := dialRaw(addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.conn.Close()
				if err := c.request(req(addr)); err != nil {
					t.Fatal(err)
				}
				return c.resp, strings.TrimSpace(c.body)
			}
			nr, nb := answer(native.Addr().String())
			hr, hb := answer(front)
			if nr.StatusCode != hr.StatusCode || nb != hb {
				t.Errorf("native: %d %q; net/http: %d %q", nr.StatusCode, nb, hr.StatusCode, hb)
			}
			for _, k := range []string{"Allow", "Sec-Websocket-Version", "Upgrade"} {
				if nr.Header.Get(k) != hr.Header.Get(k) {
					t.Errorf("header %s: native %q, net/http %q", k, nr.Header.Get(k), hr.Header.Get(k))
				}
			}
		})
	}
}

// An http.Server with TLS hijacks a *tls.Conn, which no loop can read: it is
// bridged, with the same contract, and its goroutines end with it.
func TestUpgradeFromHTTPTLS(t *testing.T) {
	h := newRecorder()
	srv := startLoops(t, h, engine.Options{})
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = srv.Upgrade(w, r, nil) }))
	t.Cleanup(ts.Close)
	addr := ts.Listener.Addr().String()
	before := runtime.NumGoroutine()

	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := upgrade(conn, addr, "/tls")
	if err != nil {
		t.Fatal(err)
	}
	sc := h.waitOpen(t)
	if ra := sc.RemoteAddr(); ra == nil || ra.String() != conn.LocalAddr().String() {
		t.Errorf("RemoteAddr %v, want the TLS peer %v", ra, conn.LocalAddr())
	}
	c.roundTrip(t, "over TLS")
	big := bytes.Repeat([]byte("t"), 100<<10)
	if err := c.send(codec.OpBinary, big); err != nil {
		t.Fatal(err)
	}
	if f, err := c.read(readTimeout); err != nil || !bytes.Equal(f.data, big) {
		t.Fatalf("echo of 100 KiB: %d bytes, %v", len(f.data), err)
	}
	c.closeCleanly(t)
	conn.Close()
	var ce *handler.CloseError
	if ev := h.waitClose(t); !errors.As(ev.err, &ce) || ce.Code != codec.CloseNormal {
		t.Errorf("OnClose err %v", ev.err)
	}
	waitFor(t, "the bridge's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	h.check(t)
}

// waitFor polls cond until it holds, failing the test after readTimeout.
// For conditions no signal announces (goroutines ending, descriptors
// closing), each try follows a round of the scheduler.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(readTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(time.Millisecond) // a poll: nothing announces these conditions
	}
}

// openFDs counts the process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// The roads where an upgrade cannot happen say so clearly and leak nothing.
func TestUpgradeFromHTTPRefused(t *testing.T) {
	h := newRecorder()
	srv := startLoops(t, h, engine.Options{MaxConns: 1})

	t.Run("ResponseWriter without Hijack", func(t *testing.T) {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header = http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}, "Sec-Websocket-Key": {testKey}, "Sec-Websocket-Version": {"13"}}
		if _, err := srv.Upgrade(rec, r, nil); err == nil || rec.Code != http.StatusHTTPVersionNotSupported || !strings.Contains(rec.Body.String(), "hijack") {
			t.Errorf("err %v, status %d %q", err, rec.Code, rec.Body.String())
		}
	})
	t.Run("HTTP/2", func(t *testing.T) {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.ProtoMajor, r.ProtoMinor = 2, 0
		if _, err := srv.Upgrade(rec, r, nil); err == nil || rec.Code != http.StatusHTTPVersionNotSupported {
			t.Errorf("err %v, status %d", err, rec.Code)
		}
	})
	t.Run("connection limit", func(t *testing.T) {
		addr := httpFront(t, func(w http.ResponseWriter, r *http.Request) { _, _ = srv.Upgrade(w, r, nil) })
		first := dialWS(t, addr, "/")
		first.roundTrip(t, "the one allowed")
		if _, err := dialWSErr(addr, "/"); err == nil || !strings.Contains(err.Error(), "503") {
			t.Errorf("past MaxConns: %v, want 503", err)
		}
		first.closeCleanly(t)
		first.conn.Close()
		h.waitClose(t)
	})
	t.Run("client gone before the hijack", func(t *testing.T) {
		proceed := make(chan struct{})
		result := make(chan error, 1)
		addr := httpFront(t, func(w http.ResponseWriter, r *http.Request) {
			<-proceed
			_, err := srv.Upgrade(w, r, nil)
			result <- err
		})
		base := openFDs(t)
		c, err := dialRaw(addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.conn.Write([]byte(upgradeRequest(addr, "/"))); err != nil {
			t.Fatal(err)
		}
		c.conn.Close()
		close(proceed)
		if err := <-result; err == nil {
			// The 101 went into the socket's buffer before the reset was
			// seen: the connection opened, and it must close again.
			ev := h.waitClose(t)
			if ev.err == nil {
				t.Error("OnClose without a cause")
			}
		}
		waitFor(t, "descriptors to be released", func() bool { return openFDs(t) <= base })
	})
	t.Run("after Shutdown", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if _, err := srv.Upgrade(rec, r, nil); !errors.Is(err, engine.ErrNotServing) || rec.Code != http.StatusServiceUnavailable {
			t.Errorf("err %v, status %d", err, rec.Code)
		}
	})
	h.check(t)
}

// asyncAuth decides on upgrades from a goroutine of the test's: each
// request's decide function is handed over on a channel.
type asyncAuth struct {
	*recorder
	pending chan asyncReq
}

type asyncReq struct {
	r      *handler.Request
	decide func(*handler.UpgradeResponse, error)
}

func (a *asyncAuth) OnUpgradeAsync(r *handler.Request, decide func(*handler.UpgradeResponse, error)) {
	a.pending <- asyncReq{r, decide}
}

// An AsyncUpgrader decides later, on another goroutine: accepted requests
// open with what it chose (and a frame pipelined behind the request is
// served), rejected ones get its status, undecided ones get 503 at the
// handshake timeout, and a late decision does nothing.
func TestAsyncUpgrader(t *testing.T) {
	t.Parallel()
	h := &asyncAuth{recorder: newRecorder(), pending: make(chan asyncReq, 256)}
	contexts := make(chan any, 4)
	h.open = func(c handler.Conn) { contexts <- c.Context() }
	srv, clk, _ := startClocked(t, h, engine.Options{HandshakeTimeout: 8 * time.Second})
	addr := srv.Addr().String()
	// pending sends req and returns the connection and the decision
	// OnUpgradeAsync is waiting for.
	pending := func(t *testing.T, req []byte) (*wsClient, asyncReq) {
		t.Helper()
		c, err := dialRaw(addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.conn.Close() })
		if _, err := c.conn.Write(req); err != nil {
			t.Fatal(err)
		}
		return c, waitN(t, h.pending, 1, readTimeout)[0]
	}

	t.Run("accepted later", func(t *testing.T) {
		req := []byte(upgradeRequest(addr, "/room?id=7", "Authorization: Bearer good"))
		req = codec.AppendMaskedFrame(req, true, codec.OpText, 0, randomMask(), []byte("early"))
		c, p := pending(t, req)
		if p.r.Path != "/room" || p.r.Header.Get("Authorization") != "Bearer good" {
			t.Errorf("request %+v", p.r)
		}
		go p.decide(&handler.UpgradeResponse{Context: "user-1", Header: http.Header{"X-User": {"1"}}}, nil)
		if err := c.readResponse(); err != nil || c.resp.StatusCode != http.StatusSwitchingProtocols || c.resp.Header.Get("X-User") != "1" {
			t.Fatalf("%v %v", c.resp, err)
		}
		if ctx := <-contexts; ctx != "user-1" {
			t.Errorf("Context %v", ctx)
		}
		c.expect(t, codec.OpText, "early")
		c.roundTrip(t, "after")
	})
	t.Run("rejected later", func(t *testing.T) {
		c, p := pending(t, []byte(upgradeRequest(addr, "/")))
		go p.decide(nil, handler.Reject(http.StatusUnauthorized, "token unknown"))
		if err := c.readResponse(); err != nil || c.resp.StatusCode != http.StatusUnauthorized || !strings.Contains(c.body, "token unknown") {
			t.Fatalf("%v %q %v", c.resp, c.body, err)
		}
	})
	t.Run("undecided", func(t *testing.T) {
		c, p := pending(t, []byte(upgradeRequest(addr, "/")))
		clk.Advance(10 * time.Second)
		if err := c.readResponse(); err != nil || c.resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(c.body, "not decided") {
			t.Fatalf("%v %q %v", c.resp, c.body, err)
		}
		p.decide(nil, nil) // too late: ignored
		p.decide(nil, nil) // and only once anyway
	})
	t.Run("waiting costs no goroutine", func(t *testing.T) {
		before := runtime.NumGoroutine()
		var conns []net.Conn
		for i := 0; i < 200; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			if _, err := c.Write([]byte(upgradeRequest(addr, "/"))); err != nil {
				t.Fatal(err)
			}
		}
		pend := waitN(t, h.pending, 200, readTimeout)
		if grew := runtime.NumGoroutine() - before; grew > 10 {
			t.Errorf("goroutines grew by %d with 200 pending decisions", grew)
		}
		for i, p := range pend {
			p.decide(nil, handler.Reject(http.StatusForbidden, "no"))
			conns[i].Close()
		}
	})
	if st := srv.Stats(); st.Rejected["401 application"] != 1 || st.Rejected["503 handshake timeout"] != 1 {
		t.Errorf("Rejected %v", st.Rejected)
	}
	h.check(t)
}
