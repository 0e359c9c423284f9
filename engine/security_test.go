package engine_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
)

// Issue 25: no forged bytes out, no ambiguous bytes in, on every road.

// hostileHeader is what an application that copies request data into a
// header might hand the engine: each field tries to write a line of its
// own, or to contradict the framing.
func hostileHeader() http.Header {
	return http.Header{
		"X-Evil":            {"a\r\nSet-Cookie: pwn=1"},
		"X-Nul":             {"c\x00d"},
		"Bad Name":          {"x"},
		"Set-Cookie\r\nX-Y": {"z"},
		"Content-Length":    {"999"},
		"Transfer-Encoding": {"chunked"},
		"X-Ok":              {"fine"},
	}
}

// rawAnswer sends req on conn and returns the bytes of the answer: the
// header of a 101, or a whole refusal up to the server's close.
func rawAnswer(t *testing.T, conn net.Conn, req string) []byte {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(readTimeout))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	var out []byte
	buf := make([]byte, 4096)
	for {
		if i := bytes.Index(out, []byte("\r\n\r\n")); i >= 0 && bytes.HasPrefix(out, []byte("HTTP/1.1 101 ")) {
			return out[:i+4]
		}
		n, err := conn.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			if err == io.EOF || len(out) > 0 && strings.Contains(err.Error(), "reset") {
				return out
			}
			t.Fatalf("reading the answer: %v (have %q)", err, out)
		}
	}
}

// checkWire asserts that an answer written with hostileHeader carries no
// forged line: every header line is one CRLF-terminated line, no
// Set-Cookie, NUL or invalid name reached the wire, the values were
// cleaned as documented, and the framing is the engine's alone.
func checkWire(t *testing.T, raw []byte, status int) *http.Response {
	t.Helper()
	end := bytes.Index(raw, []byte("\r\n\r\n"))
	if end < 0 {
		t.Fatalf("no header end in %q", raw)
	}
	for _, line := range bytes.Split(raw[:end], []byte("\r\n")) {
		if bytes.ContainsAny(line, "\r\n\x00") || bytes.HasPrefix(bytes.ToLower(line), []byte("set-cookie")) ||
			bytes.HasPrefix(line, []byte("Bad Name")) || bytes.HasPrefix(line, []byte("X-Y")) {
			t.Fatalf("forged line %q in\n%q", line, raw)
		}
	}
	if bytes.Contains(raw[:end], []byte("chunked")) || bytes.Contains(raw[:end], []byte(": 999")) {
		t.Fatalf("the application's framing reached the wire:\n%q", raw)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		t.Fatalf("%v\n%q", err, raw)
	}
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d\n%q", resp.StatusCode, status, raw)
	}
	if got := resp.Header.Get("X-Evil"); got != "a  Set-Cookie: pwn=1" {
		t.Fatalf("X-Evil %q, want CR and LF replaced by spaces\n%q", got, raw)
	}
	if resp.Header.Get("X-Nul") != "c d" || resp.Header.Get("X-Ok") != "fine" {
		t.Fatalf("X-Nul %q X-Ok %q", resp.Header.Get("X-Nul"), resp.Header.Get("X-Ok"))
	}
	return resp
}

// logBuffer collects log lines for a test to read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// hostileApp sets hostile headers, statuses and subprotocols on every
// road an application has to the wire.
type hostileApp struct{ *recorder }

func (hostileApp) OnUpgrade(r *handler.Request, res *handler.UpgradeResponse) error {
	switch r.Path {
	case "/hdr":
		res.Header = hostileHeader()
	case "/reject":
		return &handler.HTTPError{Status: http.StatusUnauthorized, Reason: "no\r\nSet-Cookie: r=1", Header: hostileHeader()}
	case "/status101":
		return &handler.HTTPError{Status: http.StatusSwitchingProtocols, Reason: "pretend"}
	case "/sub":
		res.Subprotocol = "chat\r\nSet-Cookie: s=1"
	}
	return nil
}

func hostileFallback(r *handler.Request) *engine.FallbackResponse {
	if r.Path == "/fb101" {
		return &engine.FallbackResponse{Status: http.StatusSwitchingProtocols, Body: []byte("not a switch")}
	}
	return &engine.FallbackResponse{Status: http.StatusOK, Header: hostileHeader(), Body: []byte("page")}
}

