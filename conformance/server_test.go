package conformance

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
)

// addrEnv names the environment variable that points the suite at an
// external echo server instead of the in-process engine.
const addrEnv = "WSLOOP_CONFORMANCE_ADDR"

// echoHandler echoes every message with its type and counts the lifecycle
// callbacks, so that tests can check that OnClose ran for every OnOpen
// without looking inside the engine.
type echoHandler struct {
	handler.Base

	opens, closes atomic.Int64
	// On the PROXY road, proxied counts the connections whose RemoteAddr
	// is a client a header named, and notProxied those that report the
	// balancer's address instead: the balancer's connections all carry a
	// header, so there must be none.
	proxied, notProxied atomic.Int64

	mu     sync.Mutex
	errs   []error       // the err of every OnClose, in order
	notify chan struct{} // poked (never blocking) after every OnClose
}

func newEchoHandler() *echoHandler {
	return &echoHandler{notify: make(chan struct{}, 1)}
}

// OnOpen counts upgraded connections and, on the PROXY road, checks that
// the connection's address is the one its header gave.
func (h *echoHandler) OnOpen(c handler.Conn) {
	h.opens.Add(1)
	if road == roadProxy {
		var ip netip.Addr
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			ip = ta.AddrPort().Addr().Unmap()
		}
		switch {
		case proxyClients.Contains(ip):
			h.proxied.Add(1)
		case !ip.IsValid() || ip == balancer:
			h.notProxied.Add(1)
		}
	}
}

// proxyClients holds the clients proxyHeader names; balancer is where the
// headers come from.
var (
	proxyClients = netip.MustParsePrefix("198.18.0.0/15")
	balancer     = netip.AddrFrom4([4]byte{127, 0, 0, 1})
)

// OnMessage echoes the message with its type.
func (h *echoHandler) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	// An error here means the connection is closing; the engine reports
	// why through OnClose, which the tests check.
	_ = c.WriteMessage(op, data)
}

// OnClose records why the connection ended and wakes waitCloses.
func (h *echoHandler) OnClose(_ handler.Conn, err error) {
	h.mu.Lock()
	h.errs = append(h.errs, err)
	h.mu.Unlock()
	h.closes.Add(1)
	select {
	case h.notify <- struct{}{}:
	default:
	}
}

// waitCloses waits until OnClose has run at least n times and reports
// whether it did before the timeout. It wakes on every OnClose instead of
// polling.
func (h *echoHandler) waitCloses(n int64, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for h.closes.Load() < n {
		select {
		case <-h.notify:
		case <-deadline.C:
			return h.closes.Load() >= n
		}
	}
	return true
}

// closeErrs returns a copy of the errors OnClose has received so far.
func (h *echoHandler) closeErrs() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.errs...)
}

// startEcho starts an echo server for the test and returns its address.
// When WSLOOP_CONFORMANCE_ADDR is set it returns that address instead and
// starts nothing.
func startEcho(t testing.TB, opts engine.Options) (addr string) {
	addr, _ = startEchoHooks(t, opts)
	return addr
}

// startEchoHooks is startEcho that also returns the handler, to observe the
// server's callbacks. The handler is nil when the suite runs against an
// external server.
func startEchoHooks(t testing.TB, opts engine.Options) (string, *echoHandler) {
	t.Helper()
	if a := os.Getenv(addrEnv); a != "" {
		return a, nil
	}
	opts.MaxMessageSize = 64 << 20
	h := newEchoHandler()
	return serveEcho(t, h, opts), h
}

// serveEcho serves h with opts on the current road and returns the address.
func serveEcho(t testing.TB, h handler.Handler, opts engine.Options) string {
	t.Helper()
	switch road {
	case roadHTTP:
		return startHTTPEcho(t, h, opts)
	case roadTLS, roadTLSBridge:
		opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCertificate(t)}}
	case roadProxy:
		// The balancer is 127.0.0.1: connections from it carry a PROXY
		// header (dialNet), and the per-client limits count the clients
		// the headers name. The scale tests' clients (127.0.0.2 and up)
		// connect directly, as a monitoring probe inside the network
		// would: the limits count them at accept. The limits are ones the
		// suite stays under, so that every connection is counted, checked
		// and released as in production: the scale tests hold 1,000
		// connections per source address (a few more while another
		// test's close), opened as fast as the dialers go.
		opts.ProxyProtocol = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		opts.MaxConnsPerClient = 2 * connsPerSourceIP
		opts.MaxHandshakesPerClient = 2 * connsPerSourceIP
	}
	if road != roadTLSBridge {
		return enginetest.Start(t, h, opts).Addr().String()
	}
	// The fallback must be what serves this pass: the server says so in
	// its log at its first wss connection.
	said := &bridgeLogged{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(said, nil))
	}
	srv := enginetest.Start(t, h, opts)
	t.Cleanup(func() {
		if srv.Stats().TLSHandshakes > 0 && !said.saw.Load() {
			t.Error("wss connections were served, but the server did not log that they went through the bridge")
		}
	})
	return srv.Addr().String()
}

// skipOnBridge skips a test of the compression on the bridge road: the
// bridge carries bytes it does not look at, the other three roads run the
// same codec, and under -race these are the suite's longest tests.
func skipOnBridge(t *testing.T) {
	if road == roadTLSBridge {
		t.Skip("permessage-deflate is the codec's, which the other roads test; the bridge only carries its bytes")
	}
}

