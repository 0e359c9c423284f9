package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
)

// Tests of Server.Dial: the client, against wsloop's own server and against
// raw servers that misbehave on purpose.

// dialer runs a server without a listener whose loops carry dialed
// connections, until the test ends.
func dialer(t *testing.T, h handler.Handler, opts engine.Options) *engine.Server {
	t.Helper()
	return startLoops(t, h, opts)
}

// msgRecorder keeps the messages a handler received, in order.
type msgRecorder struct {
	*recorder
	msgs chan frame
}

func newMsgRecorder() *msgRecorder {
	m := &msgRecorder{recorder: newRecorder(), msgs: make(chan frame, 1024)}
	m.message = func(c handler.Conn, op handler.Op, data []byte) {
		m.msgs <- frame{op: op, data: append([]byte(nil), data...)}
	}
	return m
}

func (m *msgRecorder) next(t *testing.T) frame {
	t.Helper()
	select {
	case f := <-m.msgs:
		return f
	case <-time.After(readTimeout):
		t.Fatal("no message within the timeout")
		return frame{}
	}
}

func TestDialEcho(t *testing.T) {
	srvRec := newRecorder()
	srv, _ := startServer(t, srvRec, engine.Options{Subprotocols: []string{"v2", "v1"}})
	cli := newMsgRecorder()
	d := dialer(t, cli, engine.Options{})
	url := "ws://" + srv.Addr().String() + "/feed?x=1"
	c, resp, err := d.Dial(context.Background(), url, &engine.DialOptions{Subprotocols: []string{"v1", "v2"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") == "" {
		t.Fatalf("response %v %v", resp.Status, resp.Header)
	}
	// The server picks the first of the client's offers it speaks.
	if c.Subprotocol() != "v1" || c.Path() != "/feed" || c.RawQuery() != "x=1" {
		t.Fatalf("subprotocol %q path %q query %q", c.Subprotocol(), c.Path(), c.RawQuery())
	}
	if c.RemoteAddr().String() != srv.Addr().String() {
		t.Fatalf("RemoteAddr %v, want %v", c.RemoteAddr(), srv.Addr())
	}
	if opened := cli.waitOpen(t); opened != c {
		t.Fatal("OnOpen saw another conn than Dial returned")
	}
	big := bytes.Repeat([]byte("0123456789"), 100_000)
	for _, m := range []frame{{op: handler.Text, data: []byte("hello ✓")}, {op: handler.Binary, data: []byte{0, 1, 2, 255}}, {op: handler.Binary, data: big}} {
		if err := c.WriteMessage(m.op, m.data); err != nil {
			t.Fatal(err)
		}
		got := cli.next(t)
		if got.op != m.op || !bytes.Equal(got.data, m.data) {
			t.Fatalf("echo %v, want %v", got, m)
		}
	}
	// Fragments through NextWriter, a ping answered by the server.
	w, _ := c.NextWriter(handler.Text)
	io.WriteString(w, "frag")
	io.WriteString(w, "mented")
	w.Close()
	if got := cli.next(t); string(got.data) != "fragmented" {
		t.Fatalf("fragmented echo %v", got)
	}
	pongs := make(chan string, 1)
	cli.pong = func(_ handler.Conn, data []byte) { pongs <- string(data) }
	c.Ping([]byte("hi"))
	select {
	case p := <-pongs:
		if p != "hi" {
			t.Fatalf("pong %q", p)
		}
	case <-time.After(readTimeout):
		t.Fatal("no pong")
	}
	st := d.Stats()
	if st.Dialed != 1 || st.Open != 1 || st.MessagesOut != 4 || st.MessagesIn != 4 {
		t.Fatalf("client stats %+v", st)
	}
	// Close from the client: the server echoes, then closes TCP first.
	if err := c.Close(1000, "bye"); err != nil {
		t.Fatal(err)
	}
	ev := cli.waitClose(t)
	var ce *handler.CloseError
	if !errors.As(ev.err, &ce) || ce.Code != 1000 || ce.Remote || ce.Reason != "bye" {
		t.Fatalf("client OnClose %v", ev.err)
	}
	sev := srvRec.waitClose(t)
	if !errors.As(sev.err, &ce) || ce.Code != 1000 || !ce.Remote {
		t.Fatalf("server OnClose %v", sev.err)
	}
	if err := c.WriteMessage(handler.Text, []byte("late")); !errors.Is(err, handler.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if st := d.Stats(); st.Open != 0 {
		t.Fatalf("client stats after close %+v", st)
	}
	// The socket is uncounted once OnClose has returned, just after the
	// event the test saw.
	waitFor(t, "the client's socket to be uncounted", func() bool { return d.Stats().Conns == 0 })
	cli.check(t)
	srvRec.check(t)
}

// The server closes: the client answers, and its OnClose has the server's
// code and reason.
func TestDialServerCloses(t *testing.T) {
	srvRec := newRecorder()
	srvRec.message = func(c handler.Conn, op handler.Op, data []byte) { c.Close(4001, string(data)) }
	srv, _ := startServer(t, srvRec, engine.Options{})
	cli := newRecorder()
	d := dialer(t, cli, engine.Options{})
	c, _, err := d.Dial(context.Background(), "ws://"+srv.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.WriteMessage(handler.Text, []byte("go away"))
	ev := cli.waitClose(t)
	var ce *handler.CloseError
	if !errors.As(ev.err, &ce) || ce.Code != 4001 || ce.Reason != "go away" || !ce.Remote {
		t.Fatalf("client OnClose %v", ev.err)
	}
	sev := srvRec.waitClose(t)
	if !errors.As(sev.err, &ce) || ce.Code != 4001 || ce.Remote {
		t.Fatalf("server OnClose %v (want its own close, answered)", sev.err)
	}
	cli.check(t)
}

// headerSeen records the upgrade requests a server saw.
type headerSeen struct {
	*recorder
	mu  sync.Mutex
	req *handler.Request
}

func (h *headerSeen) OnUpgrade(r *handler.Request, res *handler.UpgradeResponse) error {
	h.mu.Lock()
	h.req = r
	h.mu.Unlock()
	if r.Header.Get("Authorization") == "Bearer no" {
		return &handler.HTTPError{Status: http.StatusUnauthorized, Reason: "bad token", Header: http.Header{"Www-Authenticate": {"Bearer"}}}
	}
	res.Header = http.Header{"X-Server": {"wsloop"}}
	return nil
}

func TestDialHeaders(t *testing.T) {
	h := &headerSeen{recorder: newRecorder()}
	srv, _ := startServer(t, h, engine.Options{CheckOrigin: func(*handler.Request) bool { return true }})
	d := dialer(t, newRecorder(), engine.Options{})
	hdr := http.Header{"Authorization": {"Bearer yes"}, "Cookie": {"a=b"}, "Origin": {"https://example.com"}, "User-Agent": {"wsloop-test"}}
	_, resp, err := d.Dial(context.Background(), "ws://"+srv.Addr().String()+"/p", &engine.DialOptions{Header: hdr})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("X-Server") != "wsloop" {
		t.Fatalf("response header %v", resp.Header)
	}
	h.mu.Lock()
	r := h.req
	h.mu.Unlock()
	for k := range hdr {
		if r.Header.Get(k) != hdr.Get(k) {
			t.Errorf("server saw %s=%q, want %q", k, r.Header.Get(k), hdr.Get(k))
		}
	}
	if r.Origin != "https://example.com" || r.Path != "/p" {
		t.Fatalf("request %+v", r)
	}

	// Refused: the status, headers and body come back.
	_, resp, err = d.Dial(context.Background(), "ws://"+srv.Addr().String()+"/p", &engine.DialOptions{Header: http.Header{"Authorization": {"Bearer no"}}})
	var re *engine.UpgradeStatusError
	if !errors.As(err, &re) || re.StatusCode != 401 || re.Header.Get("Www-Authenticate") != "Bearer" || !strings.Contains(string(re.Body), "bad token") {
		t.Fatalf("refused dial: %v (%+v)", err, re)
	}
	if !strings.Contains(err.Error(), "401 Unauthorized") || !strings.Contains(err.Error(), "bad token") {
		t.Fatalf("error text %q", err)
	}
	if resp == nil || resp.StatusCode != 401 {
		t.Fatalf("resp %v", resp)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "bad token") {
		t.Fatalf("resp body %q", body)
	}
	if st := d.Stats(); st.Conns != 1 || st.Dialed != 1 {
		t.Fatalf("stats after a refused dial %+v (one open, one refused)", st)
	}

	// Headers the handshake sets itself are refused before dialing.
	if _, _, err := d.Dial(context.Background(), "ws://"+srv.Addr().String(), &engine.DialOptions{Header: http.Header{"Sec-Websocket-Key": {"x"}}}); err == nil {
		t.Fatal("a Sec-WebSocket-Key header was accepted")
	}
	if _, _, err := d.Dial(context.Background(), "http://"+srv.Addr().String(), nil); !errors.Is(err, engine.ErrDialScheme) {
		t.Fatalf("http:// scheme: %v", err)
	}
}

// A redirect is not followed, and the error says where it pointed.
func TestDialRedirect(t *testing.T) {
	addr := httpFront(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "wss://elsewhere.example/ws", http.StatusFound)
	})
	d := dialer(t, newRecorder(), engine.Options{})
	_, resp, err := d.Dial(context.Background(), "ws://"+addr+"/ws", nil)
	var re *engine.UpgradeStatusError
	if !errors.As(err, &re) || re.StatusCode != 302 {
		t.Fatalf("err %v", err)
	}
	if !strings.Contains(err.Error(), "redirect not followed") || !strings.Contains(err.Error(), "wss://elsewhere.example/ws") {
		t.Fatalf("error text %q", err)
	}
	if resp.Header.Get("Location") != "wss://elsewhere.example/ws" {
		t.Fatalf("resp %v", resp.Header)
	}
}

func TestDialDeflate(t *testing.T) {
	srv, _ := startServer(t, newRecorder(), engine.Options{Deflate: engine.Deflate{Enabled: true}})
	cli := newMsgRecorder()
	d := dialer(t, cli, engine.Options{})
	c, resp, err := d.Dial(context.Background(), "ws://"+srv.Addr().String(), &engine.DialOptions{Deflate: true})
	if err != nil {
		t.Fatal(err)
	}
	if ext := resp.Header.Get("Sec-Websocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
		t.Fatalf("not negotiated: %q", ext)
	}
	msg := bytes.Repeat([]byte(`{"price":101.25,"qty":3,"side":"buy"}`), 100)
	before := d.Stats().BytesOut
	for i := 0; i < 3; i++ {
		c.WriteMessage(handler.Text, msg)
		if got := cli.next(t); !bytes.Equal(got.data, msg) {
			t.Fatalf("deflate echo %d bytes, want %d", len(got.data), len(msg))
		}
	}
	if sent := d.Stats().BytesOut - before; sent > int64(len(msg)) {
		t.Fatalf("3 compressible messages of %d bytes took %d bytes on the wire", len(msg), sent)
	}
	if d.Stats().Deflate.Negotiated != 1 || srv.Stats().Deflate.Negotiated != 1 {
		t.Fatalf("negotiated: client %+v server %+v", d.Stats().Deflate, srv.Stats().Deflate)
	}
	// Broadcast to a client connection: compressed once, masked per
	// connection.
	d.Broadcast([]handler.Conn{c}, codec.NewPreparedFrame(codec.OpText, msg))
	if got := cli.next(t); !bytes.Equal(got.data, msg) {
		t.Fatal("broadcast echo differs")
	}
}

func TestDialTLS(t *testing.T) {
	cert, certPEM := enginetest.Certificate(t)
	welcome := &recorder{opened: make(chan handler.Conn, 8), closed: make(chan closeEvent, 8), closes: map[handler.Conn]int{}, opens: map[handler.Conn]bool{}}
	welcome.open = func(c handler.Conn) {
		// Frames right behind the 101, in the same TLS flight: crypto/tls
		// holds them when Dial hands the socket to a loop.
		c.WriteMessage(handler.Text, []byte("welcome"))
		c.WriteMessage(handler.Binary, bytes.Repeat([]byte{7}, 40_000))
	}
	srv, _ := startServer(t, welcome, engine.Options{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, Deflate: engine.Deflate{Enabled: true}})
	cli := newMsgRecorder()
	d := dialer(t, cli, engine.Options{})
	for _, deflate := range []bool{false, true} {
		c, resp, err := d.Dial(context.Background(), "wss://"+srv.Addr().String()+"/", &engine.DialOptions{TLSConfig: &tls.Config{InsecureSkipVerify: true}, Deflate: deflate})
		if err != nil {
			t.Fatal(err)
		}
		if resp.TLS == nil || !resp.TLS.HandshakeComplete {
			t.Fatal("no TLS state in the response")
		}
		if got := cli.next(t); string(got.data) != "welcome" {
			t.Fatalf("first message %v", got)
		}
		if got := cli.next(t); len(got.data) != 40_000 {
			t.Fatalf("second message %v", got)
		}
		for _, n := range []int{5, 20_000, 300_000} {
			m := bytes.Repeat([]byte("abc"), n)
			c.WriteMessage(handler.Binary, m)
			if got := cli.next(t); !bytes.Equal(got.data, m) {
				t.Fatalf("wss echo of %d bytes", len(m))
			}
		}
		c.Close(1000, "")
		var ce *handler.CloseError
		if ev := cli.waitClose(t); !errors.As(ev.err, &ce) || ce.Code != 1000 {
			t.Fatalf("OnClose %v", ev.err)
		}
	}
	// Verified against its own root, by IP and by name.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	for _, host := range []string{srv.Addr().String(), "localhost:" + strings.Split(srv.Addr().String(), ":")[1]} {
		c, _, err := d.Dial(context.Background(), "wss://"+host+"/", &engine.DialOptions{TLSConfig: &tls.Config{RootCAs: roots}})
		if err != nil {
			t.Fatalf("verified dial to %s: %v", host, err)
		}
		cli.next(t)
		cli.next(t)
		c.Close(1000, "")
		cli.waitClose(t)
	}
	// A certificate nobody vouches for fails in the TLS phase.
	_, _, err := d.Dial(context.Background(), "wss://"+srv.Addr().String()+"/", nil)
	var de *engine.DialError
	if !errors.As(err, &de) || de.Phase != engine.PhaseTLS || !strings.Contains(err.Error(), "TLS handshake") {
		t.Fatalf("untrusted certificate: %v", err)
	}
	if st := d.Stats(); st.Conns != 0 || st.TLSHandshakes != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// rawServer accepts connections on loopback and gives each to serve.
func rawServer(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String()
}

// readUpgrade reads a client's upgrade request and returns its key.
func readUpgrade(br *bufio.Reader) (string, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return "", err
	}
	return req.Header.Get("Sec-Websocket-Key"), nil
}

func accept101(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(h[:]) + "\r\n"
}

// Bad answers to the upgrade fail the dial in the handshake phase, saying why.
func TestDialBadResponses(t *testing.T) {
	tests := []struct {
		name string
		resp func(key string) string
		want error
		text string
	}{
		{"wrong accept", func(string) string { return accept101("other") + "\r\n" }, codec.ErrAccept, "Sec-WebSocket-Accept"},
		{"no upgrade", func(k string) string {
			return strings.Replace(accept101(k), "Upgrade: websocket\r\n", "", 1) + "\r\n"
		}, codec.ErrNoUpgrade, "Upgrade"},
		{"subprotocol not offered", func(k string) string { return accept101(k) + "Sec-WebSocket-Protocol: x\r\n\r\n" }, codec.ErrProtocolNotOffered, "subprotocol"},
		{"extension not offered", func(k string) string {
			return accept101(k) + "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
		}, codec.ErrExtensionNotOffered, "extension"},
		{"header too large", func(k string) string {
			return accept101(k) + "X-Big: " + strings.Repeat("x", 9000) + "\r\n\r\n"
		}, codec.ErrResponseTooLarge, "too large"},
		{"not http", func(string) string { return "SSH-2.0-OpenSSH_9\r\n\r\n" }, codec.ErrBadStatusLine, "status line"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
				key, err := readUpgrade(br)
				if err != nil {
					return
				}
				io.WriteString(c, tc.resp(key))
				io.Copy(io.Discard, br) // until the client closes
			})
			d := dialer(t, newRecorder(), engine.Options{})
			_, _, err := d.Dial(context.Background(), "ws://"+addr+"/", nil)
			var de *engine.DialError
			if !errors.As(err, &de) || de.Phase != engine.PhaseHandshake || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err %v, want %v in the handshake phase", err, tc.want)
			}
			if st := d.Stats(); st.Conns != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
	// The server hangs up before answering.
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) { readUpgrade(br) })
	d := dialer(t, newRecorder(), engine.Options{})
	_, _, err := d.Dial(context.Background(), "ws://"+addr+"/", nil)
	if err == nil || !strings.Contains(err.Error(), "closed the connection without answering") {
		t.Fatalf("hang-up: %v", err)
	}
}