// TestResponseHeadersNoForgery: on wsloop's own listener, ws:// and wss://,
// neither a Fallback page, nor the 101, nor a Reject can write a header
// line the application did not mean, or a status that says the connection
// switched protocols; each change is logged, rate-limited.
func TestResponseHeadersNoForgery(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	clk := enginetest.NewClock() // the log's rate limit reads it: nothing else here needs time to pass
	opts := engine.Options{Fallback: hostileFallback, Logger: slog.New(slog.NewTextHandler(logs, nil)), Clock: clk}
	plain, _ := startServer(t, hostileApp{newRecorder()}, opts)
	opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCert(t)}}
	secure, _ := startServer(t, hostileApp{newRecorder()}, opts)

	roads := map[string]func(t *testing.T) (net.Conn, string){
		"ws": func(t *testing.T) (net.Conn, string) {
			c, err := net.DialTimeout("tcp", plain.Addr().String(), readTimeout)
			if err != nil {
				t.Fatal(err)
			}
			return c, plain.Addr().String()
		},
		"wss": func(t *testing.T) (net.Conn, string) {
			c, err := tls.Dial("tcp", secure.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			return c, secure.Addr().String()
		},
	}
	for name, dial := range roads {
		t.Run(name, func(t *testing.T) {
			answer := func(t *testing.T, req func(addr string) string) []byte {
				c, addr := dial(t)
				defer c.Close()
				return rawAnswer(t, c, req(addr))
			}
			t.Run("Fallback", func(t *testing.T) {
				raw := answer(t, func(a string) string { return "GET /page HTTP/1.1\r\nHost: " + a + "\r\n\r\n" })
				resp := checkWire(t, raw, http.StatusOK)
				if body, _ := io.ReadAll(resp.Body); string(body) != "page" || resp.ContentLength != 4 {
					t.Fatalf("body %q, Content-Length %d", body, resp.ContentLength)
				}
			})
			t.Run("Fallback 101", func(t *testing.T) {
				raw := answer(t, func(a string) string { return "GET /fb101 HTTP/1.1\r\nHost: " + a + "\r\n\r\n" })
				if !bytes.HasPrefix(raw, []byte("HTTP/1.1 500 ")) {
					t.Fatalf("%q", raw)
				}
			})
			t.Run("101", func(t *testing.T) {
				raw := answer(t, func(a string) string { return upgradeRequest(a, "/hdr") })
				resp := checkWire(t, raw, http.StatusSwitchingProtocols)
				if resp.Header.Get("Sec-Websocket-Accept") != testAccept || len(resp.Header.Values("Upgrade")) != 1 {
					t.Fatalf("101 header %v", resp.Header)
				}
			})
			t.Run("Reject", func(t *testing.T) {
				raw := answer(t, func(a string) string { return upgradeRequest(a, "/reject") })
				resp := checkWire(t, raw, http.StatusUnauthorized)
				if body, _ := io.ReadAll(resp.Body); string(body) != "no  Set-Cookie: r=1\n" {
					t.Fatalf("body %q", body)
				}
			})
			t.Run("Reject 101", func(t *testing.T) {
				raw := answer(t, func(a string) string { return upgradeRequest(a, "/status101") })
				if !bytes.HasPrefix(raw, []byte("HTTP/1.1 500 ")) {
					t.Fatalf("%q", raw)
				}
			})
			t.Run("subprotocol", func(t *testing.T) {
				raw := answer(t, func(a string) string { return upgradeRequest(a, "/sub") })
				if !bytes.HasPrefix(raw, []byte("HTTP/1.1 500 ")) || bytes.Contains(raw, []byte("Set-Cookie")) {
					t.Fatalf("%q", raw)
				}
			})
		})
	}
	for _, srv := range []*engine.Server{plain, secure} {
		if st := srv.Stats(); st.Rejected["401 application"] != 1 || st.Rejected["500 application"] != 2 || st.Upgraded != 1 {
			t.Errorf("Stats %v, upgraded %d", st.Rejected, st.Upgraded)
		}
	}
	// Logged, and rate-limited: each server met six changes and logged
	// the first; a second later the next line counts the five others.
	changed := func() int { return strings.Count(logs.String(), "changed_since_last_log=") }
	if n := changed(); n != 2 {
		t.Fatalf("%d lines about changes, want one per server:\n%s", n, logs.String())
	}
	clk.Advance(2 * time.Second)
	c, err := net.DialTimeout("tcp", plain.Addr().String(), readTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkWire(t, rawAnswer(t, c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), http.StatusOK)
	if out := logs.String(); changed() != 3 || !strings.Contains(out, "changed_since_last_log=5") ||
		!strings.Contains(out, `response header changed before sending" from=Options.Fallback`) {
		t.Fatalf("log:\n%s", out)
	}
}

// A decision taken later by an AsyncUpgrader goes through the same rule.
func TestAsyncUpgradeHeaderNoForgery(t *testing.T) {
	t.Parallel()
	h := &asyncAuth{recorder: newRecorder(), pending: make(chan asyncReq, 4)}
	srv, _ := startServer(t, h, engine.Options{})
	c, err := net.DialTimeout("tcp", srv.Addr().String(), readTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		p := waitN(t, h.pending, 1, readTimeout)[0]
		p.decide(&handler.UpgradeResponse{Header: hostileHeader()}, nil)
	}()
	checkWire(t, rawAnswer(t, c, upgradeRequest(srv.Addr().String(), "/")), http.StatusSwitchingProtocols)
}

// TestUpgradeFromHTTPNoForgery: on the net/http road, the 101 that wsloop
// writes on the hijacked connection follows the same rule as net/http's
// own Header.Write, and an invalid subprotocol is refused through
// net/http with 500 and an error.
func TestUpgradeFromHTTPNoForgery(t *testing.T) {
	t.Parallel()
	srv := startLoops(t, newRecorder(), engine.Options{})
	errs := make(chan error, 2)
	addr := httpFront(t, func(w http.ResponseWriter, r *http.Request) {
		opts := &engine.UpgradeOptions{Header: hostileHeader()}
		if r.URL.Path == "/sub" {
			opts = &engine.UpgradeOptions{Subprotocol: "a\r\nSet-Cookie: s=1"}
		}
		_, err := srv.Upgrade(w, r, opts)
		errs <- err
	})
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", addr, readTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	checkWire(t, rawAnswer(t, dial(), upgradeRequest(addr, "/")), http.StatusSwitchingProtocols)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	c := newClient(dial())
	if err := c.request(upgradeRequest(addr, "/sub")); err != nil {
		t.Fatal(err)
	}
	if c.resp.StatusCode != http.StatusInternalServerError || c.resp.Header.Get("Set-Cookie") != "" {
		t.Fatalf("%v %q", c.resp, c.body)
	}
	if err := <-errs; err == nil || !strings.Contains(err.Error(), "Subprotocol") {
		t.Fatalf("Upgrade error %v", err)
	}
}

// strictCase is a request the table says a server must refuse.
type strictCase struct {
	name   string
	req    func(addr string) string
	reason string // in the body
	label  string // in Stats.Rejected, under 400
	// joined: net/http replaces obs-fold with a space, as RFC 9112 §5.2
	// allows a server to, so on the net/http road the request is valid.
	joined bool
}

func strictCases() []strictCase {
	up := upgradeRequest
	return []strictCase{
		{"space before colon", func(a string) string {
			return strings.Replace(up(a, "/"), "Upgrade: websocket", "Upgrade : websocket", 1)
		}, "RFC 9112 §5.1", "malformed request", false},
		{"two Host lines", func(a string) string { return up(a, "/", "Host: "+a) }, "more than one Host", "duplicate header", false},
		{"key twice", func(a string) string { return up(a, "/", "Sec-WebSocket-Key: "+testKey) }, "Sec-WebSocket-Key", "duplicate header", false},
		{"version twice", func(a string) string { return up(a, "/", "Sec-WebSocket-Version: 13") }, "Sec-WebSocket-Version", "duplicate header", false},
		{"NUL in a value", func(a string) string { return up(a, "/", "X-A: a\x00b") }, "control character", "malformed request", false},
		{"Content-Length and a body", func(a string) string { return up(a, "/", "Content-Length: 4") + "\x81\x80abcd" }, "no body", "request body", false},
		{"chunked", func(a string) string { return up(a, "/", "Transfer-Encoding: chunked") + "0\r\n\r\n" }, "no body", "request body", false},
		{"obs-fold", func(a string) string { return up(a, "/", "X-A: 1", " folded") }, "obs-fold", "malformed request", true},
		{"control character in a name", func(a string) string { return up(a, "/", "X\x01A: 1") }, "malformed header line", "malformed request", false},
		{"extra space in the request line", func(a string) string { return strings.Replace(up(a, "/"), "GET /", "GET  /", 1) }, "malformed request line", "malformed request", false},
		{"fragment", func(a string) string { return up(a, "/#x") }, "request-target", "malformed request", false},
		{"Origin twice", func(a string) string { return up(a, "/", "Origin: http://"+a, "Origin: http://evil.example") }, "more than one Origin", "duplicate header", false},
	}
}

// TestHandshakeStrict: on wsloop's own listener, each request of issue 25's
// table gets 400 with a reason naming the rule, a counter under a fixed
// label, and the connection closed; a request that used to be answered
// 101.
func TestHandshakeStrict(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{})
	addr := srv.Addr().String()
	want := map[string]int64{}
	for _, tc := range strictCases() {
		t.Run(tc.name, func(t *testing.T) {
			expectRejected(t, addr, rejectCase{name: tc.name, req: tc.req, status: http.StatusBadRequest, reason: tc.reason})
		})
		want["400 "+tc.label]++
	}
	st := srv.Stats()
	for k, n := range want {
		if st.Rejected[k] != n {
			t.Errorf("Rejected[%q] = %d, want %d (all: %v)", k, st.Rejected[k], n, st.Rejected)
		}
	}
	if st.Upgraded != 0 {
		t.Errorf("%d upgraded", st.Upgraded)
	}
	h.check(t)
}