// bridgeLogged is a server's log output, watched for the line that says
// wss connections go through the goroutine bridge.
type bridgeLogged struct{ saw atomic.Bool }

func (b *bridgeLogged) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("wss connections go through a bridge")) {
		b.saw.Store(true)
	}
	return len(p), nil
}

// The roads a connection takes to the engine's loops. TestMain runs the whole
// suite once on each: the engine's own listener, then a net/http server
// whose handler calls Server.Upgrade.
const (
	roadNative = "native listener"
	roadHTTP   = "net/http Upgrade"
	roadTLS    = "wss (TLS on the native listener)"
	roadProxy  = "native listener behind a PROXY protocol balancer, with per-client limits"
	// roadTLSBridge is wss on the native listener through the fallback a
	// server takes when its check of crypto/tls fails: forced here
	// (enginetest.ForceTLSBridge), each connection is bridged to its loop
	// by two goroutines.
	roadTLSBridge = "wss through the goroutine bridge (crypto/tls check forced to fail)"
)

// road is the road of the current pass.
var road = roadNative

// roadsEnv picks roads by name (native, http, tls, tlsbridge, proxy),
// comma-separated; all five by default, native and tls with -short.
const roadsEnv = "WSLOOP_CONFORMANCE_ROADS"

func TestMain(m *testing.M) {
	roads := map[string]string{"native": roadNative, "http": roadHTTP, "tls": roadTLS, "tlsbridge": roadTLSBridge, "proxy": roadProxy}
	picked := []string{"native", "http", "tls", "tlsbridge", "proxy"}
	flag.Parse() // for testing.Short
	if testing.Short() {
		picked = []string{"native", "tls"}
	}
	if v := os.Getenv(roadsEnv); v != "" {
		picked = strings.Split(v, ",")
	}
	if os.Getenv(addrEnv) != "" {
		picked = []string{"native"} // an external server: one pass, over TCP
	}
	code := 0
	for _, p := range picked {
		r, ok := roads[p]
		if !ok {
			fmt.Fprintf(os.Stderr, "conformance: unknown road %q in %s\n", p, roadsEnv)
			os.Exit(2)
		}
		road = r
		fmt.Println("conformance: road:", r)
		restore := func() {}
		if r == roadTLSBridge {
			restore = enginetest.ForceTLSBridge()
		}
		if c := m.Run(); c != 0 {
			code = c
		}
		restore()
	}
	os.Exit(code)
}

// dialNet opens the client's connection to addr: TCP, or TLS on the wss
// road (any certificate: the suite tests the server, not the PKI). On the
// PROXY road, a connection from the balancer's address (127.0.0.1, the
// default) first writes the header a balancer would, for a client of its
// own (see proxyHeader).
func dialNet(d *net.Dialer, addr string) (net.Conn, error) {
	if road == roadTLS || road == roadTLSBridge {
		return tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	}
	c, err := d.Dial("tcp", addr)
	if err != nil || road != roadProxy || addrFromEnv() {
		return c, err
	}
	if la, ok := c.LocalAddr().(*net.TCPAddr); !ok || !la.IP.Equal(net.IPv4(127, 0, 0, 1)) {
		return c, nil // a direct client
	}
	if _, err := c.Write(proxyHeader()); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// proxied counts the connections dialed on the PROXY road.
var proxied atomic.Uint32

// proxyHeader returns the next connection's PROXY protocol header: version
// 1 and 2 in turn (2 with an authority TLV), each naming another client in
// 198.18.0.0/15, so that the header, not the socket, is where the server's
// idea of the client comes from. The server sees the header and what
// follows it in one read or in two, as a real balancer's arrive.
func proxyHeader() []byte {
	n := proxied.Add(1)
	h := codec.ProxyHeader{Version: uint8(1 + n%2), Command: codec.ProxyRelay,
		Source:      netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18 + byte(n>>16&1), byte(n >> 8), byte(n)}), uint16(1024+n%60000)),
		Destination: netip.MustParseAddrPort("192.0.2.1:443")}
	if h.Version == 2 {
		h.TLVs = codec.AppendProxyTLV(nil, codec.ProxyTLVAuthority, []byte("conformance.example"))
	}
	return codec.AppendProxyHeader(nil, &h)
}

// tcpConn returns the TCP connection under c (under TLS on the wss road).
func tcpConn(c net.Conn) *net.TCPConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	return c.(*net.TCPConn)
}

var (
	certOnce sync.Once
	cert     tls.Certificate
)

// testCertificate returns a self-signed certificate for 127.0.0.1, made
// once per run.
func testCertificate(t testing.TB) tls.Certificate {
	certOnce.Do(func() { cert, _ = enginetest.Certificate(t) })
	return cert
}

// startHTTPEcho serves h through a net/http server that upgrades every
// request onto the engine's loops (a server without Addr). net/http
// parses the request first, so its header limit is set to the engine's
// (431 past it, from net/http).
func startHTTPEcho(t testing.TB, h handler.Handler, opts engine.Options) string {
	t.Helper()
	srv := engine.New(h, opts)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		MaxHeaderBytes: engine.DefaultMaxHeaderBytes,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = srv.Upgrade(w, r, nil)
		}),
	}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		_ = hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// engineOptions returns the options the suite runs the engine with: the
// defaults, which is what a user gets.
func engineOptions() engine.Options { return engine.Options{} }

// addrFromEnv reports whether the suite runs against an external server.
func addrFromEnv() bool { return os.Getenv(addrEnv) != "" }
