package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
)

// testServer echoes, and acts on a few commands: "close CODE" closes with
// that code, and "hdr NAME" answers with the request header NAME it saw.
type testServer struct {
	handler.Base
	mu   sync.Mutex
	hdrs http.Header
	sub  []string
}

func (s *testServer) OnUpgrade(r *handler.Request, res *handler.UpgradeResponse) error {
	s.mu.Lock()
	s.hdrs, s.sub = r.Header, r.Protocols
	s.mu.Unlock()
	if r.Path == "/refuse" {
		return handler.Reject(http.StatusForbidden, "no entry for wscat")
	}
	return nil
}

func (s *testServer) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	msg := string(data)
	switch {
	case strings.HasPrefix(msg, "close "):
		code := uint16(0)
		for _, d := range msg[6:] {
			code = code*10 + uint16(d-'0')
		}
		c.Close(code, "as asked")
	case strings.HasPrefix(msg, "hdr "):
		s.mu.Lock()
		v := s.hdrs.Get(msg[4:])
		s.mu.Unlock()
		c.WriteMessage(handler.Text, []byte(v))
	case msg == "sub":
		c.WriteMessage(handler.Text, []byte(c.Subprotocol()))
	default:
		c.WriteMessage(op, data)
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func start(t *testing.T, opts engine.Options) string {
	t.Helper()
	opts.Logger = quiet
	opts.Subprotocols = []string{"chat"}
	return enginetest.Start(t, &testServer{}, opts).Addr().String()
}

// wscat runs the command in-process with stdin and returns its exit
// status, standard output and standard error.
func wscat(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code := run(ctx, args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestLines(t *testing.T) {
	addr := start(t, engine.Options{})
	code, out, errs := wscat(t, "hello\nwörld\n\nlast without newline", "ws://"+addr+"/")
	if code != 0 || out != "hello\nwörld\n\nlast without newline\n" || errs != "" {
		t.Fatalf("exit %d\nstdout %q\nstderr %q", code, out, errs)
	}
}

func TestBinary(t *testing.T) {
	addr := start(t, engine.Options{})
	in := "\x00\x01\xff\xfe\nsecond\n"
	code, out, errs := wscat(t, in, "-binary", "ws://"+addr+"/")
	if code != 0 || out != in || errs != "" {
		t.Fatalf("exit %d\nstdout %q\nstderr %q", code, out, errs)
	}
	// Without -binary, bytes that are not UTF-8 are refused, not sent
	// as broken text.
	code, _, errs = wscat(t, "\xff\n", "ws://"+addr+"/")
	if code != 1 || !strings.Contains(errs, "not valid UTF-8") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
}

func TestFlags(t *testing.T) {
	addr := start(t, engine.Options{Deflate: engine.Deflate{Enabled: true}})
	code, out, errs := wscat(t, "hdr Authorization\nhdr Cookie\nsub\n"+strings.Repeat("z", 5000)+"\n",
		"-H", "Authorization: Bearer t0k", "-H", "Cookie: a=b", "-subprotocol", "x,chat", "-deflate", "ws://"+addr+"/")
	want := "Bearer t0k\na=b\nchat\n" + strings.Repeat("z", 5000) + "\n"
	if code != 0 || out != want || errs != "" {
		t.Fatalf("exit %d\nstdout %q\nstderr %q", code, out, errs)
	}
	if code, _, _ := wscat(t, "", "-H", "no colon", "ws://"+addr+"/"); code != 2 {
		t.Fatalf("bad -H: exit %d", code)
	}
	if code, _, _ := wscat(t, ""); code != 2 {
		t.Fatalf("no URL: exit %d", code)
	}
}

func TestOtherEnds(t *testing.T) {
	addr := start(t, engine.Options{})
	// The server closes with 1000 on its own: a normal end.
	if code, out, errs := wscat(t, "a\nclose 1000\n", "ws://"+addr+"/"); code != 0 || out != "a\n" {
		t.Fatalf("server close 1000: exit %d %q %q", code, out, errs)
	}
	// Any other code: exit 1, code and reason on stderr.
	code, _, errs := wscat(t, "close 4001\n", "ws://"+addr+"/")
	if code != 1 || !strings.Contains(errs, "4001") || !strings.Contains(errs, "as asked") {
		t.Fatalf("server close 4001: exit %d, stderr %q", code, errs)
	}
	// A refused handshake: the status and the server's reason.
	code, _, errs = wscat(t, "", "ws://"+addr+"/refuse")
	if code != 1 || !strings.Contains(errs, "403") || !strings.Contains(errs, "no entry for wscat") {
		t.Fatalf("refused: exit %d, stderr %q", code, errs)
	}
	// Nothing listening.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	gone := ln.Addr().String()
	ln.Close()
	code, _, errs = wscat(t, "", "ws://"+gone+"/")
	if code != 1 || !strings.Contains(errs, "connect") {
		t.Fatalf("refused connect: exit %d, stderr %q", code, errs)
	}
}

// A server that drops the connection without a close frame.
func TestDrop(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		h := sha1.Sum([]byte(req.Header.Get("Sec-Websocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
			base64.StdEncoding.EncodeToString(h[:])+"\r\n\r\n\x81\x02hi")
	}()
	pr, pw := io.Pipe() // stdin stays open: the drop ends the session
	defer pw.Close()
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"ws://" + ln.Addr().String() + "/"}, pr, &out, &errb)
	if code != 1 || out.String() != "hi\n" || !strings.Contains(errb.String(), "1006") {
		t.Fatalf("drop: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}

func TestWSS(t *testing.T) {
	addr := start(t, engine.Options{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert(t)}}})
	code, out, errs := wscat(t, "over tls\n", "-insecure", "wss://"+addr+"/")
	if code != 0 || out != "over tls\n" {
		t.Fatalf("-insecure: exit %d %q %q", code, out, errs)
	}
	code, _, errs = wscat(t, "x\n", "wss://"+addr+"/")
	if code != 1 || !strings.Contains(errs, "TLS handshake") {
		t.Fatalf("unverified: exit %d, stderr %q", code, errs)
	}
}

// The built binary behaves as run does: lines in, lines out, exit 0.
func TestBinaryBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command")
	}
	bin := filepath.Join(t.TempDir(), "wscat")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr := start(t, engine.Options{})
	cmd := exec.Command(bin, "ws://"+addr+"/")
	cmd.Stdin = strings.NewReader("one\ntwo\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || string(out) != "one\ntwo\n" {
		t.Fatalf("wscat: %v %q %q", err, out, stderr.String())
	}
	cmd = exec.Command(bin, "ws://"+addr+"/")
	cmd.Stdin = strings.NewReader("close 1011\n")
	cmd.Stderr = &stderr
	if err := cmd.Run(); cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("close 1011: %v, exit %d", err, cmd.ProcessState.ExitCode())
	}
	_ = os.Remove(bin)
}

