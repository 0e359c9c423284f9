package engine

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Upgrades from net/http.
//
// A net/http handler, behind the program's own router, middleware and auth,
// calls Server.Upgrade as it would call gorilla/websocket's
// Upgrader.Upgrade. The request is checked with the codec's rules (the
// same statuses and reasons as wsloop's own listener: the request is
// written back into its wire form and parsed by the same code), the
// connection is hijacked, the 101 is written, and the socket is handed to an
// event loop through the same adoption path as the connections wsloop
// accepts itself (accept.go). From then on nothing belongs to the
// connection but its small state. Bytes the client sent after its request,
// which net/http's reader may already hold, are decoded first.
//
// A hijacked TLS connection (an http.Server with TLS) has no socket a loop
// could read: its records must go through crypto/tls. Such a connection is
// bridged to a loop through a socketpair, with two goroutines copying
// between the TLS connection and the pair (bridge, below). It gets the same
// Handler contract, timers and limits, at the cost stated in
// docs/net-http.md.

// UpgradeOptions are the choices [Server.Upgrade] makes for one connection.
// The zero value (or nil) takes every default from the server.
type UpgradeOptions struct {
	// Handler receives the connection's events; nil means the server's.
	// If it implements handler.StreamHandler, messages arrive in chunks.
	Handler handler.Handler
	// Header holds extra header lines for the 101 response (a Set-Cookie,
	// say), by the rules of [handler.UpgradeResponse].Header: control
	// characters in values become spaces, fields whose names are not
	// tokens are dropped, and so are the fields the handshake writes
	// itself (Upgrade, Connection, Sec-WebSocket-*, Content-Length,
	// Transfer-Encoding); each change is logged, rate-limited.
	Header http.Header
	// Subprotocol is the subprotocol to answer with; it should be one the
	// client offered, and must be a token (RFC 6455 §4.1): another value
	// makes Upgrade answer 500 and return an error. "" picks the first
	// offered one that appears in Options.Subprotocols, if any.
	Subprotocol string
	// Context becomes the connection's Context before OnOpen runs.
	Context any
	// MaxMessageSize overrides Options.MaxMessageSize for this connection
	// when positive.
	MaxMessageSize int64
}

