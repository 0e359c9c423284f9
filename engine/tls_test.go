package engine_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
)

// testCert makes a self-signed certificate for 127.0.0.1.
func testCert(t testing.TB) tls.Certificate {
	t.Helper()
	cert, _ := enginetest.Certificate(t)
	return cert
}

// dialWSS opens a wss connection, with the given TLS version, and upgrades.
func dialWSS(t testing.TB, addr, path string, version uint16) (*wsClient, *tls.Conn) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: version, MaxVersion: version, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c, err := upgrade(conn, addr, path)
	if err != nil {
		t.Fatal(err)
	}
	return c, conn
}

// wss serves the WebSocket protocol over TLS 1.2 and 1.3 on the loops:
// echo of every size, pings, a coded close with close_notify, ALPN.
func TestTLSEcho(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	cert := testCert(t)
	srv, _ := startServer(t, h, engine.Options{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	addr := srv.Addr().String()
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			c, conn := dialWSS(t, addr, "/", v)
			if st := conn.ConnectionState(); st.Version != v || st.NegotiatedProtocol != "http/1.1" {
				t.Errorf("version %x, ALPN %q", st.Version, st.NegotiatedProtocol)
			}
			c.roundTrip(t, "hello over TLS")
			wssExchange(t, c, h)
		})
	}
	if st := srv.Stats(); st.TLSHandshakes != 2 {
		t.Errorf("TLSHandshakes %d", st.TLSHandshakes)
	}
	h.check(t)
}

// wssExchange checks what a wss connection to an echo server does: echoes
// of every size, a ping answered, and a coded close answered, followed by
// close_notify, with OnClose reporting the client's code.
func wssExchange(t *testing.T, c *wsClient, h *recorder) {
	t.Helper()
	for _, n := range []int{0, 125, 16 << 10, 100 << 10, 1 << 20} {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		if err := c.send(codec.OpBinary, msg); err != nil {
			t.Fatal(err)
		}
		if f, err := c.read(readTimeout); err != nil || !bytes.Equal(f.data, msg) {
			t.Fatalf("echo of %d bytes: %d bytes, %v", n, len(f.data), err)
		}
	}
	if err := c.send(codec.OpPing, []byte("p")); err != nil {
		t.Fatal(err)
	}
	c.expect(t, codec.OpPong, "p")
	if err := c.sendClose(4001, "bye"); err != nil {
		t.Fatal(err)
	}
	c.expectClose(t, 4001)
	// close_notify, then EOF: a clean TLS close, not a cut.
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Errorf("after the close frame: %v, want io.EOF (close_notify)", err)
	}
	ev := h.waitClose(t)
	var ce *handler.CloseError
	if !errors.As(ev.err, &ce) || ce.Code != 4001 || !ce.Remote {
		t.Errorf("OnClose %v", ev.err)
	}
}

// Certificates come from GetCertificate at every handshake, so they can be
// rotated without a restart.
func TestTLSCertificateRotation(t *testing.T) {
	t.Parallel()
	var current atomic.Int64
	certs := []tls.Certificate{testCert(t), testCert(t)}
	cfg := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return &certs[current.Load()], nil
	}}
	srv, _ := startServer(t, newRecorder(), engine.Options{TLSConfig: cfg})
	addr := srv.Addr().String()
	for i := range certs {
		current.Store(int64(i))
		c, conn := dialWSS(t, addr, "/", tls.VersionTLS13)
		if got := conn.ConnectionState().PeerCertificates[0].Raw; !bytes.Equal(got, certs[i].Certificate[0]) {
			t.Errorf("connection %d was served another certificate", i)
		}
		c.roundTrip(t, "rotated")
	}
}

// expectHTTPSRefusal sends a plain HTTP upgrade to the wss listener at addr
// and expects the 400 that tells the client to use HTTPS.
func expectHTTPSRefusal(t *testing.T, addr string) {
	t.Helper()
	c, err := dialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	if err := c.request(upgradeRequest(addr, "/")); err != nil {
		t.Fatal(err)
	}
	if c.resp.StatusCode != http.StatusBadRequest || !strings.Contains(c.body, "HTTPS") {
		t.Errorf("%s %q", c.resp.Status, c.body)
	}
}

