package engine

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// The client: connections this side dials.
//
// A dialed connection lives on the server's event loops like an accepted
// one and shares all of its machinery: the Handler callbacks, the write
// path, the timers and limits, Stats. Only the opening is different. The
// DNS lookup, the TCP connect, the tunnel through a proxy (proxyproto.go), the
// TLS handshake and the upgrade exchange run on the goroutine that calls
// Dial, blocking, bounded by its context and the handshake timeout; then
// the socket is handed to a loop through the one adoption path
// (accept.go), with what the handshake decided (the subprotocol,
// permessage-deflate, the TLS session) and what was read past the 101
// response (or past the proxy's answer, unread). From then on the
// connection is its small state and nothing else: no goroutine.
//
// What a client does differently on the loop (sClient): every frame it
// sends is masked with a fresh key (write.go, newMask), which costs a copy
// of frames shared between connections (WritePrepared, Broadcast); its
// decoder reads unmasked frames and fails a masked one with 1002; and it
// lets the server close the TCP connection first (close.go,
// awaitServerClose).

// DialOptions are the choices [Server.Dial] makes for one connection. The
// zero value (or nil) dials with the server's handler and limits, no
// subprotocol or extension, and through the proxy the environment names,
// if any (see Proxy).
type DialOptions struct {
	// Handler receives the connection's events; nil means the server's.
	// If it implements handler.StreamHandler, messages arrive in chunks.
	Handler handler.Handler
	// Header holds extra request header lines: Authorization, Cookie,
	// Origin, User-Agent. A Host entry replaces the Host line. It may
	// not set the headers the handshake writes itself (Upgrade,
	// Connection, Sec-WebSocket-Key, -Version, -Extensions).
	Header http.Header
	// Subprotocols are offered in this order of preference (RFC 6455
	// §4.1); Conn.Subprotocol says which one the server chose, "" for
	// none. A server that answers with one that was not offered fails
	// the dial.
	Subprotocols []string
	// Deflate offers permessage-deflate (RFC 7692) with no context
	// takeover in either direction, so that a connection keeps no
	// compression state between messages, and with client_max_window_bits
	// (any window the server asks for is honoured). Messages are
	// compressed as the server's own are: at Options.Deflate's Level,
	// from its Threshold on.
	Deflate bool
	// TLSConfig configures wss://. nil means the system's roots and the
	// URL's host as ServerName; ALPN offers http/1.1 unless NextProtos is
	// set. InsecureSkipVerify skips the certificate checks (for tests and
	// self-signed servers only). An https:// proxy is verified with the
	// same settings, with its own host as ServerName.
	TLSConfig *tls.Config
	// Context becomes the connection's Context before OnOpen runs.
	Context any
	// MaxMessageSize overrides Options.MaxMessageSize for this connection
	// when positive.
	MaxMessageSize int64
	// HandshakeTimeout bounds the whole dial, DNS lookup to 101; 0 means
	// Options.HandshakeTimeout (10 s by default). The context passed to
	// Dial bounds it too.
	HandshakeTimeout time.Duration
	// Resolver looks up the addresses of the host, or of the proxy's
	// host; nil means net.DefaultResolver. The TCP connection is opened
	// by a net.Dialer with this resolver, as net/http opens one: the
	// addresses are tried in the resolver's order with IPv4/IPv6
	// fallback ("Happy Eyeballs", RFC 6555), each given a share of the
	// time left, so one address that does not answer does not use up
	// the whole dial.
	Resolver *net.Resolver
	// NetDialContext, when set, opens the TCP connection instead of the
	// resolver and a net.Dialer (a chosen source address, a tunnel of
	// one's own). It is given the proxy's address when a proxy is used.
	// It must return a *net.TCPConn or a *net.UnixConn, which the event
	// loops can adopt. Its failures are reported as the connect phase (or
	// the DNS phase, for a *net.DNSError).
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Proxy returns the proxy to dial through for a request, as
	// net/http's Transport.Proxy does, or nil for none. The request it
	// gets has the URL with the scheme http for ws:// and https for
	// wss://, so that http.ProxyURL and http.ProxyFromEnvironment work
	// unchanged, and the handshake's Header.
	//
	// nil means the environment's proxy, as for net/http's
	// DefaultTransport and gorilla's DefaultDialer: HTTPS_PROXY for
	// wss://, HTTP_PROXY for ws://, except for the hosts NO_PROXY names,
	// and never for localhost or a loopback address (see
	// http.ProxyFromEnvironment; it reads the environment once per
	// process). To dial directly whatever the environment says, set
	// Proxy to a function that returns nil, nil.
	//
	// Proxy URL schemes: http (HTTP CONNECT, RFC 9110 §9.3.6; user info
	// in the URL is sent as Proxy-Authorization: Basic), https (the same
	// over TLS to the proxy, verified with TLSConfig's roots; ws:// only:
	// wss:// through an https proxy would need TLS inside TLS, which the
	// event loops do not run), socks5 and socks5h (RFC 1928, with the
	// username and password of RFC 1929 from the user info; both let the
	// proxy resolve the host). The proxy's failures are reported as the
	// proxy phase; reaching it, as the DNS and connect phases.
	Proxy func(*http.Request) (*url.URL, error)

	// Test hooks: control runs before each connect attempt, with the
	// address; nonce, when set, is the Sec-WebSocket-Key's nonce instead
	// of a random one, so that a test can answer before the request.
	control func(address string)
	nonce   *[16]byte
}

