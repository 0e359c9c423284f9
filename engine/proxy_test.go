package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
)

// Tests of DialOptions.Proxy: proxies written here that record what they
// were asked and relay, and the environment's proxy in a subprocess.

// proxyRequest is what a test proxy was asked.
type proxyRequest struct {
	method, target, auth string
}

// testProxy is a proxy on loopback: HTTP CONNECT, or SOCKS5. It maps the
// host names of hosts to addresses, as a resolver of its own would, so that
// a dial can name a host that is not loopback (the environment's proxy
// skips loopback) and still reach a server of the test.
type testProxy struct {
	ln    net.Listener
	hosts map[string]string
	// serve handles one client connection; nil relays as a CONNECT proxy.
	serve func(p *testProxy, c net.Conn, br *bufio.Reader)
	// auth is the Proxy-Authorization (or SOCKS5 "user:password") it
	// wants; "" for none.
	auth string

	mu    sync.Mutex
	reqs  []proxyRequest
	conns []net.Conn
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, p *testProxy) *testProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	if p.serve == nil {
		p.serve = (*testProxy).serveConnect
	}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.track(c)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer c.Close()
				p.serve(p, c, bufio.NewReader(c))
			}()
		}
	}()
	return p
}

func (p *testProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *testProxy) record(r proxyRequest) {
	p.mu.Lock()
	p.reqs = append(p.reqs, r)
	p.mu.Unlock()
}

func (p *testProxy) requests() []proxyRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]proxyRequest(nil), p.reqs...)
}

// url returns the proxy's URL with scheme and user info.
func (p *testProxy) url(scheme string, user *url.Userinfo) *url.URL {
	return &url.URL{Scheme: scheme, Host: p.ln.Addr().String(), User: user}
}

// upstream maps a CONNECT target to the address to dial.
func (p *testProxy) upstream(target string) string {
	host, port, _ := net.SplitHostPort(target)
	if a, ok := p.hosts[host]; ok {
		return net.JoinHostPort(a, port)
	}
	return target
}

// relay copies both ways between c (whose reader is br) and the upstream
// until either side ends.
func (p *testProxy) relay(c net.Conn, br *bufio.Reader, up net.Conn) {
	p.track(up)
	done := make(chan struct{})
	go func() {
		io.Copy(c, up)
		c.Close()
		close(done)
	}()
	io.Copy(up, br)
	up.Close()
	<-done
}

// serveConnect is an HTTP CONNECT proxy (RFC 9110 §9.3.6).
func (p *testProxy) serveConnect(c net.Conn, br *bufio.Reader) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	p.record(proxyRequest{method: req.Method, target: req.Host, auth: req.Header.Get("Proxy-Authorization")})
	switch {
	case req.Method != http.MethodConnect:
		io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	case p.auth != "" && req.Header.Get("Proxy-Authorization") != p.auth:
		io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", p.upstream(req.Host))
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	p.relay(c, br, up)
}