// Frames the server sent in the same packet as its 101 are delivered, and
// a masked server frame then fails the connection with 1002 (RFC 6455
// §5.1), which the client sends masked.
func TestDialPipelinedAndMasked(t *testing.T) {
	got := make(chan frame, 4)
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		key, err := readUpgrade(br)
		if err != nil {
			return
		}
		out := []byte(accept101(key) + "\r\n")
		out = codec.AppendFrame(out, true, codec.OpText, 0, []byte("first"))
		out = codec.AppendMaskedFrame(out, true, codec.OpText, 0, [4]byte{1, 2, 3, 4}, []byte("masked"))
		c.Write(out)
		// The client's close frame must be masked (a server decoder
		// checks), then the server closes first.
		var dec codec.Decoder
		buf := make([]byte, 256)
		n, _ := io.ReadAtLeast(br, buf, 2)
		_, ev, err := dec.Decode(buf[:n])
		if err != nil || ev.Kind != codec.EventControl {
			got <- frame{op: 0xF, reason: "client sent " + strings.TrimSpace(hexOr(buf[:n], err))}
			return
		}
		got <- frame{op: ev.Op, code: ev.CloseCode}
	})
	cli := newMsgRecorder()
	d := dialer(t, cli, engine.Options{})
	if _, _, err := d.Dial(context.Background(), "ws://"+addr+"/", nil); err != nil {
		t.Fatal(err)
	}
	if m := cli.next(t); string(m.data) != "first" {
		t.Fatalf("first message %v", m)
	}
	select {
	case f := <-got:
		if f.op != codec.OpClose || f.code != 1002 {
			t.Fatalf("client sent %v, want a masked close 1002", f)
		}
	case <-time.After(readTimeout):
		t.Fatal("no close frame from the client")
	}
	ev := cli.waitClose(t)
	var ce *handler.CloseError
	if !errors.As(ev.err, &ce) || ce.Code != 1002 || ce.Remote {
		t.Fatalf("OnClose %v", ev.err)
	}
}