// DialPhase names the part of a dial that failed, in a [DialError].
type DialPhase uint8

// The phases of a dial, in the order they run.
const (
	PhaseDNS       DialPhase = iota + 1 // resolving the addresses of the host (or of the proxy)
	PhaseConnect                        // the TCP connect (to the host, or to the proxy)
	PhaseProxy                          // choosing the proxy, and the exchange that opens a tunnel through it
	PhaseTLS                            // the TLS handshake (wss://)
	PhaseHandshake                      // the HTTP upgrade request and its 101 response
)

var phaseNames = [...]struct{ short, long string }{
	PhaseDNS:       {"dns", "DNS lookup"},
	PhaseConnect:   {"connect", "connect"},
	PhaseProxy:     {"proxy", "proxy"},
	PhaseTLS:       {"tls", "TLS handshake"},
	PhaseHandshake: {"handshake", "WebSocket handshake"},
}

// String returns the phase's short name: "dns", "connect", "proxy", "tls"
// or "handshake", fit for a log field or a metric label.
func (p DialPhase) String() string {
	if int(p) < len(phaseNames) && p != 0 {
		return phaseNames[p].short
	}
	return "DialPhase(" + strconv.Itoa(int(p)) + ")"
}

// describe names the phase in an error message.
func (p DialPhase) describe() string {
	if int(p) < len(phaseNames) && p != 0 {
		return phaseNames[p].long
	}
	return p.String()
}

// DialError is returned by [Server.Dial] when the connection could not be
// opened: the URL, the phase that failed, and why. A phase that ran out of
// time says so (Timeout reports true, and errors.Is(err,
// context.DeadlineExceeded) holds), as does a dial whose context was
// canceled. A server that answered the upgrade with another status than
// 101 gives a *[UpgradeStatusError] instead.
type DialError struct {
	URL   string
	Phase DialPhase
	Err   error
}

