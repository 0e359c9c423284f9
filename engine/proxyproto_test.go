package engine_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
)

// Tests of the PROXY protocol (Options.ProxyProtocol, Server.ProxyListener).
// The "balancer" is the test itself: it dials from a loopback address and
// writes the header a balancer would, naming a client on another address.

// seen is what the server showed the application of one connection.
type seen struct {
	reqRemote     net.Addr // handler.Request.RemoteAddr
	hdr           *codec.ProxyHeader
	remote, local net.Addr // Conn.RemoteAddr, LocalAddr in OnOpen
}

// proxyApp is an Upgrader that records the request and the open
// connection, and echoes.
type proxyApp struct {
	*recorder
	reqs chan seen
}

func newProxyApp() *proxyApp { return &proxyApp{recorder: newRecorder(), reqs: make(chan seen, 64)} }

func (p *proxyApp) OnUpgrade(r *handler.Request, _ *handler.UpgradeResponse) error {
	p.reqs <- seen{reqRemote: r.RemoteAddr, hdr: r.Proxy}
	return nil
}

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(t testing.TB, src, addr string) *wsClient {
	t.Helper()
	d := net.Dialer{Timeout: readTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return newClient(conn)
}

// expectClosed waits for the server to close the connection without
// answering: EOF, or a reset when it closed with bytes unread.
func (c *wsClient) expectClosed(t testing.TB) {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(readTimeout))
	b, err := io.ReadAll(c.br)
	if len(b) > 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("want the connection closed without an answer; got %q, %v", b, err)
	}
}

func header(v uint8, src, dst string, tlvs []byte) []byte {
	h := codec.ProxyHeader{Version: v, Command: codec.ProxyRelay, TLVs: tlvs}
	if src != "" {
		h.Source, h.Destination = netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	}
	return codec.AppendProxyHeader(nil, &h)
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// A trusted balancer's header, in each form and however it is cut, gives
// the client's addresses to OnUpgrade, RemoteAddr and LocalAddr, and the
// v2 TLVs to OnUpgrade; what follows the header in the same read (the
// request and a frame) is served as usual. Both places the addresses can
// live are exercised: gnet's connection, and the connection's own info
// where gnet's fields are not found.
func TestProxyProtocolAddresses(t *testing.T) {
	tlvs := codec.AppendProxyTLV(nil, codec.ProxyTLVAuthority, []byte("chat.example.com"))
	cases := []struct {
		name        string
		hdr         []byte
		chop        int    // write the header this many bytes at a time (0: with the request)
		remote      string // "" for the balancer's own address
		local       string
		authority   string
		wantVersion uint8
	}{
		{"v1", header(1, "203.0.113.7:40001", "198.51.100.1:443", nil), 0, "203.0.113.7:40001", "198.51.100.1:443", "", 1},
		{"v1 IPv6 client", header(1, "[2001:db8::7]:40002", "[2001:db8::1]:443", nil), 0, "[2001:db8::7]:40002", "[2001:db8::1]:443", "", 1},
		{"v1 IPv4-mapped client", []byte("PROXY TCP6 ::ffff:203.0.113.9 ::ffff:198.51.100.1 40003 443\r\n"), 0, "203.0.113.9:40003", "198.51.100.1:443", "", 1},
		{"v2 with TLVs", header(2, "203.0.113.8:40004", "198.51.100.1:443", tlvs), 0, "203.0.113.8:40004", "198.51.100.1:443", "chat.example.com", 2},
		{"v2 byte by byte", header(2, "203.0.113.8:40005", "198.51.100.2:80", tlvs), 1, "203.0.113.8:40005", "198.51.100.2:80", "chat.example.com", 2},
		{"v1 in three pieces", header(1, "203.0.113.7:40006", "198.51.100.1:443", nil), 20, "203.0.113.7:40006", "198.51.100.1:443", "", 1},
		{"v2 LOCAL: a health check keeps the real addresses", header(2, "", "", nil), 0, "", "", "", 2},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), 0, "", "", "", 1},
	}
	for _, inGnet := range []bool{true, false} {
		t.Run(fmt.Sprintf("in gnet's connection %v", inGnet), func(t *testing.T) {
			defer engine.SetProxyAddrsInGnet(inGnet)()
			app := newProxyApp()
			srv, _ := startServer(t, app, engine.Options{ProxyProtocol: loopback})
			addr := srv.Addr().String()
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					c := dialFrom(t, "127.0.0.2", addr)
					frame := codec.AppendMaskedFrame(nil, true, codec.OpText, 0, randomMask(), []byte("after the header"))
					rest := append([]byte(upgradeRequest(addr, "/")), frame...)
					if tc.chop == 0 {
						if _, err := c.conn.Write(append(append([]byte(nil), tc.hdr...), rest...)); err != nil {
							t.Fatal(err)
						}
					} else {
						for h := tc.hdr; len(h) > 0; h = h[min(tc.chop, len(h)):] {
							if _, err := c.conn.Write(h[:min(tc.chop, len(h))]); err != nil {
								t.Fatal(err)
							}
						}
						if _, err := c.conn.Write(rest); err != nil {
							t.Fatal(err)
						}
					}
					if err := c.readResponse(); err != nil || c.resp.StatusCode != http.StatusSwitchingProtocols {
						t.Fatalf("upgrade: %v %v %q", c.resp, err, c.body)
					}
					if f, err := c.read(readTimeout); err != nil || string(f.data) != "after the header" {
						t.Fatalf("echo of the frame sent with the header: %v, %v", f, err)
					}
					req := waitN(t, app.reqs, 1, readTimeout)[0]
					conn := waitN(t, app.opened, 1, readTimeout)[0]
					wantRemote, wantLocal := tc.remote, tc.local
					if wantRemote == "" { // the socket's own addresses
						wantRemote, wantLocal = c.conn.LocalAddr().String(), addr
					}
					if got := req.reqRemote.String(); got != wantRemote {
						t.Errorf("Request.RemoteAddr = %s, want %s", got, wantRemote)
					}
					if got := conn.RemoteAddr().String(); got != wantRemote {
						t.Errorf("Conn.RemoteAddr = %s, want %s", got, wantRemote)
					}
					if got := conn.LocalAddr().String(); got != wantLocal {
						t.Errorf("Conn.LocalAddr = %s, want %s", got, wantLocal)
					}
					if req.hdr == nil || req.hdr.Version != tc.wantVersion || req.hdr.Authority() != tc.authority {
						t.Errorf("Request.Proxy = %+v, want version %d, authority %q", req.hdr, tc.wantVersion, tc.authority)
					}
					c.closeCleanly(t)
				})
			}
			st := srv.Stats()
			if st.ProxyHeaders != int64(len(cases)) || len(st.ProxyRefused) != 0 {
				t.Errorf("Stats: ProxyHeaders %d (want %d), ProxyRefused %v", st.ProxyHeaders, len(cases), st.ProxyRefused)
			}
		})
	}
}