// What a client does wrong on the TLS port gets a clear answer and costs
// nothing lasting.
func TestTLSBadInput(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	cfg := &tls.Config{Certificates: []tls.Certificate{testCert(t)}}
	srv, clk, _ := startClocked(t, h, engine.Options{TLSConfig: cfg, HandshakeTimeout: 8 * time.Second})
	addr := srv.Addr().String()

	t.Run("plain HTTP", func(t *testing.T) { expectHTTPSRefusal(t, addr) })
	t.Run("garbage", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// A handshake record header announcing more than a record may hold.
		if _, err := conn.Write([]byte{0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(readTimeout))
		if _, err := io.ReadAll(conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("read: %v", err)
		}
	})
	t.Run("garbage after the handshake", func(t *testing.T) {
		c, conn := dialWSS(t, addr, "/", tls.VersionTLS13)
		c.roundTrip(t, "fine so far")
		h.waitOpen(t)
		// An application data record that does not decrypt.
		raw := tlsRawConn(conn)
		if _, err := raw.Write([]byte{0x17, 0x03, 0x03, 0x00, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}); err != nil {
			t.Fatal(err)
		}
		if ev := h.waitClose(t); ev.err == nil {
			t.Error("OnClose without a cause")
		}
	})
	t.Run("silent client", func(t *testing.T) {
		before := runtime.NumGoroutine()
		var conns []net.Conn
		for i := 0; i < 100; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		waitFor(t, "the silent connections to be adopted", func() bool { return srv.Stats().Conns >= 100 })
		if grew := runtime.NumGoroutine() - before; grew > 10 {
			t.Errorf("100 silent TLS clients cost %d goroutines", grew)
		}
		clk.Advance(10 * time.Second)
		for _, c := range conns {
			_ = c.SetReadDeadline(time.Now().Add(readTimeout))
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("a silent client got bytes")
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("a silent client was not disconnected at the handshake timeout")
			}
			c.Close()
		}
	})
	st := srv.Stats()
	if st.TLSFailures["not tls"] != 1 || st.TLSFailures["timeout"] != 100 || st.TLSFailures["bad record"] != 1 {
		t.Errorf("TLSFailures %v", st.TLSFailures)
	}
	h.check(t)
}

// tlsRawConn returns the TCP connection under a client tls.Conn, to write
// bytes that are not TLS.
func tlsRawConn(c *tls.Conn) net.Conn { return c.NetConn() }

// clientHello captures the first flight of a TLS 1.3 client.
func clientHello(t testing.TB) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		_ = tls.Client(a, &tls.Config{InsecureSkipVerify: true}).Handshake()
	}()
	buf := make([]byte, 4096)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	b.Close()
	return buf[:n]
}

// 2,000 clients send a ClientHello and stall, with the handshake cap at
// 100; 50 live clients connecting during the stall all complete their
// handshakes within twice the handshake timeout, and goroutines stay
// bounded by the cap meanwhile.
func TestTLSStalledHandshakes(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 connections")
	}
	const stalled, live, cap = 2000, 50, 100
	const timeout = 8 * time.Second
	h := newRecorder()
	cfg := &tls.Config{Certificates: []tls.Certificate{testCert(t)}}
	srv, clk, _ := startClocked(t, h, engine.Options{TLSConfig: cfg, HandshakeTimeout: timeout, MaxTLSHandshakes: cap, EventLoops: 2})
	addr := srv.Addr().String()
	hello := clientHello(t)
	before := runtime.NumGoroutine()

	conns := make([]net.Conn, 0, stalled)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < stalled; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the stalled connections to be adopted", func() bool { return srv.Stats().Conns >= stalled })
	waitFor(t, "the stalled handshakes to start", func() bool { return runtime.NumGoroutine()-before >= cap-5 })
	if n := runtime.NumGoroutine() - before; n > cap+10 {
		t.Errorf("%d goroutines for %d stalled handshakes, cap %d", n, stalled, cap)
	}
	clk.Advance(timeout / 2)

	// The live clients connect while the stall goes on.
	var wg sync.WaitGroup
	errs := make(chan error, live)
	done := make(chan struct{}, live)
	for i := 0; i < live; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			c, err := upgrade(conn, addr, "/")
			if err != nil {
				errs <- err
				return
			}
			done <- struct{}{}
			if err := c.send(codec.OpText, []byte("live")); err != nil {
				errs <- err
				return
			}
			if f, err := c.read(readTimeout); err != nil || string(f.data) != "live" {
				errs <- errors.New("no echo")
			}
		}()
	}
	waitFor(t, "the live clients to be adopted", func() bool { return srv.Stats().Conns >= stalled+live })
	// The stalled ones reach their handshake timeout; the live ones, which
	// came later, get the handshake goroutines then.
	clk.Advance(timeout/2 + 2*time.Second)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(done) != live {
		t.Errorf("%d of %d live clients completed their handshake", len(done), live)
	}
	st := srv.Stats()
	if st.TLSHandshakes != live || st.TLSFailures["timeout"]+st.TLSFailures["closed"] < stalled {
		t.Errorf("TLSHandshakes %d, TLSFailures %v", st.TLSHandshakes, st.TLSFailures)
	}
	waitFor(t, "the handshake goroutines to end", func() bool { return runtime.NumGoroutine() <= before+live })
}

