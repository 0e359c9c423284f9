package engine

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/wsloop/wsloop/codec"
)

// The PROXY protocol for a net/http server: a listener wrapper.
//
// net/http serves each connection on a goroutine of its own until the
// handler calls Server.Upgrade, so the wrapper reads the header there, on
// the connection's first Read, RemoteAddr or LocalAddr (net/http asks for
// the addresses as its goroutine starts), never in Accept: a balancer that
// trickles a header holds up its own connection, not the others. The read
// is bounded by Options.HandshakeTimeout, on top of whatever deadline
// net/http set. Upgrade hands a plain connection accepted through the
// wrapper to a loop like any other, the bytes read past the header
// included; the loop's connection keeps the client's addresses.

// ProxyListener returns ln wrapped for a net/http server behind a load
// balancer that speaks the PROXY protocol, with the server's rules
// (Options.ProxyProtocol): a connection from a trusted network must begin
// with a version 1 or 2 header, whose addresses its RemoteAddr and
// LocalAddr then report (so r.RemoteAddr is the client's, in net/http and
// in Upgrade, whose per-client limits count it); a connection from
// anywhere else is passed through as it is, unless it begins with a header,
// which is refused. A refused header fails the connection's first read, so
// net/http closes it; it is counted in Stats.ProxyRefused and logged, at
// most once a second, as on the server's own listener. [ProxyHeaderOf]
// returns a connection's header, its TLVs included.
//
// Wrap the TCP listener, under the TLS one: the balancer's header comes
// before the TLS handshake.
//
//	ln, _ := net.Listen("tcp", ":8443")
//	ln = srv.ProxyListener(ln)
//	httpSrv.ServeTLS(ln, cert, key) // or tls.NewListener(ln, cfg)
//
// The header is read when net/http's goroutine for the connection first
// asks for it: a hook that runs on the accepting goroutine (ConnState's
// StateNew, ConnContext) must not call RemoteAddr, or it waits for it.
func (s *Server) ProxyListener(ln net.Listener) net.Listener {
	return &proxyListener{Listener: ln, s: s}
}

type proxyListener struct {
	net.Listener
	s *Server
}

// Accept returns the next connection, its header not read yet.
func (l *proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &proxyConn{Conn: c, s: l.s, trusted: l.s.proxyTrusted(c.RemoteAddr())}, nil
}

// errProxyRefused is what a refused connection's reads return.
var errProxyRefused = errors.New("wsloop: PROXY protocol header refused")

// proxyConn is a connection accepted by a ProxyListener.
type proxyConn struct {
	net.Conn
	s       *Server
	trusted bool

	once     sync.Once
	hdr      *codec.ProxyHeader // the header, once read; nil for an untrusted peer or a refused header
	remote   net.Addr           // the client's addresses, when the header carried them
	local    net.Addr
	err      error // the header was refused: every read fails with it
	rest     []byte
	restMu   sync.Mutex // rest is taken by Upgrade while net/http no longer reads
	checked  bool       // an untrusted peer's first bytes were checked for a header (Read only)
	dlMu     sync.Mutex
	deadline time.Time // the read deadline the connection's user set last
}

// init reads the header, once.
func (pc *proxyConn) init() { pc.once.Do(pc.readHeader) }

// readHeader reads and parses a trusted peer's header, within
// HandshakeTimeout and the user's own read deadline.
func (pc *proxyConn) readHeader() {
	if !pc.trusted {
		return
	}
	s := pc.s
	dl := socketDeadline(s.opts.HandshakeTimeout)
	pc.dlMu.Lock()
	user := pc.deadline
	pc.dlMu.Unlock()
	if !user.IsZero() && user.Before(dl) {
		dl = user
	}
	_ = pc.Conn.SetReadDeadline(dl)
	defer func() {
		pc.dlMu.Lock()
		_ = pc.Conn.SetReadDeadline(pc.deadline)
		pc.dlMu.Unlock()
	}()
	max := s.opts.MaxHeaderBytes
	buf := make([]byte, 0, 232) // a v2 header with IPv6 addresses and a few TLVs; v1 at most 107
	var h codec.ProxyHeader
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, min(cap(buf), max))...)[:len(buf)]
		}
		n, err := pc.Conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		hn, perr := codec.ParseProxyHeader(buf, max, &h)
		switch {
		case perr != nil:
			pc.refuse(proxyErrLabel(perr), perr)
			return
		case hn > 0:
			s.stats.proxy.accepted.Add(1)
			pc.hdr = h.Clone()
			if h.Proxied() && (h.Family == codec.ProxyTCP4 || h.Family == codec.ProxyTCP6) {
				pc.remote, pc.local = proxyTCPAddr(h.Source), proxyTCPAddr(h.Destination)
			}
			if hn < len(buf) {
				pc.rest = append([]byte(nil), buf[hn:]...)
			}
			return
		case err == nil:
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			pc.refuse(proxyTimeout, err)
		case len(buf) > 0:
			pc.refuse(proxyTruncated, err)
		default:
			pc.err = err // closed before a byte: a balancer's TCP health check
		}
		return
	}
}