// TestHandshakeOriginTricks: the default origin check against the tricks
// of issue 25. A foreign Origin with two Hosts is now refused before the
// check (400, two Hosts); with an absolute-form target, the check compares
// the Origin with the target's host (RFC 9112 §3.2.2), so neither a
// foreign Origin nor a target naming another host gets through, and a
// proxy-style request for this server with its own Origin does.
func TestHandshakeOriginTricks(t *testing.T) {
	t.Parallel()
	srv, _ := startServer(t, newRecorder(), engine.Options{})
	addr := srv.Addr().String()
	for _, tc := range []rejectCase{
		{name: "two Hosts, foreign Origin", status: http.StatusBadRequest, reason: "more than one Host",
			req: func(a string) string {
				return upgradeRequest("evil.example", "/", "Host: "+a, "Origin: http://evil.example")
			}},
		{name: "two Hosts, foreign first", status: http.StatusBadRequest, reason: "more than one Host",
			req: func(a string) string {
				return upgradeRequest(a, "/", "Host: evil.example", "Origin: http://evil.example")
			}},
		{name: "absolute form, foreign Origin", status: http.StatusForbidden, reason: "origin not allowed",
			req: func(a string) string { return upgradeRequest(a, "http://"+a+"/", "Origin: http://evil.example") }},
		{name: "absolute form naming another host", status: http.StatusForbidden, reason: "origin not allowed",
			req: func(a string) string { return upgradeRequest(a, "http://evil.example/", "Origin: http://"+a) }},
	} {
		t.Run(tc.name, func(t *testing.T) { expectRejected(t, addr, tc) })
	}
	c := dialWS(t, addr, "http://"+addr+"/chat", "Origin: http://"+addr)
	c.roundTrip(t, "absolute form, same origin")
}