// Broadcast over wss encodes the frame once and encrypts it per connection;
// a drain sends 1001 and close_notify.
func TestTLSBroadcastAndDrain(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	cfg := &tls.Config{Certificates: []tls.Certificate{testCert(t)}}
	srv, served := startServer(t, h, engine.Options{TLSConfig: cfg})
	addr := srv.Addr().String()
	var clients []*wsClient
	for i := 0; i < 20; i++ {
		c, _ := dialWSS(t, addr, "/", tls.VersionTLS13)
		clients = append(clients, c)
	}
	waitN(t, h.opened, 20, readTimeout)
	srv.BroadcastAll(codec.NewPreparedFrame(codec.OpText, []byte("to all")))
	for _, c := range clients {
		c.expect(t, codec.OpText, "to all")
	}
	go func() { _ = srv.Shutdown(t.Context()) }()
	for _, c := range clients {
		c.expectClose(t, codec.CloseGoingAway)
		_ = c.sendClose(codec.CloseGoingAway, "")
		if _, err := c.br.ReadByte(); err != io.EOF {
			t.Errorf("after the drain: %v, want io.EOF (close_notify)", err)
		}
	}
	<-served
}

// BenchmarkTLSStalledHandshake reports what a handshake that stalled after
// its ClientHello costs the server while it waits for the handshake
// timeout: heap and goroutine stack per stalled handshake, with every one
// of them on a handshake goroutine (the cap set to their number).
//
//	go test -run=^$ -bench=TLSStalledHandshake -benchtime=1x ./engine
func BenchmarkTLSStalledHandshake(b *testing.B) {
	const n = 500
	cfg := &tls.Config{Certificates: []tls.Certificate{testCert(b)}}
	srv, _ := startServer(b, newRecorder(), engine.Options{TLSConfig: cfg, MaxTLSHandshakes: n, EventLoops: 1})
	addr := srv.Addr().String()
	hello := clientHello(b)
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		conns := make([]net.Conn, 0, n)
		for j := 0; j < n; j++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
			if _, err := c.Write(hello); err != nil {
				b.Fatal(err)
			}
		}
		deadline := time.Now().Add(readTimeout)
		for runtime.NumGoroutine()-g0 < n-5 && time.Now().Before(deadline) {
			<-time.After(time.Millisecond) // a poll: nothing announces a goroutine blocking
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
		stack := float64(after.StackInuse) - float64(before.StackInuse)
		b.ReportMetric(heap/n, "heap-B/stalled")
		b.ReportMetric(stack/n, "stack-B/stalled")
		b.ReportMetric(float64(runtime.NumGoroutine()-g0)/n, "goroutines/stalled")
		for _, c := range conns {
			c.Close()
		}
	}
}

// The two crypto/tls buffers an idle wss connection must not keep are found
// in this Go release. If a release renames them, wss still works but idle
// connections keep the largest record they read: this test says so.
func TestTLSBuffersFound(t *testing.T) {
	if !engine.TLSBuffersFound() {
		t.Fatal("crypto/tls's Conn.rawInput and Conn.hand were not found: idle wss connections keep their record buffers (engine/internal/tlsbuf)")
	}
}

// After a 16 KiB message in full-size records, an idle wss connection holds
// no record buffer and no handshake buffer of crypto/tls's; and records that
// arrive in pieces of any size, over TLS 1.2 and 1.3, still decode.
func TestTLSRecordBuffers(t *testing.T) {
	t.Parallel()
	if !engine.TLSBuffersFound() {
		t.Skip("crypto/tls buffers not found in this Go release")
	}
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{TLSConfig: enginetest.TLSConfig(t)})
	addr := srv.Addr().String()
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			raw, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			pieces := &choppy{Conn: raw}
			conn := tls.Client(pieces, &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v, DynamicRecordSizingDisabled: true})
			defer conn.Close()
			c, err := upgrade(conn, addr, "/")
			if err != nil {
				t.Fatal(err)
			}
			sc := h.waitOpen(t)
			big := bytes.Repeat([]byte("r"), 16<<10)
			for _, msg := range [][]byte{[]byte("small"), big, bytes.Repeat([]byte("m"), 100<<10)} {
				if err := c.send(codec.OpBinary, msg); err != nil {
					t.Fatal(err)
				}
				if f, err := c.read(readTimeout); err != nil || !bytes.Equal(f.data, msg) {
					t.Fatalf("echo of %d bytes in pieces: %d bytes, %v", len(msg), len(f.data), err)
				}
			}
			if record, hand := engine.TLSBuffersHeld(sc); record != 0 || hand != 0 {
				t.Errorf("idle after a 100 KiB message: crypto/tls keeps %d bytes of record buffer and %d of handshake buffer", record, hand)
			}
		})
	}
}

// choppy writes what it is given in pieces of 1 to 3000 bytes, each its own
// write(2), so records reach the server split at every possible place.
type choppy struct {
	net.Conn
	i int
}

func (c *choppy) Write(p []byte) (int, error) {
	sizes := []int{1, 7, 3000, 2, 512, 5, 1400}
	n := 0
	for n < len(p) {
		k := min(sizes[c.i%len(sizes)], len(p)-n)
		c.i++
		m, err := c.Conn.Write(p[n : n+k])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