// Upgrade upgrades the HTTP/1.1 request r to a WebSocket connection served
// by the server's event loops, and returns it open: its handler's OnOpen has
// run when Upgrade returns (OnClose may even have run, if the client left at
// once; writes then return handler.ErrClosed). It is the counterpart of
// gorilla/websocket's Upgrader.Upgrade for a callback API: the
// connection's events go to opts.Handler (or the server's handler), not to
// a read loop of the caller's.
//
// The request is checked as on the server's own listener: method, version,
// Upgrade and Connection headers, Sec-WebSocket-Key and -Version, and the
// origin (Options.CheckOrigin, or same-origin). A failed check is answered
// with the same status and reason as there, and Upgrade returns an error
// that says why. Malformed HTTP never gets here: net/http answers it before
// any handler runs. What net/http lets through but the listener refuses as
// ambiguous (a second Sec-WebSocket-Key, -Version or Origin, a body behind
// the upgrade) is refused here too, with 400 (docs/security.md). An HTTP/2
// request is answered 505 (WebSocket over HTTP/2, RFC 8441, is not
// supported), as is a ResponseWriter that cannot be hijacked.
//
// The handler must not write to w before calling Upgrade, nor use w or r's
// body after: net/http would send such writes ahead of the 101.
//
// A server started without Options.Addr runs only its event loops, for
// this road; one that listens serves Upgrade too. After Shutdown, Upgrade
// answers 503 and returns ErrNotServing. Upgrade is safe for concurrent use.
func (s *Server) Upgrade(w http.ResponseWriter, r *http.Request, opts *UpgradeOptions) (handler.Conn, error) {
	if opts == nil {
		opts = &UpgradeOptions{}
	}
	switch {
	case !s.serving():
		return nil, s.httpReject(w, &codec.HandshakeError{Status: http.StatusServiceUnavailable, Reason: "server not serving"}, rejectShutdown, ErrNotServing)
	case s.draining.Load():
		return nil, s.httpReject(w, errDraining, rejectShutdown, nil)
	case r.ProtoMajor != 1:
		return nil, s.httpReject(w, errHTTP2, rejectHTTPVersion, nil)
	}
	head := appendRequestHead(make([]byte, 0, 512), r)
	var req codec.Request
	if err := codec.ParseRequest(head, &req); err != nil {
		he := err.(*codec.HandshakeError)
		return nil, s.httpReject(w, he, rejectLabel(he), nil)
	}
	if s.opts.CheckOrigin != nil {
		if !s.opts.CheckOrigin(handlerRequest(r)) {
			return nil, s.httpReject(w, errOrigin, rejectOrigin, nil)
		}
	} else if !sameOrigin(req.Origin, req.Host) {
		return nil, s.httpReject(w, errOrigin, rejectOrigin, nil)
	}
	sub := opts.Subprotocol
	if sub == "" {
		sub = s.preferredSubprotocol(&req)
	}
	if !s.checkUpgradeResponse("UpgradeOptions", sub, opts.Header) {
		return nil, s.httpReject(w, errBadSubprotocol, rejectApp, errInvalidSubprotocol)
	}
	if s.stats.conns.Add(1) > int64(s.maxConns) {
		s.stats.conns.Add(-1)
		return nil, s.httpReject(w, errConnLimit, rejectConnLimit, nil)
	}
	defl, ext := s.deflateFor(&req, nil)
	// Through a ResponseController, so that middleware wrappers that
	// offer Unwrap instead of implementing http.Hijacker still work.
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.stats.conns.Add(-1)
		s.releaseDeflate(defl)
		if errors.Is(err, http.ErrNotSupported) {
			return nil, s.httpReject(w, errNoHijack, rejectOther, nil)
		}
		return nil, fmt.Errorf("wsloop: upgrade: hijack: %w", err)
	}
	// The per-client limits count the connection's peer: the socket's, or
	// the client a ProxyListener's header named. It is known for certain
	// only now; a refusal is written here as the 101 would have been.
	var tracked bool
	if s.clients != nil {
		v, counted := s.admitClient(conn.RemoteAddr())
		if v != clientAdmitted {
			he := [...]*codec.HandshakeError{clientOverConns: errClientConns, clientOverRate: errClientRate, clientTableFull: errClientTable}[v]
			_ = conn.SetWriteDeadline(socketDeadline(s.opts.HandshakeTimeout))
			_, _ = conn.Write(clientResponses[v])
			conn.Close()
			s.stats.conns.Add(-1)
			s.releaseDeflate(defl)
			return nil, he
		}
		tracked = counted
	}
	out := codec.AppendAccept(nil, req.Key, sub, ext, opts.Header)
	_ = conn.SetWriteDeadline(socketDeadline(s.opts.HandshakeTimeout))
	_, err = conn.Write(out)
	_ = conn.SetDeadline(time.Time{})
	if err != nil {
		if tracked {
			s.releaseClient(conn.RemoteAddr())
		}
		conn.Close()
		s.stats.conns.Add(-1)
		s.releaseDeflate(defl)
		return nil, fmt.Errorf("wsloop: upgrade: writing the 101: %w", err)
	}
	a := &adoption{ctx: opts.Context, h: opts.Handler, max: opts.MaxMessageSize, defl: defl, tracked: tracked}
	if n := brw.Reader.Buffered(); n > 0 {
		p, _ := brw.Reader.Peek(n)
		a.pre = append([]byte(nil), p...)
	}
	if string(req.Path) != "/" || len(req.RawQuery) > 0 || sub != "" {
		a.info = &connInfo{subprotocol: sub, path: string(req.Path), rawQuery: string(req.RawQuery)}
	}
	peer := conn.RemoteAddr()
	switch c := conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		err = s.adopt(conn, a)
	case *proxyConn:
		// A ProxyListener's: the loop reads the socket under it, after
		// what was read past the header and what net/http buffered, in
		// the order they came (net/http's reader read from the wrapper's
		// leftovers first).
		switch c.Conn.(type) {
		case *net.TCPConn, *net.UnixConn:
			a.pre = append(a.pre, c.takeRest()...)
			if c.remote != nil {
				if a.info == nil {
					a.info = &connInfo{path: "/"}
				}
				a.info.remote, a.info.local = c.remote, c.local
			}
			err = s.adopt(c.Conn, a)
		default:
			err = s.bridge(conn, a)
		}
	default:
		err = s.bridge(conn, a)
	}
	if err != nil {
		if tracked {
			s.releaseClient(peer)
		}
		s.stats.conns.Add(-1)
		s.releaseDeflate(defl)
		return nil, fmt.Errorf("wsloop: upgrade: handing the connection to an event loop: %w", err)
	}
	return a.wc, nil
}