// TestUpgradeFromHTTPStrict: on the net/http road each request of the
// table is refused with 400 too, by net/http itself (malformed HTTP never
// reaches a handler) or by Server.Upgrade with the native listener's
// reason: duplicate WebSocket fields and a body behind the upgrade, which
// net/http lets through, included. The one difference: net/http joins an
// obs-fold line with a space (RFC 9112 §5.2 lets a server do either), so
// the codec checks the joined value and the upgrade goes through.
func TestUpgradeFromHTTPStrict(t *testing.T) {
	t.Parallel()
	srv := startLoops(t, newRecorder(), engine.Options{})
	addr := httpFront(t, func(w http.ResponseWriter, r *http.Request) {
		c, err := srv.Upgrade(w, r, nil)
		if err == nil && r.Header.Get("X-A") != "1 folded" {
			t.Errorf("%s %s: upgraded", r.Method, r.URL)
		}
		if c != nil {
			_ = c.Close(1000, "")
		}
	})
	byUpgrade := 0
	for _, tc := range strictCases() {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialRaw(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.conn.Close()
			if err := c.request(tc.req(addr)); err != nil {
				t.Fatal(err)
			}
			want := http.StatusBadRequest
			if tc.joined {
				want = http.StatusSwitchingProtocols
			}
			if c.resp.StatusCode != want {
				t.Fatalf("status %d, want %d (%q)", c.resp.StatusCode, want, c.body)
			}
			if strings.Contains(c.body, tc.reason) {
				byUpgrade++
			}
		})
	}
	// The ones net/http leaves to the handler: two keys, two versions,
	// two Origins, a body (Content-Length, chunked), a fragment.
	if st := srv.Stats(); byUpgrade != 6 || st.Rejected["400 duplicate header"] != 3 || st.Rejected["400 request body"] != 2 {
		t.Errorf("%d refused by Upgrade; Rejected %v", byUpgrade, st.Rejected)
	}
}
