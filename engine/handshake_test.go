package engine_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// rejectCase is a request the server must refuse with status, a body
// containing reason, and the given response headers.
type rejectCase struct {
	name    string
	req     func(addr string) string
	status  int
	reason  string
	headers map[string]string
}

func TestHandshakeRejections(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{MaxHeaderBytes: 1024})
	addr := srv.Addr().String()

	cases := []rejectCase{
		{
			name:    "plain GET",
			req:     func(a string) string { return "GET / HTTP/1.1\r\nHost: " + a + "\r\n\r\n" },
			status:  http.StatusUpgradeRequired,
			reason:  "speaks WebSocket",
			headers: map[string]string{"Upgrade": "websocket"},
		},
		{
			name:   "cross-origin",
			req:    func(a string) string { return upgradeRequest(a, "/", "Origin: http://evil.example") },
			status: http.StatusForbidden,
			reason: "origin not allowed",
		},
		{
			name: "header over MaxHeaderBytes",
			req: func(a string) string {
				return upgradeRequest(a, "/", "X-Pad: "+strings.Repeat("a", 2000))
			},
			status: http.StatusRequestHeaderFieldsTooLarge,
			reason: "too large",
		},
		{
			name: "bad key",
			req: func(a string) string {
				return strings.Replace(upgradeRequest(a, "/"), testKey, "c2hvcnQ=", 1)
			},
			status: http.StatusBadRequest,
			reason: "Sec-WebSocket-Key",
		},
		{
			name: "version 8",
			req: func(a string) string {
				return strings.Replace(upgradeRequest(a, "/"), "Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8", 1)
			},
			status:  http.StatusUpgradeRequired,
			reason:  "version 13",
			headers: map[string]string{"Sec-WebSocket-Version": "13"},
		},
		{
			name: "POST upgrade",
			req: func(a string) string {
				return strings.Replace(upgradeRequest(a, "/"), "GET", "POST", 1)
			},
			status:  http.StatusMethodNotAllowed,
			reason:  "GET",
			headers: map[string]string{"Allow": "GET"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectRejected(t, addr, tc)
		})
	}

	// A same-origin request and one without Origin pass the default check.
	c := dialWS(t, addr, "/", "Origin: http://"+addr)
	c.roundTrip(t, "same origin")
	c = dialWS(t, addr, "/")
	c.roundTrip(t, "no origin")

	st := srv.Stats()
	for key, want := range map[string]int64{
		"403 origin":            1,
		"431 header too large":  1,
		"405 method":            1,
		"400 bad request":       1,
		"426 websocket version": 1,
		"426 not websocket":     1,
	} {
		if st.Rejected[key] != want {
			t.Errorf("Stats().Rejected[%q] = %d, want %d (all: %v)", key, st.Rejected[key], want, st.Rejected)
		}
	}
	var total int64
	for _, n := range st.Rejected {
		total += n
	}
	if total != int64(len(cases)) {
		t.Errorf("Stats().Rejected counts %d rejections, want %d: %v", total, len(cases), st.Rejected)
	}
	if st.Upgraded != 2 {
		t.Errorf("Stats().Upgraded = %d, want 2", st.Upgraded)
	}
	h.check(t)
}

func expectRejected(t *testing.T, addr string, tc rejectCase) {
	t.Helper()
	c, err := dialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	if err := c.request(tc.req(addr)); err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	if c.resp.StatusCode != tc.status {
		t.Fatalf("status %s, want %d (body %q)", c.resp.Status, tc.status, c.body)
	}
	if !strings.Contains(c.body, tc.reason) {
		t.Errorf("body %q does not give the reason %q", c.body, tc.reason)
	}
	for k, v := range tc.headers {
		if got := c.resp.Header.Get(k); got != v {
			t.Errorf("header %s: %q, want %q", k, got, v)
		}
	}
	// The server closes the connection after the response.
	c.expectEOF(t, readTimeout)
}

func TestHandshakeFallback(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	gotPath := make(chan string, 4)
	srv, _ := startServer(t, h, engine.Options{
		Fallback: func(r *handler.Request) *engine.FallbackResponse {
			if r.Path != "/health" {
				return nil
			}
			gotPath <- r.Path + "?" + r.RawQuery
			return &engine.FallbackResponse{Status: http.StatusOK, Header: http.Header{"Content-Type": {"text/html"}}, Body: []byte("<h1>ok</h1>")}
		},
	})
	addr := srv.Addr().String()

	c, err := dialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	if err := c.request("GET /health?x=1 HTTP/1.1\r\nHost: " + addr + "\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if c.resp.StatusCode != 200 || c.body != "<h1>ok</h1>" || c.resp.Header.Get("Content-Type") != "text/html" {
		t.Fatalf("fallback answered %s %v %q", c.resp.Status, c.resp.Header, c.body)
	}
	if p := <-gotPath; p != "/health?x=1" {
		t.Errorf("Fallback saw %q", p)
	}
	c.expectEOF(t, readTimeout)

	// A fallback returning nil leaves the default 426.
	expectRejected(t, addr, rejectCase{
		req:    func(a string) string { return "GET /other HTTP/1.1\r\nHost: " + a + "\r\n\r\n" },
		status: http.StatusUpgradeRequired, reason: "WebSocket",
	})
	// Upgrades still work on the same server.
	dialWS(t, addr, "/health").roundTrip(t, "hi")
}