// errInvalidSubprotocol is what Upgrade returns for an
// UpgradeOptions.Subprotocol that is not a token.
var errInvalidSubprotocol = errors.New("wsloop: upgrade: UpgradeOptions.Subprotocol is not a token (RFC 6455 §4.1)")

var (
	errDraining  = &codec.HandshakeError{Status: http.StatusServiceUnavailable, Reason: "server shutting down", Header: http.Header{"Retry-After": {"5"}}}
	errConnLimit = &codec.HandshakeError{Status: http.StatusServiceUnavailable, Reason: "server at its connection limit, try again later", Header: http.Header{"Retry-After": {"5"}}}
	errHTTP2     = &codec.HandshakeError{Status: http.StatusHTTPVersionNotSupported, Reason: "WebSocket needs HTTP/1.1: this server does not support WebSocket over HTTP/2"}
	errNoHijack  = &codec.HandshakeError{Status: http.StatusHTTPVersionNotSupported, Reason: "this connection cannot be upgraded (its ResponseWriter cannot be hijacked)"}
)

// serving reports whether the event loops run.
func (s *Server) serving() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopReq:
		return false
	default:
	}
	return s.cli != nil
}

// httpReject answers a refused upgrade through net/http with the status,
// headers and reason the server's own listener would send, counts it, and
// returns the error Upgrade reports (err, or one made from he).
func (s *Server) httpReject(w http.ResponseWriter, he *codec.HandshakeError, label string, err error) error {
	s.stats.reject(he.Status, label)
	h := w.Header()
	for k, v := range he.Header {
		h[k] = v
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(he.Status)
	_, _ = io.WriteString(w, he.Reason+"\n")
	if err == nil {
		err = he
	}
	return err
}

// appendRequestHead appends r's request line and header lines in their
// wire form, so that the codec checks a net/http request with exactly the
// rules it applies to the server's own connections.
//
// net/http has parsed the request already, by rules that differ from the
// codec's in a few places; none lets a request through that the codec
// would refuse on its own listener in a way that matters:
//   - net/http refuses what the codec refuses as malformed (a control
//     character in a name or value, whitespace before a colon, a bad or
//     second Host, extra spaces in the request line) before any handler
//     runs;
//   - it joins an obs-fold line with a space (RFC 9112 §5.2 lets a server
//     do that instead of refusing), so the codec sees the joined value;
//   - its header is a map: the order of the lines is lost, their number
//     and values are not, so duplicate Origin, Sec-WebSocket-Key and
//     Sec-WebSocket-Version lines are still refused;
//   - a body is still refused: Content-Length stays in r.Header, and
//     Transfer-Encoding is written back from r.TransferEncoding;
//   - an absolute-form target stays in RequestURI, and r.Host is its
//     authority, so the Origin check uses the same host as net/http.
func appendRequestHead(b []byte, r *http.Request) []byte {
	target := r.RequestURI
	if target == "" {
		target = r.URL.RequestURI()
	}
	b = append(b, r.Method...)
	b = append(b, ' ')
	b = append(b, target...)
	b = append(b, " HTTP/"...)
	b = strconv.AppendInt(b, int64(r.ProtoMajor), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(r.ProtoMinor), 10)
	b = append(b, "\r\n"...)
	if r.Host != "" {
		b = append(b, "Host: "...)
		b = append(b, r.Host...)
		b = append(b, "\r\n"...)
	}
	// net/http moves Transfer-Encoding out of the header (and drops a
	// Content-Length that comes with chunked): put it back, so that the
	// codec refuses a body behind the upgrade here as on its own
	// listener. Its bytes would otherwise be read as WebSocket frames.
	for _, te := range r.TransferEncoding {
		b = append(b, "Transfer-Encoding: "...)
		b = append(b, te...)
		b = append(b, "\r\n"...)
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	return append(b, "\r\n"...)
}

// handlerRequest is the handler's view of a net/http request, for
// CheckOrigin.
func handlerRequest(r *http.Request) *handler.Request {
	req := &handler.Request{
		Method:     r.Method,
		Path:       r.URL.Path,
		RawQuery:   r.URL.RawQuery,
		Host:       r.Host,
		Origin:     r.Header.Get("Origin"),
		Header:     r.Header,
		Extensions: r.Header.Values("Sec-WebSocket-Extensions"),
	}
	if a, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
		req.RemoteAddr = a
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range splitTokens(v) {
			req.Protocols = append(req.Protocols, p)
		}
	}
	return req
}

// splitTokens splits a comma-separated header value into trimmed tokens.
func splitTokens(v string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(v); i++ {
		if i == len(v) || v[i] == ',' {
			t := v[start:i]
			for len(t) > 0 && (t[0] == ' ' || t[0] == '\t') {
				t = t[1:]
			}
			for len(t) > 0 && (t[len(t)-1] == ' ' || t[len(t)-1] == '\t') {
				t = t[:len(t)-1]
			}
			if t != "" {
				out = append(out, t)
			}
			start = i + 1
		}
	}
	return out
}

// bridge serves a connection that has no socket a loop can read (a hijacked
// *tls.Conn): the loop gets one end of a socketpair (a loopback TCP pair on
// Windows, which has no socketpair: pair_*.go), and two goroutines copy
// between the other end and conn until either side ends. What that costs
// per connection: two goroutines with a 4 KiB buffer each, two descriptors,
// the pair's kernel buffers while data is in flight, and crypto/tls's own
// state.
func (s *Server) bridge(conn net.Conn, a *adoption) error {
	loopEnd, pumpEnd, err := bridgePair() // pair_*.go
	if err != nil {
		conn.Close()
		return err
	}
	if a.info == nil {
		a.info = &connInfo{path: "/"}
	}
	a.info.remote, a.info.local = conn.RemoteAddr(), conn.LocalAddr()
	a.bridged = true
	if err := s.adopt(loopEnd, a); err != nil {
		pumpEnd.Close()
		conn.Close()
		return err
	}
	b := &bridged{client: conn, loop: pumpEnd, linger: s.opts.CloseTimeout}
	b.left.Store(2)
	go b.up()
	go b.down()
	return nil
}

var pumpBufs = sync.Pool{New: func() any { return new([4 << 10]byte) }}

// bridged is a TLS connection bridged to a loop's socketpair end.
type bridged struct {
	client net.Conn // the hijacked connection
	loop   net.Conn // our end of the socketpair; the loop has the other
	linger time.Duration
	left   atomic.Int32 // copying directions still running; the last closes both
}

// done ends one direction; the second to end closes both connections.
func (b *bridged) done() {
	if b.left.Add(-1) == 0 {
		b.client.Close()
		b.loop.Close()
	}
}

// up copies the client's bytes to the loop; when the client ends, the loop
// sees its end of the pair half-closed, as it would see a socket's.
func (b *bridged) up() {
	defer b.done()
	copyBuf(b.loop, b.client)
	if cw, ok := b.loop.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// down copies the loop's bytes to the client; when the loop closes its
// end, the client gets close_notify and FIN, and has the close timeout to
// finish before its reads stop too.
func (b *bridged) down() {
	defer b.done()
	copyBuf(b.client, b.loop)
	if cw, ok := b.client.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = b.client.SetReadDeadline(socketDeadline(b.linger))
}

func copyBuf(dst, src net.Conn) {
	buf := pumpBufs.Get().(*[4 << 10]byte)
	_, _ = io.CopyBuffer(dst, src, buf[:])
	pumpBufs.Put(buf)
}