func hexOr(b []byte, err error) string {
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Every client frame is masked with a key of its own.
func TestDialMasksEveryFrame(t *testing.T) {
	keys := make(chan [4]byte, 64)
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		key, err := readUpgrade(br)
		if err != nil {
			return
		}
		io.WriteString(c, accept101(key)+"\r\n")
		for {
			var h [6]byte
			if _, err := io.ReadFull(br, h[:]); err != nil {
				close(keys)
				return
			}
			if h[1]&0x80 == 0 {
				close(keys)
				return
			}
			n := int(h[1] & 0x7F) // the test sends small frames only
			var k [4]byte
			copy(k[:], h[2:])
			keys <- k
			p := make([]byte, n)
			io.ReadFull(br, p)
		}
	})
	d := dialer(t, newRecorder(), engine.Options{})
	c, _, err := d.Dial(context.Background(), "ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 32
	prepared := codec.NewPreparedFrame(codec.OpText, []byte("shared"))
	for i := 0; i < n; i++ {
		if i%2 == 0 {
			c.WriteMessage(handler.Text, []byte("x"))
		} else {
			c.WritePrepared(prepared)
		}
	}
	seen := map[[4]byte]bool{}
	for i := 0; i < n; i++ {
		select {
		case k, ok := <-keys:
			if !ok {
				t.Fatalf("frame %d unmasked or missing", i)
			}
			seen[k] = true
		case <-time.After(readTimeout):
			t.Fatal("frames missing")
		}
	}
	// 32 draws from 2^32 keys: a repeat means the keys are not fresh.
	if len(seen) != n {
		t.Fatalf("%d distinct keys in %d frames", len(seen), n)
	}
}