func cert(t *testing.T) tls.Certificate {
	c, _ := enginetest.Certificate(t)
	return c
}

// -v says where wscat connected and what the handshake negotiated.
func TestVerbose(t *testing.T) {
	addr := start(t, engine.Options{Deflate: engine.Deflate{Enabled: true}})
	code, out, errs := wscat(t, "one\n", "-v", "-subprotocol", "chat", "-deflate", "ws://"+addr+"/")
	if code != 0 || out != "one\n" {
		t.Fatalf("exit %d\nstdout %q\nstderr %q", code, out, errs)
	}
	for _, want := range []string{"connected to ws://" + addr + "/ (" + addr + ")", "subprotocol: chat", "extensions: permessage-deflate"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr %q does not say %q", errs, want)
		}
	}
	_, _, errs = wscat(t, "", "-v", "ws://"+addr+"/")
	if !strings.Contains(errs, "subprotocol: (none)") || !strings.Contains(errs, "extensions: (none)") {
		t.Errorf("without offers: stderr %q", errs)
	}
}

// laterServer answers "later" only when the test releases it, then closes
// with 1000.
type laterServer struct {
	handler.Base
	release chan struct{}
}

func (s *laterServer) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	if string(data) != "later" {
		c.WriteMessage(op, data)
		return
	}
	go func() {
		<-s.release
		if c.WriteMessage(handler.Text, []byte("the reply")) == nil {
			c.Close(1000, "")
		}
	}()
}