// A trusted peer that sends no header, a malformed, oversized or truncated
// one, or one that does not complete within HandshakeTimeout, is closed
// without an answer and counted under its label. The timeout runs on the
// server's clock, from accept.
func TestProxyProtocolRefused(t *testing.T) {
	const timeout = 4 * time.Second
	srv, clk, opened := startClocked(t, newRecorder(), engine.Options{ProxyProtocol: loopback, HandshakeTimeout: timeout, MaxHeaderBytes: 1024})
	addr := srv.Addr().String()
	oversized := header(2, "203.0.113.7:1", "198.51.100.1:2", codec.AppendProxyTLV(nil, 0xE0, make([]byte, 1100)))
	for _, tc := range []struct {
		label string
		send  []byte
		end   func(c *wsClient) // after sending: what ends the header
	}{
		{"missing", []byte(upgradeRequest(addr, "/")), nil},
		{"malformed", []byte("PROXY TCP4 203.0.113.7 198.51.100.1 01 443\r\n"), nil},
		{"malformed", []byte("PROXY TCP4 203.0.113.x"), nil}, // refused before its end
		{"oversized", oversized[:20], nil},                   // refused from its length field
		{"truncated", header(2, "203.0.113.7:1", "198.51.100.1:2", nil)[:20], func(c *wsClient) {
			_ = c.conn.(*net.TCPConn).CloseWrite()
		}},
		{"timeout", []byte("PROXY TCP4 203.0.113.7 "), func(*wsClient) {
			clk.Advance(timeout - time.Second)
			if st := srv.Stats(); st.ProxyRefused["timeout"] != 0 {
				t.Fatalf("timed out early: %v", st.ProxyRefused)
			}
			clk.Advance(2 * time.Second)
		}},
	} {
		t.Run(tc.label, func(t *testing.T) {
			before := srv.Stats().ProxyRefused[tc.label]
			c := dialFrom(t, "127.0.0.3", addr)
			waitN(t, opened, 1, readTimeout)
			if _, err := c.conn.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.end != nil {
				tc.end(c)
			}
			c.expectClosed(t)
			if got := srv.Stats().ProxyRefused; got[tc.label] != before+1 {
				t.Fatalf("ProxyRefused = %v, want %q counted once more", got, tc.label)
			}
		})
	}
	if st := srv.Stats(); st.Open != 0 || st.ProxyHeaders != 0 || len(st.ProxyRefused) != 5 {
		t.Errorf("Stats: Open %d, ProxyHeaders %d, ProxyRefused %v", st.Open, st.ProxyHeaders, st.ProxyRefused)
	}
}