// Each phase that runs out of time says which it was.
func TestDialTimeouts(t *testing.T) {
	silent := rawServer(t, func(c net.Conn, br *bufio.Reader) { io.Copy(io.Discard, br) })
	d := dialer(t, newRecorder(), engine.Options{})
	short := &engine.DialOptions{HandshakeTimeout: 100 * time.Millisecond}
	check := func(name string, err error, phase engine.DialPhase) {
		t.Helper()
		var de *engine.DialError
		if !errors.As(err, &de) || de.Phase != phase || !de.Timeout() || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: %v, want a timeout in phase %s", name, err, phase)
		}
		if !strings.Contains(err.Error(), "timed out") {
			t.Fatalf("%s: error text %q", name, err)
		}
	}
	_, _, err := d.Dial(context.Background(), "ws://"+silent+"/", short)
	check("silent server", err, engine.PhaseHandshake)
	_, _, err = d.Dial(context.Background(), "wss://"+silent+"/", short)
	check("silent TLS server", err, engine.PhaseTLS)

	block := func(ctx context.Context, _, _ string) (net.Conn, error) { <-ctx.Done(); return nil, ctx.Err() }
	res := &net.Resolver{PreferGo: true, Dial: block}
	_, _, err = d.Dial(context.Background(), "ws://dns.invalid.example/", &engine.DialOptions{HandshakeTimeout: 100 * time.Millisecond, Resolver: res})
	check("DNS", err, engine.PhaseDNS)
	_, _, err = d.Dial(context.Background(), "ws://"+silent+"/", &engine.DialOptions{HandshakeTimeout: 100 * time.Millisecond, NetDialContext: block})
	check("connect", err, engine.PhaseConnect)
	// A proxy that never answers CONNECT.
	silentProxy := func(*http.Request) (*url.URL, error) { return &url.URL{Scheme: "http", Host: silent}, nil }
	_, _, err = d.Dial(context.Background(), "ws://far.example/", &engine.DialOptions{HandshakeTimeout: 100 * time.Millisecond, Proxy: silentProxy})
	check("proxy", err, engine.PhaseProxy)

	// The caller's context: a deadline reads as a timeout, a cancel as a
	// cancel.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, err = d.Dial(ctx, "ws://"+silent+"/", nil)
	check("context deadline", err, engine.PhaseHandshake)
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		// Cancel once the server has the request in hand.
		cancel()
	}()
	_, _, err = d.Dial(ctx, "ws://"+silent+"/", nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled dial: %v", err)
	}
	// Refused: not a timeout, and says connect.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	_, _, err = d.Dial(context.Background(), "ws://"+closed+"/", nil)
	var de *engine.DialError
	if !errors.As(err, &de) || de.Phase != engine.PhaseConnect || de.Timeout() || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("refused: %v", err)
	}
	if st := d.Stats(); st.Conns != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Start runs loops without a listener for a dial-only program; Shutdown