// serveSOCKS5 is a SOCKS5 proxy (RFC 1928, RFC 1929) that records the
// target as host:port and the credentials as user:password.
func (p *testProxy) serveSOCKS5(c net.Conn, br *bufio.Reader) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil || h[0] != 5 {
		return
	}
	methods := make([]byte, h[1])
	if _, err := io.ReadFull(br, methods); err != nil {
		return
	}
	want := byte(0)
	if p.auth != "" {
		want = 2
	}
	if !strings.ContainsRune(string(methods), rune(want)) {
		c.Write([]byte{5, 0xFF})
		return
	}
	c.Write([]byte{5, want})
	var auth string
	if want == 2 {
		var v [2]byte
		io.ReadFull(br, v[:])
		user := make([]byte, v[1])
		io.ReadFull(br, user)
		var l [1]byte
		io.ReadFull(br, l[:])
		pass := make([]byte, l[0])
		io.ReadFull(br, pass)
		auth = string(user) + ":" + string(pass)
		if auth != p.auth {
			p.record(proxyRequest{method: "SOCKS5", auth: auth})
			c.Write([]byte{1, 1})
			return
		}
		c.Write([]byte{1, 0})
	}
	var r [4]byte
	if _, err := io.ReadFull(br, r[:]); err != nil || r[1] != 1 {
		return
	}
	var host string
	switch r[3] {
	case 1, 4:
		a := make([]byte, 4)
		if r[3] == 4 {
			a = make([]byte, 16)
		}
		io.ReadFull(br, a)
		ip, _ := netip.AddrFromSlice(a)
		host = ip.String()
	case 3:
		var l [1]byte
		io.ReadFull(br, l[:])
		name := make([]byte, l[0])
		io.ReadFull(br, name)
		host = string(name)
	}
	var port [2]byte
	io.ReadFull(br, port[:])
	target := net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:]))))
	p.record(proxyRequest{method: "SOCKS5", target: target, auth: auth})
	up, err := net.Dial("tcp", p.upstream(target))
	if err != nil {
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}) // connection refused
		return
	}
	// The bound address as a name, to read a reply of that type too.
	c.Write(append([]byte{5, 0, 0, 3, 5}, "bound\x00\x00"...))
	p.relay(c, br, up)
}

// echoUpstream runs a wsloop server that answers every message in upper
// case, and returns its port.
func echoUpstream(t *testing.T, opts engine.Options) (port string, srv *engine.Server) {
	t.Helper()
	srv, _ = startServer(t, upperHandler{}, opts)
	_, port, _ = net.SplitHostPort(srv.Addr().String())
	return port, srv
}

