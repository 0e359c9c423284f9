package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
)

const testToken = "t0ken-of-alice"

// startApp runs an App on a loopback port until the test ends (or stop is
// called) and returns it with the channel Run's result arrives on.
func startApp(t *testing.T, cfg Config) (app *App, stop context.CancelFunc, r *result) {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Tokens == nil && cfg.AuthURL == "" {
		cfg.Tokens = map[string]string{testToken: "alice"}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	app, err := NewApp(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r = &result{done: make(chan struct{})}
	go func() { r.err = app.Run(ctx); close(r.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return 20 s after its context ended")
		}
	})
	return app, cancel, r
}

// result is what Run returned, once done is closed.
type result struct {
	done chan struct{}
	err  error
}

// dial opens a WebSocket to the app, bounded in time.
func dial(t *testing.T, app *App, path string, hdr http.Header) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(hdr)}
	c, br, _, err := d.Dial(ctx, "ws://"+app.Addr().String()+path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if br != nil {
		// Frames that came in the same read as the 101 (a greeting
		// written in OnOpen) wait in the dialer's reader.
		return &bufferedConn{Conn: c, r: io.MultiReader(br, c)}
	}
	return c
}

// bufferedConn reads what a dialer buffered before its connection.
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// get fetches path and checks its status.
func get(t *testing.T, app *App, path string, status int) string {
	t.Helper()
	resp, err := http.Get("http://" + app.Addr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("GET %s: %d %s, want %d", path, resp.StatusCode, b, status)
	}
	return string(b)
}

// refusedUpgrade sends a WebSocket upgrade request that the server is
// expected to refuse, and returns the response and its body.
func refusedUpgrade(t *testing.T, addr net.Addr, path string, hdr http.Header) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr.String()+path, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(key[:]))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("upgrade %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		t.Fatalf("upgrade %s: accepted, want a refusal", path)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, strings.TrimSpace(string(b))
}

func roundTrip(t *testing.T, c net.Conn, op ws.OpCode, msg []byte) ([]byte, ws.OpCode) {
	t.Helper()
	if err := wsutil.WriteClientMessage(c, op, msg); err != nil {
		t.Fatal(err)
	}
	got, gotOp, err := wsutil.ReadServerData(c)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return got, gotOp
}

// closedWith reads until the server's close frame and checks its code.
func closedWith(t *testing.T, c net.Conn, code ws.StatusCode) {
	t.Helper()
	_, _, err := wsutil.ReadServerData(c)
	var ce wsutil.ClosedError
	if !errors.As(err, &ce) || ce.Code != code {
		t.Fatalf("want close %d, got %v", code, err)
	}
}

func TestPages(t *testing.T) {
	app, _, _ := startApp(t, Config{})
	if body := get(t, app, "/", 200); !strings.Contains(body, "<title>wsloop echo</title>") || !strings.Contains(body, `"/echo"`) {
		t.Errorf("/ is not the echo page:\n%s", body)
	}
	if body := get(t, app, "/healthz", 200); strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz = %q", body)
	}
	get(t, app, "/nope", 404)
	get(t, app, "/index.html", 404)
	// A plain GET on a WebSocket endpoint: the engine answers 426 with a
	// reason, as its own listener would.
	if body := get(t, app, "/echo", http.StatusUpgradeRequired); !strings.Contains(body, "speaks WebSocket") {
		t.Errorf("GET /echo: %q", body)
	}
	if resp, body := refusedUpgrade(t, app.Addr(), "/nope", nil); resp.StatusCode != 404 {
		t.Errorf("upgrade on an unknown path: %d %s", resp.StatusCode, body)
	}
	// Cross-origin: same-origin is the default, as in gorilla.
	if resp, body := refusedUpgrade(t, app.Addr(), "/echo", http.Header{"Origin": {"http://evil.example"}}); resp.StatusCode != 403 || !strings.Contains(body, "origin") {
		t.Errorf("cross-origin upgrade: %d %s", resp.StatusCode, body)
	}
}

func TestEcho(t *testing.T) {
	app, _, _ := startApp(t, Config{})
	c := dial(t, app, "/echo", nil)
	if got, op := roundTrip(t, c, ws.OpText, []byte("Hello, wsloop")); op != ws.OpText || string(got) != "Hello, wsloop" {
		t.Fatalf("text echo: %v %q", op, got)
	}
	big := make([]byte, 16<<20) // the largest message /echo takes
	_, _ = rand.Read(big)
	if got, op := roundTrip(t, c, ws.OpBinary, big); op != ws.OpBinary || !bytes.Equal(got, big) {
		t.Fatalf("16 MiB binary echo: op %v, %d bytes back, equal %v", op, len(got), bytes.Equal(got, big))
	}
	// One byte more than the limit: 1009 Message Too Big, announced by
	// the frame header, before the payload is buffered.
	if err := wsutil.WriteClientBinary(c, make([]byte, 16<<20+1)); err != nil {
		t.Fatal(err)
	}
	closedWith(t, c, ws.StatusMessageTooBig)
}