// refuse records a refused header: counted, logged, and every read fails,
// with a read error as the network's are, so that net/http closes the
// connection without answering (and without logging it).
func (pc *proxyConn) refuse(label string, err error) {
	pc.s.proxyRefused(label, pc.Conn.RemoteAddr(), err)
	pc.err = &net.OpError{Op: "read", Net: "tcp", Source: pc.Conn.LocalAddr(), Addr: pc.Conn.RemoteAddr(), Err: errProxyRefused}
}

// Read reads past the header: first what was read with it.
func (pc *proxyConn) Read(p []byte) (int, error) {
	pc.init()
	if pc.err != nil {
		return 0, pc.err
	}
	pc.restMu.Lock()
	if len(pc.rest) > 0 {
		n := copy(p, pc.rest)
		pc.rest = pc.rest[n:]
		pc.restMu.Unlock()
		return n, nil
	}
	pc.restMu.Unlock()
	n, err := pc.Conn.Read(p)
	if !pc.trusted && !pc.checked && n > 0 {
		pc.checked = true
		if len(pc.s.opts.ProxyProtocol) > 0 && codec.HasProxySignature(p[:n]) {
			pc.refuse(proxyUntrusted, nil)
			return 0, pc.err
		}
	}
	return n, err
}

// RemoteAddr is the client's address when the header carried it.
func (pc *proxyConn) RemoteAddr() net.Addr {
	pc.init()
	if pc.remote != nil {
		return pc.remote
	}
	return pc.Conn.RemoteAddr()
}

// LocalAddr is the address the client connected to (on the balancer) when
// the header carried it.
func (pc *proxyConn) LocalAddr() net.Addr {
	pc.init()
	if pc.local != nil {
		return pc.local
	}
	return pc.Conn.LocalAddr()
}

// SetDeadline and SetReadDeadline remember the user's read deadline, which
// the header's read restores when it is done.
func (pc *proxyConn) SetDeadline(t time.Time) error {
	pc.dlMu.Lock()
	defer pc.dlMu.Unlock()
	pc.deadline = t
	return pc.Conn.SetDeadline(t)
}

func (pc *proxyConn) SetReadDeadline(t time.Time) error {
	pc.dlMu.Lock()
	defer pc.dlMu.Unlock()
	pc.deadline = t
	return pc.Conn.SetReadDeadline(t)
}

// takeRest returns what was read past the header and not read since.
func (pc *proxyConn) takeRest() []byte {
	pc.restMu.Lock()
	defer pc.restMu.Unlock()
	r := pc.rest
	pc.rest = nil
	return r
}

// CloseWrite half-closes a TCP connection, as bridge and crypto/tls's
// CloseWrite expect of one.
func (pc *proxyConn) CloseWrite() error {
	if cw, ok := pc.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return io.ErrClosedPipe
}

// ProxyHeaderOf returns the PROXY protocol header a connection accepted by a
// [Server.ProxyListener] began with (a *tls.Conn over one too), or nil: the
// peer was not trusted, or the connection is not one of a ProxyListener. It
// reads the header if it was not read yet. In a net/http handler, get the
// connection from http.Server's ConnContext:
//
//	ConnContext: func(ctx context.Context, c net.Conn) context.Context {
//		return context.WithValue(ctx, connKey{}, c) // do not read the header here: the accepting goroutine runs this
//	},
//	...
//	hdr := engine.ProxyHeaderOf(r.Context().Value(connKey{}).(net.Conn))
func ProxyHeaderOf(c net.Conn) *codec.ProxyHeader {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	pc, ok := c.(*proxyConn)
	if !ok {
		return nil
	}
	pc.init()
	return pc.hdr
}