// roundTrip sends a message on c and waits for the upper-case answer.
func roundTrip(t *testing.T, c handler.Conn, cli *msgRecorder, msg string) {
	t.Helper()
	if err := c.WriteMessage(handler.Text, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if m := cli.next(t); string(m.data) != strings.ToUpper(msg) {
		t.Fatalf("echo of %q: %q", msg, m.data)
	}
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// Through an HTTP CONNECT proxy with credentials, to ws:// and wss://: the
// proxy is asked for the host's name and port, with Proxy-Authorization
// from the URL's user info, and the server sees the request as if dialed
// directly (its Host names the host, not the proxy).
func TestDialProxyConnect(t *testing.T) {
	cert, _ := enginetest.Certificate(t)
	port, _ := echoUpstream(t, engine.Options{})
	tlsPort, _ := echoUpstream(t, engine.Options{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	p := startProxy(t, &testProxy{hosts: map[string]string{"echo.example": "127.0.0.1"}, auth: basic("ann", "s3cret:x")})
	cli := newMsgRecorder()
	d := dialer(t, cli, engine.Options{})
	opts := &engine.DialOptions{Proxy: http.ProxyURL(p.url("http", url.UserPassword("ann", "s3cret:x")))}
	c, resp, err := d.Dial(context.Background(), "ws://echo.example:"+port+"/path", opts)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Request.Host != "echo.example:"+port {
		t.Fatalf("response %s for host %q", resp.Status, resp.Request.Host)
	}
	roundTrip(t, c, cli, "through the proxy")

	opts.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	c, resp, err = d.Dial(context.Background(), "wss://echo.example:"+tlsPort+"/", opts)
	if err != nil {
		t.Fatal(err)
	}
	if resp.TLS == nil || resp.TLS.ServerName != "echo.example" {
		t.Fatalf("TLS state %+v: want the host's name, end to end", resp.TLS)
	}
	roundTrip(t, c, cli, "tls through the proxy")

	want := []proxyRequest{
		{method: "CONNECT", target: "echo.example:" + port, auth: basic("ann", "s3cret:x")},
		{method: "CONNECT", target: "echo.example:" + tlsPort, auth: basic("ann", "s3cret:x")},
	}
	if got := p.requests(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("the proxy was asked %+v, want %+v", got, want)
	}
}

// A proxy that sends bytes right behind its 200, in the same write: here
// the server's 101 and two frames, ready before the request (the test
// knows its key). They belong to the tunnel: the handshake reads the 101
// from them and the first frame is the connection's first message. With a
// long answer from the proxy (5000 bytes of padding), more of them are read
// with it than the handshake then reads, and the rest reaches the loop
// unread, before what is still in the socket.
func TestDialProxyBytesAfter200(t *testing.T) {
	for _, pad := range []int{0, 5000} {
		t.Run(strconv.Itoa(pad), func(t *testing.T) { testProxyBytesAfter200(t, pad) })
	}
}

func testProxyBytesAfter200(t *testing.T, pad int) {
	nonce := [16]byte{'w', 's', 'l', 'o', 'o', 'p'}
	key := codec.NewKey(nonce)
	big := bytes.Repeat([]byte{7}, 5000)
	sawRequest := make(chan string, 1)
	p := startProxy(t, &testProxy{serve: func(p *testProxy, c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		p.record(proxyRequest{method: req.Method, target: req.Host})
		out := []byte("HTTP/1.1 200 Connection established\r\n")
		if pad > 0 {
			out = append(out, "X-Pad: "+strings.Repeat("p", pad)+"\r\n"...)
		}
		out = append(out, "\r\n"+accept101(key)+"\r\n"...)
		out = codec.AppendFrame(out, true, codec.OpText, 0, []byte("sent with the 200"))
		out = codec.AppendFrame(out, true, codec.OpBinary, 0, big)
		c.Write(out)
		// The client's upgrade request comes through the tunnel after.
		up, err := http.ReadRequest(br)
		if err != nil {
			sawRequest <- err.Error()
			return
		}
		sawRequest <- up.Header.Get("Sec-Websocket-Key")
		// Close as a server does: a close frame, the client's answer,
		// then the TCP connection.
		c.Write(codec.AppendFrame(nil, true, codec.OpClose, 0, []byte{0x03, 0xE8}))
		var b [64]byte
		io.ReadAtLeast(br, b[:], 2)
	}})
	cli := newMsgRecorder()
	d := dialer(t, cli, engine.Options{})
	opts := &engine.DialOptions{Proxy: http.ProxyURL(p.url("http", nil))}
	engine.SetDialNonce(opts, nonce)
	if _, _, err := d.Dial(context.Background(), "ws://far.example/", opts); err != nil {
		t.Fatal(err)
	}
	if m := cli.next(t); m.op != handler.Text || string(m.data) != "sent with the 200" {
		t.Fatalf("first message %v", m)
	}
	if m := cli.next(t); m.op != handler.Binary || !bytes.Equal(m.data, big) {
		t.Fatalf("second message: %d bytes", len(m.data))
	}
	if got := <-sawRequest; got != key {
		t.Fatalf("upgrade request through the tunnel: key %q, want %q", got, key)
	}
	if r := p.requests(); len(r) != 1 || r[0].target != "far.example:80" {
		t.Fatalf("the proxy was asked %+v", r)
	}
}

// The proxy's failures are the proxy phase, and say what happened.
func TestDialProxyErrors(t *testing.T) {
	port, _ := echoUpstream(t, engine.Options{})
	auth := startProxy(t, &testProxy{hosts: map[string]string{"echo.example": "127.0.0.1"}, auth: basic("ann", "pw")})
	d := dialer(t, newRecorder(), engine.Options{})
	target := "ws://echo.example:" + port + "/"
	dial := func(proxy func(*http.Request) (*url.URL, error)) error {
		_, _, err := d.Dial(context.Background(), target, &engine.DialOptions{Proxy: proxy})
		return err
	}
	check := func(name string, err error, phase engine.DialPhase, texts ...string) {
		t.Helper()
		var de *engine.DialError
		if !errors.As(err, &de) || de.Phase != phase {
			t.Fatalf("%s: %v, want a DialError in phase %v", name, err, phase)
		}
		for _, s := range texts {
			if !strings.Contains(err.Error(), s) {
				t.Fatalf("%s: %q does not say %q", name, err, s)
			}
		}
	}
	check("no credentials", dial(http.ProxyURL(auth.url("http", nil))), engine.PhaseProxy,
		"407 Proxy Authentication Required", "wants credentials", `Basic realm="test"`)
	check("wrong credentials", dial(http.ProxyURL(auth.url("http", url.UserPassword("ann", "no")))), engine.PhaseProxy,
		"407", "refused the user name and password")
	if r := auth.requests(); len(r) != 2 || r[0].auth != "" || r[1].auth != basic("ann", "no") {
		t.Fatalf("requests %+v", r)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	gone := ln.Addr().String()
	ln.Close()
	_, gonePort, _ := net.SplitHostPort(gone)
	unreachable := startProxy(t, &testProxy{hosts: map[string]string{"refused.example": "127.0.0.1"}})
	_, _, err := d.Dial(context.Background(), "ws://refused.example:"+gonePort+"/", &engine.DialOptions{Proxy: http.ProxyURL(unreachable.url("http", nil))})
	check("bad gateway", err, engine.PhaseProxy, "502 Bad Gateway", "CONNECT refused.example:"+gonePort)
	check("proxy refuses the connection", dial(http.ProxyURL(&url.URL{Scheme: "http", Host: gone})), engine.PhaseConnect,
		"the proxy "+gone, "refused")
	check("the proxy function fails", dial(func(*http.Request) (*url.URL, error) { return nil, errors.New("no route") }),
		engine.PhaseProxy, "choosing the proxy: no route")
	check("unknown scheme", dial(http.ProxyURL(&url.URL{Scheme: "ftp", Host: gone})), engine.PhaseProxy, `unsupported proxy scheme "ftp"`)
	_, _, err = d.Dial(context.Background(), "wss://echo.example/", &engine.DialOptions{Proxy: http.ProxyURL(&url.URL{Scheme: "https", Host: gone})})
	check("wss through https", err, engine.PhaseProxy, "not supported")
	// Proxies that hang up once they have the request.
	hangup := startProxy(t, &testProxy{serve: func(_ *testProxy, _ net.Conn, br *bufio.Reader) { http.ReadRequest(br) }})
	check("hang-up", dial(http.ProxyURL(hangup.url("http", nil))), engine.PhaseProxy, "closed the connection without answering")
	socksHangup := startProxy(t, &testProxy{serve: func(_ *testProxy, _ net.Conn, br *bufio.Reader) { io.ReadFull(br, make([]byte, 3)) }})
	check("SOCKS hang-up", dial(http.ProxyURL(socksHangup.url("socks5", nil))), engine.PhaseProxy, "SOCKS5", "closed the connection")
	if st := d.Stats(); st.Conns != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// The proxy function sees the request as net/http's Transport would: the
// http or https scheme, the host, the handshake's headers.
func TestDialProxyRequest(t *testing.T) {
	port, _ := echoUpstream(t, engine.Options{})
	d := dialer(t, newRecorder(), engine.Options{})
	var got []string
	proxy := func(r *http.Request) (*url.URL, error) {
		got = append(got, r.URL.String()+" "+r.Header.Get("Authorization"))
		return nil, nil // none: dial directly
	}
	hdr := http.Header{"Authorization": {"Bearer t"}}
	for _, u := range []string{"ws://user:pw@127.0.0.1:" + port + "/a?b=c", "wss://127.0.0.1:1/"} {
		d.Dial(context.Background(), u, &engine.DialOptions{Proxy: proxy, Header: hdr})
	}
	want := []string{"http://127.0.0.1:" + port + "/a?b=c Bearer t", "https://127.0.0.1:1/ Bearer t"}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("the proxy function saw %q, want %q", got, want)
	}
}

// Through a SOCKS5 proxy, without and with a user name and password: the
// host goes to the proxy as a name (it resolves it), or as an address.
func TestDialProxySOCKS5(t *testing.T) {
	cert, _ := enginetest.Certificate(t)
	port, _ := echoUpstream(t, engine.Options{})
	tlsPort, _ := echoUpstream(t, engine.Options{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	hosts := map[string]string{"echo.example": "127.0.0.1"}
	open := startProxy(t, &testProxy{hosts: hosts, serve: (*testProxy).serveSOCKS5})
	authed := startProxy(t, &testProxy{hosts: hosts, serve: (*testProxy).serveSOCKS5, auth: "bob:pa ss"})
	cli := newMsgRecorder()
	d := dialer(t, cli, engine.Options{})

	c, _, err := d.Dial(context.Background(), "ws://echo.example:"+port+"/", &engine.DialOptions{Proxy: http.ProxyURL(open.url("socks5", nil))})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, cli, "socks")
	c, _, err = d.Dial(context.Background(), "ws://127.0.0.1:"+port+"/", &engine.DialOptions{Proxy: http.ProxyURL(open.url("socks5h", nil))})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, cli, "socks by address")
	c, _, err = d.Dial(context.Background(), "wss://echo.example:"+tlsPort+"/", &engine.DialOptions{
		Proxy: http.ProxyURL(authed.url("socks5", url.UserPassword("bob", "pa ss"))), TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, cli, "socks with a password, tls")
	if r := open.requests(); len(r) != 2 || r[0].target != "echo.example:"+port || r[1].target != "127.0.0.1:"+port {
		t.Fatalf("requests %+v", r)
	}
	if r := authed.requests(); len(r) != 1 || r[0].target != "echo.example:"+tlsPort || r[0].auth != "bob:pa ss" {
		t.Fatalf("requests %+v", r)
	}

	check := func(name string, err error, texts ...string) {
		t.Helper()
		var de *engine.DialError
		if !errors.As(err, &de) || de.Phase != engine.PhaseProxy {
			t.Fatalf("%s: %v, want the proxy phase", name, err)
		}
		for _, s := range texts {
			if !strings.Contains(err.Error(), s) {
				t.Fatalf("%s: %q does not say %q", name, err, s)
			}
		}
	}
	_, _, err = d.Dial(context.Background(), "ws://echo.example:"+port+"/", &engine.DialOptions{Proxy: http.ProxyURL(authed.url("socks5", nil))})
	check("no credentials", err, "wants authentication")
	_, _, err = d.Dial(context.Background(), "ws://echo.example:"+port+"/", &engine.DialOptions{Proxy: http.ProxyURL(authed.url("socks5", url.UserPassword("bob", "no")))})
	check("wrong credentials", err, "refused the user name and password")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	_, gonePort, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	_, _, err = d.Dial(context.Background(), "ws://echo.example:"+gonePort+"/", &engine.DialOptions{Proxy: http.ProxyURL(open.url("socks5", nil))})
	check("refused", err, "refused CONNECT echo.example:"+gonePort, "connection refused")
}

// An https:// proxy: TLS to the proxy, CONNECT inside it, and the loop
// then runs that TLS for a ws:// connection.
func TestDialProxyHTTPS(t *testing.T) {
	cert, _ := enginetest.Certificate(t)
	port, _ := echoUpstream(t, engine.Options{})
	p := &testProxy{hosts: map[string]string{"echo.example": "127.0.0.1"}}
	p.serve = func(p *testProxy, c net.Conn, _ *bufio.Reader) {
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		if tc.Handshake() != nil {
			return
		}
		p.serveConnect(tc, bufio.NewReader(tc))
	}
	startProxy(t, p)
	cli := newMsgRecorder()
	d := dialer(t, cli, engine.Options{})
	proxyURL := &url.URL{Scheme: "https", Host: "localhost:" + strings.Split(p.ln.Addr().String(), ":")[1]}
	c, resp, err := d.Dial(context.Background(), "ws://echo.example:"+port+"/", &engine.DialOptions{
		Proxy: http.ProxyURL(proxyURL), TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.TLS != nil {
		t.Fatal("resp.TLS set for ws://: the TLS was the proxy's")
	}
	roundTrip(t, c, cli, "inside the proxy's tls")
	roundTrip(t, c, cli, strings.Repeat("big ", 10_000))
	if r := p.requests(); len(r) != 1 || r[0].target != "echo.example:"+port {
		t.Fatalf("requests %+v", r)
	}
	// The proxy's certificate is checked: with the system's roots it
	// fails, in the proxy phase.
	_, _, err = d.Dial(context.Background(), "ws://echo.example:"+port+"/", &engine.DialOptions{Proxy: http.ProxyURL(proxyURL)})
	var de *engine.DialError
	if !errors.As(err, &de) || de.Phase != engine.PhaseProxy || !strings.Contains(err.Error(), "TLS handshake with the proxy") {
		t.Fatalf("unverified proxy: %v", err)
	}
}

// Without a Proxy function Dial uses the environment's proxy, which
// http.ProxyFromEnvironment reads once per process: so a child process
// (this test binary again) dials with HTTP_PROXY, HTTPS_PROXY and NO_PROXY
// set. The proxy and the servers run here.
func TestDialEnvironmentProxy(t *testing.T) {
	if os.Getenv("WSLOOP_TEST_ENV_PROXY") != "" {
		t.Skip("the child runs TestDialEnvironmentProxyChild")
	}
	cert, _ := enginetest.Certificate(t)
	port, _ := echoUpstream(t, engine.Options{})
	tlsPort, _ := echoUpstream(t, engine.Options{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	p := startProxy(t, &testProxy{hosts: map[string]string{"echo.example": "127.0.0.1"}, auth: basic("env", "pw")})
	proxy := "http://env:pw@" + p.ln.Addr().String()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDialEnvironmentProxyChild$", "-test.v")
	cmd.Env = append(os.Environ(),
		"WSLOOP_TEST_ENV_PROXY=1", "WSLOOP_TEST_PORT="+port, "WSLOOP_TEST_TLS_PORT="+tlsPort,
		"HTTP_PROXY="+proxy, "HTTPS_PROXY="+proxy, "NO_PROXY=direct.example",
		"http_proxy=", "https_proxy=", "no_proxy=", "REQUEST_METHOD=")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestDialEnvironmentProxyChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	want := []proxyRequest{
		{method: "CONNECT", target: "echo.example:" + port, auth: basic("env", "pw")},
		{method: "CONNECT", target: "echo.example:" + tlsPort, auth: basic("env", "pw")},
	}
	if got := p.requests(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("the proxy was asked %+v, want %+v (and nothing for direct.example or loopback)", got, want)
	}
}

// TestDialEnvironmentProxyChild is TestDialEnvironmentProxy's child.
func TestDialEnvironmentProxyChild(t *testing.T) {
	if os.Getenv("WSLOOP_TEST_ENV_PROXY") == "" {
		t.Skip("run by TestDialEnvironmentProxy")
	}
	port, tlsPort := os.Getenv("WSLOOP_TEST_PORT"), os.Getenv("WSLOOP_TEST_TLS_PORT")
	// direct.example is in NO_PROXY: dialed directly, it must resolve,
	// and the test resolver maps it to loopback.
	res := testResolver(map[string][]netip.Addr{"direct.example": {netip.MustParseAddr("127.0.0.1")}})
	cli := newMsgRecorder()
	d := dialer(t, cli, engine.Options{})
	for _, u := range []string{
		"ws://echo.example:" + port + "/",     // HTTP_PROXY
		"wss://echo.example:" + tlsPort + "/", // HTTPS_PROXY
		"ws://direct.example:" + port + "/",   // NO_PROXY
		"ws://127.0.0.1:" + port + "/",        // loopback: never proxied
	} {
		c, _, err := d.Dial(context.Background(), u, &engine.DialOptions{Resolver: res, TLSConfig: &tls.Config{InsecureSkipVerify: true}})
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		roundTrip(t, c, cli, "env "+u)
	}
}