func (e *DialError) Error() string {
	name := e.Phase.describe()
	var te *dialTimeout
	switch {
	case errors.As(e.Err, &te):
		return fmt.Sprintf("wsloop: dial %s: %s timed out: %v", e.URL, name, e.Err)
	case errors.Is(e.Err, context.DeadlineExceeded):
		return fmt.Sprintf("wsloop: dial %s: %s timed out: the context's deadline passed", e.URL, name)
	case errors.Is(e.Err, context.Canceled):
		return fmt.Sprintf("wsloop: dial %s: %s canceled: %v", e.URL, name, e.Err)
	}
	return fmt.Sprintf("wsloop: dial %s: %s: %v", e.URL, name, e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// Timeout reports whether the dial failed because its time ran out.
func (e *DialError) Timeout() bool {
	if errors.Is(e.Err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout()
}

// dialTimeout is the cause of a dial's context when the handshake timeout
// passes.
type dialTimeout struct{ d time.Duration }

func (t *dialTimeout) Error() string {
	return "the handshake timeout (" + t.d.String() + ") passed"
}
func (t *dialTimeout) Timeout() bool        { return true }
func (t *dialTimeout) Is(target error) bool { return target == context.DeadlineExceeded }

// maxErrorBody is how much of the body of a non-101 answer an
// UpgradeStatusError keeps.
const maxErrorBody = 1 << 10

// UpgradeStatusError is returned by [Server.Dial] when the server answered the
// upgrade request with a status other than 101: what it said, so that the
// caller can tell a wrong path (404) from missing credentials (401, 403)
// or a server at its limit (503). Redirects (3xx) are not followed; the
// error says so and gives the Location.
type UpgradeStatusError struct {
	URL        string
	StatusCode int
	Status     string // e.g. "403 Forbidden"
	Header     http.Header
	// Body holds up to the first KiB of the response body.
	Body []byte
}

func (e *UpgradeStatusError) Error() string {
	if e.StatusCode >= 300 && e.StatusCode < 400 {
		loc := e.Header.Get("Location")
		if loc == "" {
			loc = "(none)"
		}
		return fmt.Sprintf("wsloop: dial %s: redirect not followed: the server answered %s, Location: %s", e.URL, e.Status, loc)
	}
	msg := fmt.Sprintf("wsloop: dial %s: the server answered %s instead of 101 Switching Protocols", e.URL, e.Status)
	if body := strings.TrimSpace(string(e.Body)); body != "" {
		if len(body) > 200 {
			body = body[:200] + "..."
		}
		msg += ": " + strconv.Quote(body)
	}
	return msg
}

// ErrDialScheme is returned by Dial for a URL whose scheme is not ws or wss.
var ErrDialScheme = errors.New("wsloop: dial: the URL's scheme must be ws or wss")

// ErrConnLimit is the error of a connection refused because the server
// holds Options.MaxConns connections already. Upgrade returns it itself,
// after answering 503 with Retry-After (it is a *codec.HandshakeError that
// says so); Dial returns an error for which errors.Is(err, ErrConnLimit)
// holds, before it opens anything.
var ErrConnLimit error = errConnLimit

// connLimitError is Dial's error at Options.MaxConns.
type connLimitError struct {
	url string
	max int
}

func (e *connLimitError) Error() string {
	return fmt.Sprintf("wsloop: dial %s: the server is at its connection limit (Options.MaxConns %d)", e.url, e.max)
}

func (e *connLimitError) Is(target error) bool { return target == ErrConnLimit }

// Dial opens a WebSocket connection to a ws:// or wss:// URL and serves it
// on the server's event loops, with opts.Handler (or the server's handler),
// as if it had been accepted: the same callbacks, write path, timers,
// limits and Stats. It is the counterpart of gorilla/websocket's
// Dialer.DialContext for a callback API:
//
//	conn, resp, err := srv.Dial(ctx, "wss://example.com/feed", &engine.DialOptions{
//		Handler:      feed{},
//		Header:       http.Header{"Authorization": {"Bearer " + token}},
//		Subprotocols: []string{"v2.feed"},
//	})
//
// The DNS lookup, connect, proxy exchange, TLS handshake and upgrade run
// on the calling goroutine, bounded by ctx and opts.HandshakeTimeout; then the connection
// moves to an event loop and holds no goroutine. When Dial returns the
// connection is open and its handler's OnOpen has run (OnClose may even
// have run, if the server closed at once; writes then return
// handler.ErrClosed). Frames the server sent right behind its 101 are
// delivered at once.
//
// resp is the server's answer (status, headers, and for a non-101 answer
// up to 1 KiB of its body); it is nil when no answer came. err is a
// *[DialError] naming the phase that failed (DNS, connect, proxy, TLS,
// handshake; timeouts and cancellation say so), a *[UpgradeStatusError] for a status other
// than 101 (redirects are not followed), ErrNotServing, or an error that
// is [ErrConnLimit].
//
// Any started server can dial; a program that only dials starts one
// without Options.Addr. Each connection counts against Options.MaxConns.
// Dial is safe for concurrent use.
func (s *Server) Dial(ctx context.Context, rawURL string, opts *DialOptions) (handler.Conn, *http.Response, error) {
	if opts == nil {
		opts = &DialOptions{}
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, fmt.Errorf("wsloop: dial: %w", err)
	}
	secure := false
	switch strings.ToLower(u.Scheme) {
	case "ws":
	case "wss":
		secure = true
	default:
		return nil, nil, fmt.Errorf("%w: %q", ErrDialScheme, rawURL)
	}
	if u.Host == "" {
		return nil, nil, fmt.Errorf("wsloop: dial %s: the URL has no host", rawURL)
	}
	if err := codec.CheckRequestHeader(opts.Header); err != nil {
		return nil, nil, fmt.Errorf("wsloop: dial %s: %w", rawURL, err)
	}
	if err := codec.CheckSubprotocols(opts.Subprotocols); err != nil {
		return nil, nil, fmt.Errorf("wsloop: dial %s: %w", rawURL, err)
	}
	if !s.serving() || s.draining.Load() {
		return nil, nil, ErrNotServing
	}
	if s.stats.conns.Add(1) > int64(s.maxConns) {
		s.stats.conns.Add(-1)
		redacted := *u
		redacted.User = nil
		return nil, nil, &connLimitError{url: redacted.String(), max: s.maxConns}
	}
	conn, resp, err := s.dial(ctx, u, secure, opts)
	if err != nil {
		s.stats.conns.Add(-1)
		return nil, resp, err
	}
	return conn, resp, nil
}

// dialState is one dial in progress.
type dialState struct {
	s      *Server
	u      *url.URL
	url    string // for errors, without user info
	opts   *DialOptions
	ctx    context.Context
	phase  DialPhase
	conn   net.Conn  // the socket, once connected
	stream net.Conn  // what the handshake reads and writes: conn, TLS over it, or either behind a proxy's extra bytes
	tlsc   *tls.Conn // the TLS of a wss:// connection, for the response
}

// failed wraps err as the current phase's error. When the dial's context
// ended, that is the reason, whatever error the I/O it interrupted gave.
//
// Nothing here waits: the blocking I/O of a dial is interrupted only by
// the dial's context ending (a socket deadline moved to the past by
// context.AfterFunc, net.Dialer's context canceled from it, crypto/tls's
// HandshakeContext), never by a deadline of its own that could fire
// before the context's timer and leave the cause unset. So an I/O error
// that a timeout caused comes after the context has ended, and
// context.Cause names it.
func (d *dialState) failed(err error) error {
	if cause := context.Cause(d.ctx); cause != nil {
		err = cause
	}
	return &DialError{URL: d.url, Phase: d.phase, Err: err}
}

func (s *Server) dial(parent context.Context, u *url.URL, secure bool, opts *DialOptions) (handler.Conn, *http.Response, error) {
	timeout := opts.HandshakeTimeout
	if timeout <= 0 {
		timeout = s.opts.HandshakeTimeout
	}
	ctx, cancel := context.WithTimeoutCause(parent, timeout, &dialTimeout{timeout})
	defer cancel()
	redacted := *u
	redacted.User = nil
	d := &dialState{s: s, u: u, url: redacted.String(), opts: opts, ctx: ctx}

	proxy, err := d.proxy()
	if err != nil {
		return nil, nil, err
	}
	if err := d.connect(proxy); err != nil {
		return nil, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			d.conn.Close()
		}
	}()
	// Blocking I/O from here on ends when the context does (its deadline,
	// a cancel, the parent's end): the socket's deadline moves to the
	// past, which wakes whatever waits. The socket gets no deadline of
	// its own (see failed).
	stop := context.AfterFunc(ctx, func() { _ = d.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	a := &adoption{client: true, ctx: opts.Context, h: opts.Handler, max: opts.MaxMessageSize}
	d.stream = d.conn
	var ts *tlsState
	if proxy != nil {
		if ts, err = d.tunnel(proxy); err != nil {
			return nil, nil, err
		}
	}
	if secure {
		if ts, err = d.tlsHandshake(); err != nil {
			return nil, nil, err
		}
		d.tlsc = ts.conn
	}
	a.tls = ts

	d.phase = PhaseHandshake
	var nonce [16]byte
	_, _ = rand.Read(nonce[:]) // crypto/rand: RFC 6455 §4.1 item 7, "randomly selected"
	if opts.nonce != nil {
		nonce = *opts.nonce
	}
	key := codec.NewKey(nonce)
	req := &codec.ClientRequest{Host: u.Host, Target: u.RequestURI(), Key: key, Protocols: opts.Subprotocols, Header: opts.Header}
	if u.User != nil && opts.Header.Get("Authorization") == "" {
		// As net/http and gorilla do: user info in the URL is basic auth.
		pass, _ := u.User.Password()
		h := opts.Header.Clone()
		if h == nil {
			h = http.Header{}
		}
		h.Set("Authorization", "Basic "+basicAuth(u.User.Username(), pass))
		req.Header = h
	}
	offer := codec.ClientDeflateOffer{ServerNoContextTakeover: true, ClientNoContextTakeover: true, ClientMaxWindowBits: true}
	if opts.Deflate {
		req.Extensions = string(offer.AppendOffer(nil))
	}
	if _, err := d.stream.Write(codec.AppendRequest(make([]byte, 0, 512), req)); err != nil {
		return nil, nil, d.failed(err)
	}
	buf, n, err := readHeader(d.stream, s.opts.MaxHeaderBytes, "the server")
	if err != nil {
		return nil, nil, d.failed(err)
	}
	var r codec.Response
	if err := codec.ParseResponse(buf[:n], &r); err != nil {
		return nil, nil, d.failed(err)
	}
	resp := d.httpResponse(&r, req)
	if r.Status != http.StatusSwitchingProtocols {
		body := d.readBody(&r, buf[n:])
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return nil, resp, &UpgradeStatusError{URL: d.url, StatusCode: r.Status, Status: resp.Status, Header: resp.Header, Body: body}
	}
	sub, err := r.Check(key, opts.Subprotocols)
	if err != nil {
		return nil, resp, d.failed(err)
	}
	if opts.Deflate {
		p, accepted, err := codec.NegotiateClientDeflate(&r, offer)
		if err != nil {
			return nil, resp, d.failed(err)
		}
		if accepted {
			// No context takeover either way (the offer asked for
			// both), so the connection shares the read-only state of
			// every such connection; the window the server allowed
			// this side limits what it compresses, as
			// server_max_window_bits does on the server side.
			a.defl = &sharedDeflate[p.ClientMaxWindowBits]
			s.defl.negotiated.Add(1)
		}
	} else {
		var ext bool
		r.Extensions(func(v []byte) { ext = ext || len(bytes.TrimSpace(v)) > 0 })
		if ext {
			// RFC 6455 §4.1: an extension the client did not offer
			// fails the connection.
			return nil, resp, d.failed(codec.ErrExtensionNotOffered)
		}
	}
	// What was read past the 101 (frames the server sent behind it), and
	// what a proxy sent past its own answer that no read reached yet,
	// in the order it came: the loop decodes it at once.
	if len(buf) > n {
		a.pre = append([]byte(nil), buf[n:]...)
	}
	if rest := carried(d.stream); len(rest) > 0 {
		a.pre = append(a.pre, rest...)
	}
	path, query := u.EscapedPath(), u.RawQuery
	if path == "" {
		path = "/"
	}
	if path != "/" || query != "" || len(sub) > 0 {
		a.info = &connInfo{subprotocol: string(sub), path: path, rawQuery: query}
	}

	stop()
	_ = d.conn.SetDeadline(time.Time{})
	ok = true // adopt (or bridge) takes the socket over, whatever happens
	if a.tls != nil && s.tlsBridged() {
		// This Go release's crypto/tls cannot be read from a loop
		// (tls.go): the connection keeps its blocking transport and is
		// bridged, as a hijacked TLS connection is.
		ts := a.tls
		a.tls = nil
		if err := s.bridge(ts.conn, a); err != nil {
			return nil, resp, fmt.Errorf("wsloop: dial %s: bridging the connection to an event loop: %w", d.url, err)
		}
		return a.wc, resp, nil
	}
	if err := s.adopt(d.conn, a); err != nil {
		return nil, resp, fmt.Errorf("wsloop: dial %s: handing the connection to an event loop: %w", d.url, err)
	}
	return a.wc, resp, nil
}

// dialSlack is how much later than the dial's deadline the context given
// to net.Dialer ends. net.Dialer gives each address a share of its
// context's deadline, as a socket deadline; if that deadline fired before
// the dial's own timer, the error would be a bare "i/o timeout" whose
// cause (the handshake timeout, the caller's deadline) is not set yet.
// With the slack the dial's context ends first, and cancels net.Dialer's
// at once.
const dialSlack = time.Second

// connect resolves the host (or the proxy's) and opens the TCP connection,
// with net.Dialer: the addresses in the resolver's order, IPv4/IPv6
// fallback ("Happy Eyeballs", RFC 6555), the time left split between them.
func (d *dialState) connect(proxy *url.URL) error {
	d.phase = PhaseConnect
	port := d.u.Port()
	if port == "" {
		port = "80"
		if strings.EqualFold(d.u.Scheme, "wss") {
			port = "443"
		}
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return d.failed(fmt.Errorf("invalid port %q", port))
	}
	addr := net.JoinHostPort(d.u.Hostname(), port)
	if proxy != nil {
		addr = proxyAddr(proxy)
	}
	var c net.Conn
	var err error
	if nd := d.opts.NetDialContext; nd != nil {
		c, err = nd(d.ctx, "tcp", addr)
		if err == nil {
			switch c.(type) {
			case *net.TCPConn, *net.UnixConn:
			default:
				c.Close()
				c, err = nil, fmt.Errorf("NetDialContext returned a %T; the event loops adopt only *net.TCPConn and *net.UnixConn", c)
			}
		}
	} else {
		nd := net.Dialer{KeepAlive: d.s.opts.TCPKeepAlive, Resolver: d.opts.Resolver}
		if nd.KeepAlive == 0 {
			nd.KeepAlive = -1 // as for accepted connections: off unless Options.TCPKeepAlive
		}
		if hook := d.opts.control; hook != nil {
			nd.Control = func(_, address string, _ syscall.RawConn) error { hook(address); return nil }
		}
		var ctx context.Context
		var cancel context.CancelFunc
		if dl, has := d.ctx.Deadline(); has {
			ctx, cancel = context.WithDeadline(context.WithoutCancel(d.ctx), dl.Add(dialSlack))
		} else {
			ctx, cancel = context.WithCancel(context.WithoutCancel(d.ctx))
		}
		stop := context.AfterFunc(d.ctx, cancel)
		c, err = nd.DialContext(ctx, "tcp", addr)
		stop()
		cancel()
	}
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			d.phase = PhaseDNS
		}
		if proxy != nil {
			err = fmt.Errorf("the proxy %s: %w", addr, err)
		}
		return d.failed(err)
	}
	d.conn = c
	return nil
}

// tlsHandshake runs the TLS handshake over a transport in direct mode on
// the socket; the transport moves to the loop at adoption.
func (d *dialState) tlsHandshake() (*tlsState, error) {
	d.phase = PhaseTLS
	cfg := d.opts.TLSConfig.Clone()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = d.u.Hostname()
	}
	ts, err := d.handshakeTLS(d.stream, cfg)
	if err != nil {
		return nil, d.failed(err)
	}
	if rest := carried(d.stream); len(rest) > 0 {
		// Bytes a proxy sent past its answer that the handshake did not
		// consume: the server speaks only after the ClientHello, so they
		// cannot be its records, and dropping them would hide it.
		return nil, d.failed(fmt.Errorf("the proxy sent %d bytes after its answer that are not part of the TLS handshake", len(rest)))
	}
	d.stream = ts.conn
	return ts, nil
}

// handshakeTLS runs a client TLS handshake over c, offering only
// http/1.1 by ALPN unless cfg says otherwise.
func (d *dialState) handshakeTLS(c net.Conn, cfg *tls.Config) (*tlsState, error) {
	if len(cfg.NextProtos) == 0 {
		// The upgrade is HTTP/1.1: never let ALPN pick h2.
		cfg.NextProtos = []string{"http/1.1"}
	}
	tr := newDirectTLSTransport(c)
	tc := tls.Client(tr, cfg)
	if err := tc.HandshakeContext(d.ctx); err != nil {
		return nil, err
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" {
		return nil, fmt.Errorf("the server chose ALPN protocol %q; WebSocket needs http/1.1", p)
	}
	d.s.stats.tlsHandshakes.Add(1)
	return &tlsState{conn: tc, tr: tr}, nil
}

// readHeader reads r until the end of an HTTP response header, under max
// bytes. It returns what it read and the header's length; bytes after the
// header (frames the server sent right behind its 101, the start of an
// error's body, the first bytes through a proxy's tunnel) are buf[n:].
// who names the peer in errors.
func readHeader(r io.Reader, max int, who string) (buf []byte, n int, err error) {
	hs := codec.HeaderScanner{Max: max}
	buf = make([]byte, 0, 1024)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		m, rerr := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if n, err = hs.Scan(buf); err != nil {
			return nil, 0, codec.ErrResponseTooLarge
		}
		if n > 0 {
			return buf, n, nil
		}
		if rerr != nil {
			if rerr == io.EOF {
				if len(buf) == 0 {
					return nil, 0, fmt.Errorf("%s closed the connection without answering", who)
				}
				return nil, 0, fmt.Errorf("%s closed the connection in the middle of its answer (%d bytes)", who, len(buf))
			}
			return nil, 0, rerr
		}
	}
}