func TestUpper(t *testing.T) {
	app, _, _ := startApp(t, Config{})
	c := dial(t, app, "/upper", nil)
	if got, _ := roundTrip(t, c, ws.OpText, []byte("Hello")); string(got) != "HELLO" {
		t.Fatalf("upper: %q", got)
	}
	// Its own limit, from UpgradeOptions: 64 KiB.
	if err := wsutil.WriteClientText(c, bytes.Repeat([]byte("a"), 64<<10+1)); err != nil {
		t.Fatal(err)
	}
	closedWith(t, c, ws.StatusMessageTooBig)

	c = dial(t, app, "/upper", nil)
	if err := wsutil.WriteClientBinary(c, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	closedWith(t, c, ws.StatusUnsupportedData)
}

func TestPrivate(t *testing.T) {
	app, _, _ := startApp(t, Config{})
	resp, body := refusedUpgrade(t, app.Addr(), "/private", nil)
	if resp.StatusCode != 401 || !strings.Contains(body, "missing bearer token") || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("no token: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = refusedUpgrade(t, app.Addr(), "/private", http.Header{"Authorization": {"Bearer wrong"}})
	if resp.StatusCode != 401 || body != "invalid token" {
		t.Errorf("wrong token: %d %q", resp.StatusCode, body)
	}

	c := dial(t, app, "/private", http.Header{"Authorization": {"Bearer " + testToken}})
	if got, err := wsutil.ReadServerText(c); err != nil || string(got) != "hello, alice" {
		t.Fatalf("greeting: %q %v", got, err)
	}
	if got, _ := roundTrip(t, c, ws.OpText, []byte("hi")); string(got) != "alice: hi" {
		t.Fatalf("private echo: %q", got)
	}
	// A browser's WebSocket cannot set headers: a cookie works too.
	c = dial(t, app, "/private", http.Header{"Cookie": {"token=" + testToken}})
	if got, err := wsutil.ReadServerText(c); err != nil || string(got) != "hello, alice" {
		t.Fatalf("greeting with a cookie: %q %v", got, err)
	}
}

func TestPrivateTokenServiceDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/check"
	ln.Close() // nothing listens there now: connection refused
	app, _, _ := startApp(t, Config{AuthURL: down})
	resp, body := refusedUpgrade(t, app.Addr(), "/private", http.Header{"Authorization": {"Bearer " + testToken}})
	if resp.StatusCode != 503 || !strings.Contains(body, "token service unavailable") {
		t.Errorf("token service down: %d %q", resp.StatusCode, body)
	}
}

// TestPipelined sends a frame in the same write as the upgrade request:
// net/http's reader holds it when Upgrade hijacks, and the engine decodes
// it first.
func TestPipelined(t *testing.T) {
	app, _, _ := startApp(t, Config{})
	c, err := net.DialTimeout("tcp", app.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	var b bytes.Buffer
	b.WriteString("GET /echo HTTP/1.1\r\nHost: " + app.Addr().String() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if err := wsutil.WriteClientText(&b, []byte("right behind the request")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("response: %v %v", resp, err)
	}
	got, err := wsutil.ReadServerText(struct {
		io.Reader
		io.Writer
	}{br, c})
	if err != nil || string(got) != "right behind the request" {
		t.Fatalf("echo of the pipelined frame: %q %v", got, err)
	}
}

func TestMetrics(t *testing.T) {
	app, _, _ := startApp(t, Config{})
	c := dial(t, app, "/echo", nil)
	roundTrip(t, c, ws.OpText, []byte("one"))
	get(t, app, "/echo", http.StatusUpgradeRequired)
	m := get(t, app, "/metrics", 200)
	for _, want := range []string{
		"wsloop_connections_open 1",
		"wsloop_upgrades_total 1",
		`wsloop_messages_total{direction="in"} 1`,
		`wsloop_rejected_total{reason="426 not websocket"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, m)
		}
	}
}

// TestHijackerRequired shows why loggedWriter implements Hijack: behind a
// wrapper that hides it, Upgrade cannot take the connection and says so.
func TestHijackerRequired(t *testing.T) {
	app, _, _ := startApp(t, Config{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = app.WS.Upgrade(struct{ http.ResponseWriter }{w}, r, nil)
	}))
	defer hs.Close()
	resp, body := refusedUpgrade(t, hs.Listener.Addr(), "/", nil)
	if resp.StatusCode != http.StatusHTTPVersionNotSupported || !strings.Contains(body, "hijack") {
		t.Errorf("wrapper without Hijack: %d %q", resp.StatusCode, body)
	}
}

// TestDrain: the end of the context drains WebSocket and HTTP together.
// While a client has not answered its 1001, the HTTP server still answers:
// /healthz says 503, new upgrades get 503; then everything stops.
func TestDrain(t *testing.T) {
	app, stop, res := startApp(t, Config{
		Engine:       engine.Options{CloseTimeout: time.Minute}, // the slow client below decides when the drain ends
		DrainTimeout: time.Minute,
	})
	polite := dial(t, app, "/echo", nil)
	slow := dial(t, app, "/upper", nil)
	roundTrip(t, polite, ws.OpText, []byte("before"))

	// slow's Upgrade may still be handing it to a loop: the drain must
	// reach it all the same.
	stop()
	closedWith(t, polite, ws.StatusGoingAway) // wsutil answers the close

	f, err := ws.ReadFrame(slow) // read the 1001, do not answer yet
	if err != nil || f.Header.OpCode != ws.OpClose {
		t.Fatalf("slow client: %v %v", f.Header, err)
	}
	if code, _ := ws.ParseCloseFrameData(f.Payload); code != ws.StatusGoingAway {
		t.Fatalf("slow client got close %d", code)
	}
	if body := get(t, app, "/healthz", 503); strings.TrimSpace(body) != "draining" {
		t.Errorf("/healthz while draining: %q", body)
	}
	if resp, body := refusedUpgrade(t, app.Addr(), "/echo", nil); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("upgrade while draining: %d %q", resp.StatusCode, body)
	}
	select {
	case <-res.done:
		t.Fatalf("Run returned (%v) before the last client answered", res.err)
	default:
	}

	reply := ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "")))
	if err := ws.WriteFrame(slow, reply); err != nil {
		t.Fatal(err)
	}
	select {
	case <-res.done:
		if res.err != nil {
			t.Fatalf("Run: %v", res.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the drain")
	}
	if c, err := net.DialTimeout("tcp", app.Addr().String(), 5*time.Second); err == nil {
		c.Close()
		t.Fatal("the HTTP server still accepts connections after Run returned")
	}
}

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestBehindBalancer runs the app as -proxy-protocol and -max-conns-per-ip
// set it up: a balancer on 127.0.0.5 sends PROXY headers; the request log,
// the limit and /metrics see its clients, not the balancer; a direct
// client (127.0.0.1) is served as itself.
func TestBehindBalancer(t *testing.T) {
	logs := &lockedBuffer{}
	app, _, _ := startApp(t, Config{
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Engine: engine.Options{ProxyProtocol: []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")}, MaxConnsPerClient: 1},
	})
	addr := app.Addr().String()
	viaBalancer := func(client string) (*http.Response, *bufio.Reader, net.Conn) {
		t.Helper()
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 5)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		ap := netip.MustParseAddrPort(client)
		hdr := codec.AppendProxyHeader(nil, &codec.ProxyHeader{Version: 2, Command: codec.ProxyRelay, Source: ap, Destination: netip.MustParseAddrPort("198.51.100.1:443")})
		req := "GET /echo HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
		if _, err := c.Write(append(hdr, req...)); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp, br, c
	}
	resp, br, c := viaBalancer("203.0.113.5:40000")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("first client: %s", resp.Status)
	}
	got, _ := roundTrip(t, &bufferedConn{Conn: c, r: br}, ws.OpText, []byte("hi"))
	if string(got) != "hi" {
		t.Fatalf("echo %q", got)
	}
	if resp, _, _ := viaBalancer("203.0.113.6:40000"); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("another client through the same balancer: %s", resp.Status)
	}
	if resp, _, _ := viaBalancer("203.0.113.5:40001"); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("the first client's second connection: %s %v, want 429 with Retry-After", resp.Status, resp.Header)
	}
	if !strings.Contains(logs.String(), "remote=203.0.113.5:40000") {
		t.Errorf("the request log does not name the client:\n%s", logs.String())
	}
	m := get(t, app, "/metrics", 200) // a direct client
	for _, want := range []string{
		"wsloop_proxy_headers_total 3",
		`wsloop_client_limited_total{limit="connections"} 1`,
		"wsloop_tracked_clients 2",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