func TestHandshakeCheckOrigin(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{
		CheckOrigin: func(r *handler.Request) bool { return r.Origin == "https://app.example" },
	})
	addr := srv.Addr().String()
	dialWS(t, addr, "/", "Origin: https://app.example").roundTrip(t, "allowed")
	expectRejected(t, addr, rejectCase{
		req:    func(a string) string { return upgradeRequest(a, "/", "Origin: http://"+a) },
		status: http.StatusForbidden, reason: "origin not allowed",
	})
}

// upgradeHook is a recorder that also implements handler.Upgrader.
type upgradeHook struct {
	*recorder
	hook func(r *handler.Request, res *handler.UpgradeResponse) error
}

func (u upgradeHook) OnUpgrade(r *handler.Request, res *handler.UpgradeResponse) error {
	return u.hook(r, res)
}

func TestHandshakeUpgrader(t *testing.T) {
	t.Parallel()
	type seen struct {
		path, query, protocol, ctx string
	}
	opened := make(chan seen, 16)
	rec := newRecorder()
	rec.open = func(c handler.Conn) {
		ctx, _ := c.Context().(string)
		opened <- seen{c.Path(), c.RawQuery(), c.Subprotocol(), ctx}
	}
	h := upgradeHook{recorder: rec, hook: func(r *handler.Request, res *handler.UpgradeResponse) error {
		switch {
		case r.Header.Get("Authorization") == "":
			return &handler.HTTPError{Status: http.StatusUnauthorized, Reason: "token required", Header: http.Header{"Www-Authenticate": {"Bearer"}}}
		case r.Path == "/forbidden":
			return errors.New("plain error")
		case r.Path == "/override":
			res.Subprotocol = "chat.v1"
		}
		if r.Host == "" || r.RemoteAddr == nil {
			return handler.Reject(http.StatusInternalServerError, "request fields missing")
		}
		res.Context = "user:" + r.Header.Get("Authorization")
		res.Header = http.Header{"X-Wsloop-Test": {"yes"}}
		return nil
	}}
	srv, _ := startServer(t, h, engine.Options{Subprotocols: []string{"chat.v2", "chat.v1"}})
	addr := srv.Addr().String()

	t.Run("reject 401", func(t *testing.T) {
		expectRejected(t, addr, rejectCase{
			req:     func(a string) string { return upgradeRequest(a, "/") },
			status:  http.StatusUnauthorized,
			reason:  "token required",
			headers: map[string]string{"Www-Authenticate": "Bearer"},
		})
	})
	t.Run("plain error is 403", func(t *testing.T) {
		expectRejected(t, addr, rejectCase{
			req:    func(a string) string { return upgradeRequest(a, "/forbidden", "Authorization: x") },
			status: http.StatusForbidden, reason: "plain error",
		})
	})
	t.Run("accept with context, header, path, query, subprotocol", func(t *testing.T) {
		c := dialWS(t, addr, "/room/7?name=ann&x=1", "Authorization: tok", "Sec-WebSocket-Protocol: other, chat.v1, chat.v2")
		// The client's order of preference wins among the server's protocols.
		if got := c.resp.Header.Get("Sec-WebSocket-Protocol"); got != "chat.v1" {
			t.Errorf("Sec-WebSocket-Protocol %q, want chat.v1", got)
		}
		if got := c.resp.Header.Get("X-Wsloop-Test"); got != "yes" {
			t.Errorf("extra response header X-Wsloop-Test = %q", got)
		}
		select {
		case s := <-opened:
			want := seen{"/room/7", "name=ann&x=1", "chat.v1", "user:tok"}
			if s != want {
				t.Errorf("OnOpen saw %+v, want %+v", s, want)
			}
		case <-time.After(readTimeout):
			t.Fatal("no OnOpen")
		}
		c.roundTrip(t, "hello")
	})
	t.Run("hook overrides subprotocol", func(t *testing.T) {
		c := dialWS(t, addr, "/override", "Authorization: tok", "Sec-WebSocket-Protocol: chat.v2, chat.v1")
		if got := c.resp.Header.Get("Sec-WebSocket-Protocol"); got != "chat.v1" {
			t.Errorf("Sec-WebSocket-Protocol %q, want the hook's chat.v1", got)
		}
		s := <-opened
		if s.protocol != "chat.v1" {
			t.Errorf("c.Subprotocol() = %q", s.protocol)
		}
	})
	t.Run("no common subprotocol", func(t *testing.T) {
		c := dialWS(t, addr, "/", "Authorization: tok", "Sec-WebSocket-Protocol: mqtt")
		if got, ok := c.resp.Header["Sec-Websocket-Protocol"]; ok {
			t.Errorf("Sec-WebSocket-Protocol %q sent although no protocol matched", got)
		}
		if s := <-opened; s.protocol != "" {
			t.Errorf("c.Subprotocol() = %q, want empty", s.protocol)
		}
	})

	st := srv.Stats()
	// An application's reasons are its own text: they are counted under
	// one label, so the set of keys stays bounded.
	if st.Rejected["401 application"] != 1 {
		t.Errorf("Rejected = %v, want one \"401 application\"", st.Rejected)
	}
	rec.check(t)
}

// A frame pipelined in the same packet as the upgrade request is served.
func TestHandshakePipelinedFrame(t *testing.T) {
	t.Parallel()
	srv, _ := startServer(t, newRecorder(), engine.Options{})
	addr := srv.Addr().String()
	c, err := dialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	req := []byte(upgradeRequest(addr, "/"))
	req = codec.AppendMaskedFrame(req, true, codec.OpText, 0, randomMask(), []byte("pipelined"))
	if _, err := c.conn.Write(req); err != nil {
		t.Fatal(err)
	}
	if err := c.readResponse(); err != nil || c.resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", err, c.resp)
	}
	c.expect(t, codec.OpText, "pipelined")
}