// readBody returns up to maxErrorBody bytes of a non-101 answer's body:
// what came with the header, and more while the Content-Length promises
// it. A body without a length is not waited for.
func (d *dialState) readBody(r *codec.Response, have []byte) []byte {
	body := append([]byte(nil), have...)
	want := int64(len(body))
	if r.ContentLength >= 0 {
		want = r.ContentLength
	}
	if want > maxErrorBody {
		want = maxErrorBody
	}
	for int64(len(body)) < want {
		var chunk [512]byte
		m, err := d.stream.Read(chunk[:min(int64(len(chunk)), want-int64(len(body)))])
		body = append(body, chunk[:m]...)
		if err != nil {
			break
		}
	}
	if len(body) > int(want) {
		body = body[:want]
	}
	return body
}

// httpResponse describes the server's answer as net/http would.
func (d *dialState) httpResponse(r *codec.Response, req *codec.ClientRequest) *http.Response {
	h := http.Header{}
	r.VisitHeaders(func(k, v []byte) {
		key := http.CanonicalHeaderKey(string(k))
		h[key] = append(h[key], string(v))
	})
	status := strconv.Itoa(r.Status)
	if len(r.Reason) > 0 {
		status += " " + string(r.Reason)
	} else if t := http.StatusText(r.Status); t != "" {
		status += " " + t
	}
	resp := &http.Response{
		Status:        status,
		StatusCode:    r.Status,
		Proto:         "HTTP/" + strconv.Itoa(r.Major) + "." + strconv.Itoa(r.Minor),
		ProtoMajor:    r.Major,
		ProtoMinor:    r.Minor,
		Header:        h,
		Body:          http.NoBody,
		ContentLength: r.ContentLength,
		Request:       &http.Request{Method: http.MethodGet, URL: d.u, Header: req.Header, Host: d.u.Host},
	}
	if d.tlsc != nil {
		st := d.tlsc.ConnectionState()
		resp.TLS = &st
	}
	return resp
}

// basicAuth encodes user:pass for an Authorization header (RFC 7617).
func basicAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}