// A peer outside the trusted networks is served directly, with its own
// address, and a header it sends is refused with 400 and counted.
func TestProxyProtocolUntrusted(t *testing.T) {
	app := newProxyApp()
	srv, _ := startServer(t, app, engine.Options{ProxyProtocol: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	addr := srv.Addr().String()

	c := dialFrom(t, "127.0.0.4", addr)
	if err := c.request(string(header(1, "203.0.113.7:1", "198.51.100.1:2", nil)) + upgradeRequest(addr, "/")); err != nil {
		t.Fatal(err)
	}
	if c.resp.StatusCode != http.StatusBadRequest || !strings.Contains(c.body, "not trusted") {
		t.Fatalf("got %s %q, want 400 saying the address is not trusted", c.resp.Status, c.body)
	}
	if st := srv.Stats(); st.ProxyRefused["untrusted"] != 1 {
		t.Errorf("ProxyRefused = %v", st.ProxyRefused)
	}

	d := dialFrom(t, "127.0.0.4", addr)
	if err := d.request(upgradeRequest(addr, "/")); err != nil || d.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("a direct client: %v %v", d.resp, err)
	}
	if got := waitN(t, app.opened, 1, readTimeout)[0].RemoteAddr().String(); got != d.conn.LocalAddr().String() {
		t.Errorf("RemoteAddr = %s, want the socket's %s", got, d.conn.LocalAddr())
	}
	if r := waitN(t, app.reqs, 1, readTimeout)[0]; r.hdr != nil { // the refused one never reached OnUpgrade
		t.Errorf("Request.Proxy = %+v for a direct client", r.hdr)
	}
}

// wss behind a balancer: the header comes before the TLS handshake, the
// client's address is the one the header gave, and an untrusted peer's
// header before a ClientHello closes the connection.
func TestProxyProtocolTLS(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		t.Run(fmt.Sprintf("trusted %v", trusted), func(t *testing.T) {
			nets := loopback
			if !trusted {
				nets = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
			}
			app := newProxyApp()
			srv, _ := startServer(t, app, engine.Options{ProxyProtocol: nets, TLSConfig: enginetest.TLSConfig(t)})
			addr := srv.Addr().String()
			raw := dialFrom(t, "127.0.0.5", addr)
			if _, err := raw.conn.Write(header(2, "[2001:db8::5]:4433", "[2001:db8::1]:443", nil)); err != nil {
				t.Fatal(err)
			}
			tc := tls.Client(raw.conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			_ = tc.SetDeadline(time.Now().Add(readTimeout))
			err := tc.Handshake()
			if !trusted {
				if err == nil {
					t.Fatal("TLS handshake after an untrusted header succeeded")
				}
				if st := srv.Stats(); st.ProxyRefused["untrusted"] != 1 {
					t.Errorf("ProxyRefused = %v", st.ProxyRefused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c, err := upgrade(tc, addr, "/")
			if err != nil {
				t.Fatal(err)
			}
			if got := waitN(t, app.opened, 1, readTimeout)[0].RemoteAddr().String(); got != "[2001:db8::5]:4433" {
				t.Errorf("RemoteAddr = %s", got)
			}
			c.closeCleanly(t)
		})
	}
}

// connCtxKey carries a net/http connection to its handlers.
type connCtxKey struct{}

// The net/http road: an http.Server on a ProxyListener. The header's
// client is r.RemoteAddr in net/http and the connection's RemoteAddr after
// Upgrade, its TLVs are found through ProxyHeaderOf, and what came after
// the header (the request and a frame in the same write) reaches the
// engine's loop in order. A header from an untrusted peer fails the
// connection; one that never completes is cut at HandshakeTimeout (a
// socket deadline: this road is not on the loops, so its timeout is the
// wall clock's, and the test waits for it).
func TestProxyListener(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls %v", useTLS), func(t *testing.T) {
			rec := newRecorder()
			srv := engine.New(rec, engine.Options{ProxyProtocol: []netip.Prefix{netip.MustParsePrefix("127.0.0.6/32")},
				HandshakeTimeout: 300 * time.Millisecond, Logger: discardLogger})
			if err := srv.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			serveUntilCleanup(t, srv)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			type reqInfo struct {
				remote string
				hdr    *codec.ProxyHeader
			}
			reqs := make(chan reqInfo, 8)
			hs := &http.Server{
				ConnContext: func(ctx context.Context, c net.Conn) context.Context {
					return context.WithValue(ctx, connCtxKey{}, c)
				},
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					reqs <- reqInfo{r.RemoteAddr, engine.ProxyHeaderOf(r.Context().Value(connCtxKey{}).(net.Conn))}
					_, _ = srv.Upgrade(w, r, nil)
				}),
				ErrorLog: log.New(io.Discard, "", 0), // TLS handshakes the test fails on purpose
			}
			pln := srv.ProxyListener(ln)
			if useTLS {
				pln = tls.NewListener(pln, enginetest.TLSConfig(t))
			}
			go func() { _ = hs.Serve(pln) }()
			t.Cleanup(func() { _ = hs.Close() }) // before the server's Shutdown
			wrap := func(c *wsClient) net.Conn {
				if !useTLS {
					return c.conn
				}
				tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
				_ = tc.SetDeadline(time.Now().Add(readTimeout))
				return tc
			}

			tlvs := codec.AppendProxyTLV(nil, codec.ProxyTLVAuthority, []byte("api.example.com"))
			raw := dialFrom(t, "127.0.0.6", addr)
			frame := codec.AppendMaskedFrame(nil, true, codec.OpBinary, 0, randomMask(), []byte("pipelined"))
			if _, err := raw.conn.Write(header(2, "203.0.113.60:5000", "198.51.100.6:443", tlvs)); err != nil {
				t.Fatal(err)
			}
			conn := wrap(raw)
			c := newClient(conn)
			if _, err := io.WriteString(conn, upgradeRequest(addr, "/")+string(frame)); err != nil {
				t.Fatal(err)
			}
			if err := c.readResponse(); err != nil || c.resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %v %v", c.resp, err)
			}
			if f, err := c.read(readTimeout); err != nil || string(f.data) != "pipelined" {
				t.Fatalf("echo of the pipelined frame: %v, %v", f, err)
			}
			ri := waitN(t, reqs, 1, readTimeout)[0]
			if ri.remote != "203.0.113.60:5000" || ri.hdr == nil || ri.hdr.Authority() != "api.example.com" {
				t.Errorf("net/http saw RemoteAddr %s, header %+v", ri.remote, ri.hdr)
			}
			if got := waitN(t, rec.opened, 1, readTimeout)[0].RemoteAddr().String(); got != "203.0.113.60:5000" {
				t.Errorf("Conn.RemoteAddr = %s", got)
			}
			c.closeCleanly(t)

			// From 127.0.0.7, not trusted: a header is refused.
			u := dialFrom(t, "127.0.0.7", addr)
			if _, err := u.conn.Write(header(1, "203.0.113.61:1", "198.51.100.6:443", nil)); err != nil {
				t.Fatal(err)
			}
			if useTLS {
				if err := wrap(u).(*tls.Conn).Handshake(); err == nil {
					t.Error("TLS after an untrusted header succeeded")
				}
			} else {
				if _, err := io.WriteString(u.conn, upgradeRequest(addr, "/")); err != nil {
					t.Fatal(err)
				}
				u.expectClosed(t)
			}
			// From the balancer, a header that stops halfway.
			s := dialFrom(t, "127.0.0.6", addr)
			if _, err := s.conn.Write([]byte("PROXY TCP4 203.0.113.62")); err != nil {
				t.Fatal(err)
			}
			s.expectClosed(t) // when the server gives up on it
			st := srv.Stats()
			if st.ProxyHeaders != 1 || st.ProxyRefused["untrusted"] != 1 || st.ProxyRefused["timeout"] != 1 {
				t.Errorf("Stats: ProxyHeaders %d, ProxyRefused %v", st.ProxyHeaders, st.ProxyRefused)
			}
		})
	}
}