// closes its dialed connections with 1001.
func TestStartAndShutdownDialed(t *testing.T) {
	srvRec := newRecorder()
	srv, _ := startServer(t, srvRec, engine.Options{})
	cli := newRecorder()
	d := engine.New(cli, engine.Options{Logger: discardLogger})
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Dial(context.Background(), "ws://"+srv.Addr().String(), nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var ce *handler.CloseError
	if ev := cli.waitClose(t); !errors.As(ev.err, &ce) || ce.Code != 1001 {
		t.Fatalf("client OnClose %v", ev.err)
	}
	if ev := srvRec.waitClose(t); !errors.As(ev.err, &ce) || ce.Code != 1001 || !ce.Remote {
		t.Fatalf("server OnClose %v", ev.err)
	}
	if _, _, err := d.Dial(context.Background(), "ws://"+srv.Addr().String(), nil); !errors.Is(err, engine.ErrNotServing) {
		t.Fatalf("dial after shutdown: %v", err)
	}
}

// At Options.MaxConns Dial refuses before it opens anything, with the error
// Upgrade returns at its limit.
func TestDialConnLimit(t *testing.T) {
	srv, _ := startServer(t, newRecorder(), engine.Options{})
	d := dialer(t, newRecorder(), engine.Options{MaxConns: 1})
	if _, _, err := d.Dial(context.Background(), "ws://"+srv.Addr().String(), nil); err != nil {
		t.Fatal(err)
	}
	_, _, err := d.Dial(context.Background(), "ws://user:secret@"+srv.Addr().String(), nil)
	if !errors.Is(err, engine.ErrConnLimit) || !strings.Contains(err.Error(), "MaxConns 1") || strings.Contains(err.Error(), "secret") {
		t.Fatalf("dial at the limit: %v", err)
	}
	if st := d.Stats(); st.Conns != 1 || st.Dialed != 1 {
		t.Fatalf("stats %+v", st)
	}

	// Upgrade at its limit: the same error.
	up := startLoops(t, newRecorder(), engine.Options{MaxConns: 1})
	errs := make(chan error, 2)
	addr := httpFront(t, func(w http.ResponseWriter, r *http.Request) {
		_, err := up.Upgrade(w, r, nil)
		errs <- err
	})
	d2 := dialer(t, newRecorder(), engine.Options{})
	for i := 0; i < 2; i++ {
		d2.Dial(context.Background(), "ws://"+addr+"/", nil)
	}
	// The first handler may return after the second: its 101 is out
	// before its Upgrade returns.
	var ok, limit int
	for i := 0; i < 2; i++ {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, engine.ErrConnLimit):
			limit++
		default:
			t.Fatalf("upgrade: %v", err)
		}
	}
	if ok != 1 || limit != 1 {
		t.Fatalf("%d upgrades, %d refused at the limit; want 1 and 1", ok, limit)
	}
}

func TestDialPhaseString(t *testing.T) {
	for p, want := range map[engine.DialPhase]string{
		engine.PhaseDNS: "dns", engine.PhaseConnect: "connect", engine.PhaseProxy: "proxy",
		engine.PhaseTLS: "tls", engine.PhaseHandshake: "handshake", 0: "DialPhase(0)", 99: "DialPhase(99)",
	} {
		if got := p.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", p, got, want)
		}
	}
}