// signalWriter collects what is written and closes seen once it holds want.
type signalWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// -wait D keeps reading after the end of input: an answer that comes
// after it is printed. Without it, wscat closes at once and never sees it.
func TestWait(t *testing.T) {
	h := &laterServer{release: make(chan struct{})}
	addr := enginetest.Start(t, h, engine.Options{Logger: quiet}).Addr().String()
	released := false
	t.Cleanup(func() {
		if !released {
			close(h.release)
		}
	})

	// Without -wait: the close goes out at the end of input.
	code, out, errs := wscat(t, "later\n", "ws://"+addr+"/")
	if code != 0 || out != "" {
		t.Fatalf("without -wait: exit %d\nstdout %q\nstderr %q", code, out, errs)
	}

	// With it: the reply is released only once wscat says it waits.
	stderr := &signalWriter{want: "end of input, reading for 1m0s", seen: make(chan struct{})}
	var stdout bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(context.Background(), []string{"-v", "-wait", "1m", "ws://" + addr + "/"}, strings.NewReader("later\n"), &stdout, stderr)
	}()
	select {
	case <-stderr.seen:
	case code := <-done:
		t.Fatalf("wscat ended (%d) without waiting: %q", code, stderr)
	case <-time.After(20 * time.Second):
		t.Fatalf("wscat never said it waits: %q", stderr)
	}
	close(h.release)
	released = true
	if code := <-done; code != 0 || stdout.String() != "the reply\n" {
		t.Fatalf("-wait: exit %d\nstdout %q\nstderr %q", code, stdout.String(), stderr)
	}

	// A short wait ends by itself, with a normal close.
	code, out, errs = wscat(t, "echo me\n", "-wait", "10ms", "ws://"+addr+"/")
	if code != 0 || out != "echo me\n" {
		t.Fatalf("-wait 10ms: exit %d\nstdout %q\nstderr %q", code, out, errs)
	}
}

// connectProxy is an HTTP CONNECT proxy that records the requests it gets
// and relays to hosts, whose names it maps to addresses.
type connectProxy struct {
	ln    net.Listener
	hosts map[string]string
	mu    sync.Mutex
	reqs  []string // "METHOD target Proxy-Authorization"
}

func startConnectProxy(t *testing.T, hosts map[string]string) *connectProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{ln: ln, hosts: hosts}
	var wg sync.WaitGroup
	var conns sync.Map
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, nil)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				p.mu.Lock()
				p.reqs = append(p.reqs, req.Method+" "+req.Host+" "+req.Header.Get("Proxy-Authorization"))
				p.mu.Unlock()
				host, port, _ := net.SplitHostPort(req.Host)
				if a, ok := p.hosts[host]; ok {
					host = a
				}
				up, err := net.Dial("tcp", net.JoinHostPort(host, port))
				if err != nil {
					io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
					return
				}
				conns.Store(up, nil)
				defer up.Close()
				io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				go func() { io.Copy(c, up); c.Close() }()
				io.Copy(up, br)
			}()
		}
	}()
	return p
}

// wscat dials through the proxy the environment names. The environment
// is read once per process, so the test runs wscat in a child process
// (this test binary again, running TestEnvProxyChild), with a host name
// that is not loopback (loopback is never proxied) and that the proxy maps
// to the test's server.
func TestEnvProxy(t *testing.T) {
	if os.Getenv("WSCAT_TEST_URL") != "" {
		t.Skip("the child runs TestEnvProxyChild")
	}
	addr := start(t, engine.Options{})
	_, port, _ := net.SplitHostPort(addr)
	p := startConnectProxy(t, map[string]string{"echo.example": "127.0.0.1"})
	cmd := exec.Command(os.Args[0], "-test.run=^TestEnvProxyChild$", "-test.v")
	cmd.Env = append(os.Environ(), "WSCAT_TEST_URL=ws://echo.example:"+port+"/",
		"HTTP_PROXY=http://who:pw@"+p.ln.Addr().String(), "http_proxy=", "NO_PROXY=", "no_proxy=", "REQUEST_METHOD=")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestEnvProxyChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("who:pw"))
	if len(p.reqs) != 1 || p.reqs[0] != "CONNECT echo.example:"+port+" "+auth {
		t.Fatalf("the proxy was asked %q", p.reqs)
	}
}

// TestEnvProxyChild is TestEnvProxy's child: wscat with HTTP_PROXY set.
func TestEnvProxyChild(t *testing.T) {
	u := os.Getenv("WSCAT_TEST_URL")
	if u == "" {
		t.Skip("run by TestEnvProxy")
	}
	code, out, errs := wscat(t, "through the environment's proxy\n", "-v", u)
	if code != 0 || out != "through the environment's proxy\n" {
		t.Fatalf("exit %d\nstdout %q\nstderr %q", code, out, errs)
	}
	if !strings.Contains(errs, "connected to "+u+" through the proxy http://who:xxxxx@127.0.0.1:") {
		t.Fatalf("stderr %q", errs)
	}
}
