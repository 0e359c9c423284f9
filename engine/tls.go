package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/engine/internal/tlsbuf"
)

// wss:// on the event loops, with the standard library's crypto/tls.
//
// A TLS connection is adopted by a loop at accept, like any other, and its
// handshake timer starts. crypto/tls can run a handshake only against a
// reader that blocks, so once the client's first bytes have arrived the
// connection is queued for a handshake goroutine; at most
// Options.MaxTLSHandshakes of them run at once (a bounded pool, not a
// goroutine per connection). The goroutine runs tls.Conn.Handshake over a
// tlsTransport: its reads wait for the bytes the loop feeds it, its writes
// are handed to the loop. A client that connects and never speaks costs no
// goroutine; one that stalls in the middle of its handshake holds one until
// the handshake timer closes its connection on the loop, which makes the
// transport's read fail. Queued handshakes are started oldest first; one
// whose connection timed out meanwhile is skipped, so after a wave of
// stalled clients the live ones wait at most about one handshake timeout.
//
// After the handshake the transport stops blocking: the loop feeds it the
// bytes it read and calls tls.Conn.Read until it reports that no more are
// buffered, with tlsbuf.ErrWouldBlock, which crypto/tls returns without
// storing (crypto/tls/conn.go, readRecordOrCCS). The
// plaintext goes to the connection's carried input (connExtra.pending),
// which the handshake and the frame decoder read as they read gnet's buffer.
// Writes go through tls.Conn.Write on the loop, which encrypts into the
// transport, which writes to gnet. So after the handshake a wss connection
// holds no goroutine, and a broadcast encodes a frame once and encrypts it
// per connection.
//
// That relies on crypto/tls behaving in ways it does not document; all of
// it, with the checks, is in engine/internal/tlsbuf. At its first wss
// connection a server runs those checks (tlsBridged); if this Go release
// fails them, its wss connections take the fallback road instead: the TLS
// handshake on the same bounded pool, over the socket itself, then the
// goroutine bridge of hijacked TLS connections (upgrade.go, bridge).

// maxTLSEarly bounds the ciphertext a connection may send before its
// handshake has finished, beyond Options.MaxHeaderBytes: a client may send
// its upgrade request (and even frames) right behind its Finished message,
// before the server has read it. What is held is charged to the inbound
// budget too.
const maxTLSEarly = 256 << 10

// tlsState is a wss connection's TLS: crypto/tls's connection and the
// transport under it.
type tlsState struct {
	conn *tls.Conn
	tr   *tlsTransport
}

// tlsTransport is the net.Conn under a wss connection's tls.Conn.
//
// It has three modes. A server connection starts handshaking: reads block
// until the loop feeds ciphertext, writes are queued on the loop. A client
// connection (Dial) starts direct: the dialing goroutine runs the TLS
// handshake and the upgrade exchange over the real socket, blocking, before
// the socket has a loop. Either way, once the handshake is done the
// transport is switched to the loop's non-blocking mode (established,
// attach), where reads answer tlsbuf.ErrWouldBlock when nothing is fed.
type tlsTransport struct {
	wc *wsConn

	mu          sync.Mutex
	in          []byte   // ciphertext fed by the loop, not read by crypto/tls yet
	handshaking bool     // reads block; writes are queued on the loop
	closed      bool     // the connection is gone: reads end
	direct      net.Conn // client, before adoption: reads and writes go to the socket itself
	fed         chan struct{}

	local, remote net.Addr
}

func newTLSTransport(wc *wsConn) *tlsTransport {
	return &tlsTransport{wc: wc, handshaking: true, fed: make(chan struct{}, 1),
		local: wc.localAddr(), remote: wc.peerAddr()}
}

// newDirectTLSTransport returns the transport of a client connection
// while it is dialed: it reads and writes c, blocking, until attach.
func newDirectTLSTransport(c net.Conn) *tlsTransport {
	return &tlsTransport{direct: c, fed: make(chan struct{}, 1), local: c.LocalAddr(), remote: c.RemoteAddr()}
}

// attach moves a client's transport from the dialing goroutine's socket to
// wc's loop, in the non-blocking mode of an established connection. Loop
// only, before anything else uses the transport: from then on crypto/tls
// reads what the loop feeds (after what it already holds, which the loop
// reads at once) and writes to gnet.
func (t *tlsTransport) attach(wc *wsConn) {
	t.mu.Lock()
	t.wc, t.direct, t.handshaking = wc, nil, false
	t.mu.Unlock()
}

// directConn returns the socket of a transport in direct mode, or nil.
func (t *tlsTransport) directConn() net.Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.direct
}

// Read gives crypto/tls the ciphertext the loop fed. During the handshake
// it waits for more; after, it answers tlsbuf.ErrWouldBlock when there is
// none, which crypto/tls passes on without storing (engine/internal/tlsbuf).
func (t *tlsTransport) Read(p []byte) (int, error) {
	if d := t.directConn(); d != nil {
		return d.Read(p)
	}
	t.mu.Lock()
	for len(t.in) == 0 {
		switch {
		case t.closed:
			t.mu.Unlock()
			return 0, io.EOF
		case !t.handshaking:
			t.mu.Unlock()
			return 0, tlsbuf.ErrWouldBlock
		}
		t.mu.Unlock()
		<-t.fed
		t.mu.Lock()
	}
	n := copy(p, t.in)
	t.in = t.in[n:]
	if len(t.in) == 0 {
		t.in = nil
	}
	t.mu.Unlock()
	return n, nil
}

// Write sends crypto/tls's records: during the handshake, from the
// handshake goroutine, through a task on the loop; after it, on the loop,
// straight to gnet.
func (t *tlsTransport) Write(p []byte) (int, error) {
	if d := t.directConn(); d != nil {
		return d.Write(p)
	}
	t.mu.Lock()
	handshaking, closed := t.handshaking, t.closed
	t.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	if handshaking {
		b := append([]byte(nil), p...)
		wc := t.wc
		err := wc.lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			if wc.phase() != phaseClosed {
				_, _ = wc.c.Write(b)
			}
			return nil
		}))
		if err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if t.wc.phase() == phaseClosed {
		return 0, net.ErrClosed
	}
	return t.wc.c.Write(p)
}

// feed appends ciphertext read by the loop and returns how much is held.
func (t *tlsTransport) feed(b []byte) int {
	t.mu.Lock()
	t.in = append(t.in, b...)
	n := len(t.in)
	t.mu.Unlock()
	t.wake()
	return n
}

func (t *tlsTransport) wake() {
	select {
	case t.fed <- struct{}{}:
	default:
	}
}

// established switches the transport to the loop's non-blocking mode. Its
// reads no longer wait, so the channel they waited on is dropped: a
// select sending on a nil channel takes its default.
func (t *tlsTransport) established() {
	t.mu.Lock()
	t.handshaking = false
	t.fed = nil
	t.mu.Unlock()
}

// close ends the transport: a handshake blocked in Read gives up.
func (t *tlsTransport) close() {
	t.mu.Lock()
	t.closed = true
	t.in = nil
	t.mu.Unlock()
	t.wake()
}

// Close ends the transport; in direct mode it closes the socket, which is
// how crypto/tls interrupts a handshake whose context ended.
func (t *tlsTransport) Close() error {
	if d := t.directConn(); d != nil {
		return d.Close()
	}
	t.close()
	return nil
}

func (t *tlsTransport) LocalAddr() net.Addr  { return t.local }
func (t *tlsTransport) RemoteAddr() net.Addr { return t.remote }

// SetDeadline and its kin reach the socket in direct mode only: on a loop,
// the loop's timers bound everything.
func (t *tlsTransport) SetDeadline(d time.Time) error {
	if c := t.directConn(); c != nil {
		return c.SetDeadline(d)
	}
	return nil
}

func (t *tlsTransport) SetReadDeadline(d time.Time) error {
	if c := t.directConn(); c != nil {
		return c.SetReadDeadline(d)
	}
	return nil
}

func (t *tlsTransport) SetWriteDeadline(d time.Time) error {
	if c := t.directConn(); c != nil {
		return c.SetWriteDeadline(d)
	}
	return nil
}

// tlsConfig returns the server's TLS configuration: the application's,
// with ALPN http/1.1 offered when it sets no protocols.
func tlsConfig(c *tls.Config) *tls.Config {
	if c == nil {
		return nil
	}
	c = c.Clone()
	if len(c.NextProtos) == 0 {
		c.NextProtos = []string{"http/1.1"}
	}
	return c
}

// tlsStart sets a new connection up for its TLS handshake. Loop only.
func (wc *wsConn) tlsStart() {
	x := wc.extra()
	x.tls = &tlsState{tr: newTLSTransport(wc)}
	wc.setPhase(phaseTLS)
}

// tls returns the connection's TLS state (a *tlsState), nil for ws://.
func (wc *wsConn) tls() *tlsState {
	if x := wc.x.Load(); x != nil {
		return x.tls
	}
	return nil
}

// tlsHandshakeTraffic feeds the bytes of a connection in its TLS handshake
// to the transport and, on the first ones, queues the handshake. Loop only.
func (wc *wsConn) tlsHandshakeTraffic(ts *tlsState) gnet.Action {
	buf, _ := wc.c.Peek(-1)
	if len(buf) == 0 {
		return gnet.None
	}
	if ts.conn == nil && wc.untrustedProxy(buf) {
		return gnet.Close // a PROXY protocol header from a peer not trusted to send one (proxyproto.go)
	}
	held := ts.tr.feed(buf)
	_, _ = wc.c.Discard(len(buf))
	s := wc.lp.srv
	if held > s.opts.MaxHeaderBytes+maxTLSEarly {
		s.tlsFailed("oversized handshake")
		return gnet.Close
	}
	if !s.chargeHeader(wc.extra(), held) {
		s.tlsFailed("inbound memory")
		return gnet.Close
	}
	if ts.conn == nil {
		ts.conn = tls.Server(ts.tr, s.tlsConf)
		s.handshakes.queue(s, handshakeJob{wc: wc})
	}
	return gnet.None
}

// What an idle wss connection holds of crypto/tls's input side.
//
// crypto/tls reads records into Conn.rawInput, a bytes.Buffer that keeps
// the capacity of the largest record it read (about 18 KiB after one
// full-size record, 2 KiB after a ClientHello with an ML-KEM key share), and
// handshake messages into Conn.hand, which keeps the ClientHello's size
// (1.5 KiB) for the connection's life. Neither is exported. When
// engine/internal/tlsbuf found both (and checked that they behave as below),
// the loop lends crypto/tls a pooled buffer as rawInput for the length of
// one tlsTraffic call and takes it back afterwards, and drops hand after the
// handshake, so an idle connection keeps neither. For the buffer to be empty
// when it is taken back, crypto/tls is fed whole records only: a record
// that is still arriving waits in the transport, which is what rawInput
// would have held. When they are not found (another Go release), everything
// works as before and idle connections keep the buffers.

// tlsBridged decides, at the server's first wss connection (accepted or
// dialed), which road its wss connections take, and logs once why when it
// is not the usual one. crypto/tls is checked in-process (tlsbuf.Check):
// when a tls.Conn cannot be read from an event loop in this Go release,
// every wss connection goes through the goroutine bridge that serves
// hijacked TLS connections (upgrade.go), which needs nothing of crypto/tls
// but its API; when only its buffers were not found, the loop reads
// without lending them.
func (s *Server) tlsBridged() bool {
	s.tlsOnce.Do(func() {
		k := tlsbuf.Check()
		s.tlsk = k
		switch {
		case k.Loop != nil:
			s.log.Warn("wsloop: crypto/tls cannot be read from the event loops in this Go release: wss connections go through a bridge of two goroutines each",
				"go", runtime.Version(), "reason", k.Loop)
		case k.Buffers != nil:
			s.log.Warn("wsloop: crypto/tls's record buffers were not found in this Go release: idle wss connections keep them",
				"go", runtime.Version(), "reason", k.Buffers)
		}
	})
	return s.tlsk.Loop != nil
}

// tlsRawPool holds the record buffers lent to crypto/tls, one per loop in
// use at a time.
var tlsRawPool = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

// wholeTLSRecords returns the length of the complete TLS records at the
// start of b. A header announcing more than any valid record counts as
// complete, so that crypto/tls reads it and fails.
func wholeTLSRecords(b []byte) int {
	n := 0
	for len(b)-n >= 5 {
		l := 5 + (int(b[n+3])<<8 | int(b[n+4]))
		if l > 5+16384+2048 {
			return len(b)
		}
		if len(b)-n < l {
			break
		}
		n += l
	}
	return n
}

// tlsTraffic decrypts what arrived for an established wss connection into
// its carried input. It returns false when the TLS stream ended (the peer's
// close_notify, or a bad record), after which the connection is closed.
// Loop only.
func (wc *wsConn) tlsTraffic(ts *tlsState) bool {
	tr := ts.tr
	var lent *[]byte
	raw := wc.lp.srv.tlsk.RawInput(ts.conn) // nil: not found in this Go release
	if raw != nil && raw.Len() == 0 {
		lent = tlsRawPool.Get().(*[]byte)
		*raw = *bytes.NewBuffer((*lent)[:0])
	}
	// The ciphertext crypto/tls reads: gnet's bytes as they are, or joined
	// to a record that began in an earlier read.
	buf, _ := wc.c.Peek(-1)
	src := buf
	tr.mu.Lock()
	if len(tr.in) > 0 {
		src = append(tr.in, buf...)
	}
	n := len(src)
	if lent != nil {
		n = wholeTLSRecords(src)
	}
	tr.in = src[:n]
	tr.mu.Unlock()

	lp := wc.lp
	x := wc.x.Load()
	plain := lp.tlsPlain[:0]
	if len(x.pending) > 0 {
		plain = append(plain, x.pending...)
	}
	var err error
	for {
		if cap(plain)-len(plain) < 16<<10 {
			plain = slices.Grow(plain, 32<<10)
		}
		var n int
		n, err = ts.conn.Read(plain[len(plain):cap(plain)])
		plain = plain[:len(plain)+n]
		if err != nil {
			break
		}
	}
	lp.tlsPlain = plain[:0]
	x.pending = plain // read by in(); made the connection's own by keepCarried

	// A record still arriving stays with the transport, in its own memory:
	// src may be gnet's buffer, discarded now.
	tr.mu.Lock()
	tr.in = nil
	if rest := src[n:]; len(rest) > 0 {
		tr.in = append([]byte(nil), rest...)
	}
	tr.mu.Unlock()
	if len(buf) > 0 && wc.phase() != phaseClosed {
		_, _ = wc.c.Discard(len(buf)) // after the reads: src may alias gnet's buffer
	}
	wouldBlock := errors.Is(err, tlsbuf.ErrWouldBlock)
	if raw != nil && wouldBlock {
		// Take the lent buffer back (or the one crypto/tls grew from it),
		// and let crypto/tls keep nothing between reads.
		switch {
		case raw.Len() == 0:
			if lent != nil {
				raw.Reset()
				*lent = raw.AvailableBuffer()
				tlsRawPool.Put(lent)
			}
			*raw = bytes.Buffer{}
		case lent != nil:
			// Not whole records after all: keep the part, not the pool's buffer.
			*raw = *bytes.NewBuffer(bytes.Clone(raw.Bytes()))
			tlsRawPool.Put(lent)
		}
	}
	if wouldBlock {
		return true
	}
	if !errors.Is(err, io.EOF) {
		label := tlsFailureLabel(err) // a renegotiation attempt is an "unexpected message"
		if label == "other" {
			label = "bad record"
		}
		wc.lp.srv.tlsFailed(label)
	}
	return len(plain) > 0 // deliver what came before the end, then close
}

// keepCarried copies carried bytes that still point into the loop's TLS
// buffer, which the next connection reuses. Loop only.
func (wc *wsConn) keepCarried() {
	x := wc.x.Load()
	if x == nil || len(x.pending) == 0 {
		return
	}
	base := wc.lp.tlsPlain[:cap(wc.lp.tlsPlain)]
	if len(base) == 0 {
		return
	}
	p, lo := uintptr(unsafe.Pointer(&x.pending[0])), uintptr(unsafe.Pointer(&base[0]))
	if p >= lo && p < lo+uintptr(len(base)) {
		x.pending = append([]byte(nil), x.pending...)
	}
}

// tlsEstablished runs on the loop once the handshake goroutine finished a
// handshake: the connection goes on to its WebSocket handshake, with
// whatever plaintext crypto/tls already holds.
func (wc *wsConn) tlsEstablished() {
	if wc.phase() != phaseTLS {
		return // timed out or closed meanwhile
	}
	ts := wc.tls()
	ts.tr.established()
	// The handshake messages are read: do not keep the ClientHello's
	// buffer. A post-handshake message (a KeyUpdate) gets a new one.
	if h := wc.lp.srv.tlsk.Hand(ts.conn); h != nil && h.Len() == 0 {
		*h = bytes.Buffer{}
	}
	wc.lp.srv.releaseHeader(wc.extra()) // the early bytes are crypto/tls's now, read at once
	wc.setPhase(phaseHandshake)
	wc.lp.srv.stats.tlsHandshakes.Add(1)
	if wc.traffic() == gnet.Close {
		wc.closeNow()
	}
}

// tlsCloseNotify sends close_notify before the server ends an established
// wss connection. Loop only.
func (wc *wsConn) tlsCloseNotify() {
	if ts := wc.tls(); ts != nil && ts.conn != nil && wc.phase() != phaseTLS {
		_ = ts.conn.CloseWrite()
	}
}

// handshakePool runs TLS handshakes on at most Options.MaxTLSHandshakes
// goroutines, oldest first.
type handshakePool struct {
	mu      sync.Mutex
	q       []handshakeJob
	running int
	stopped bool               // the server drains: bridged handshakes end
	ctx     context.Context    // ends bridged handshakes at shutdown; made with the first
	cancel  context.CancelFunc // ends ctx
}

// handshakeJob is one queued handshake: a connection on its loop (the usual
// road), or an accepted socket that goes through the bridge.
type handshakeJob struct {
	wc  *wsConn
	raw net.Conn
	by  time.Time // raw: the end of its handshake timeout, as a socket deadline
}

// queue adds j and starts a goroutine if fewer than the cap run.
func (p *handshakePool) queue(s *Server, j handshakeJob) {
	p.mu.Lock()
	p.q = append(p.q, j)
	start := p.running < s.opts.MaxTLSHandshakes
	if start {
		p.running++
	}
	p.mu.Unlock()
	if start {
		go p.work(s) // bounded by MaxTLSHandshakes
	}
}

// work runs queued handshakes until the queue is empty.
func (p *handshakePool) work(s *Server) {
	for {
		p.mu.Lock()
		if len(p.q) == 0 {
			p.running--
			p.mu.Unlock()
			return
		}
		j := p.q[0]
		p.q[0] = handshakeJob{}
		p.q = p.q[1:]
		var ctx context.Context
		if j.raw != nil {
			if p.ctx == nil {
				p.ctx, p.cancel = context.WithCancel(context.Background())
				if p.stopped {
					p.cancel()
				}
			}
			ctx = p.ctx
		}
		p.mu.Unlock()
		if j.wc != nil {
			s.runHandshake(j.wc)
		} else {
			s.runBridgedHandshake(ctx, j.raw, j.by)
		}
	}
}

// shutdown ends the bridged handshakes running or queued: the server
// drains, and they would hold it up to a handshake timeout. (Handshakes on
// the loop road end when the drain closes their connections.)
func (p *handshakePool) shutdown() {
	p.mu.Lock()
	p.stopped = true
	if p.cancel != nil {
		p.cancel()
	}
	p.mu.Unlock()
}

// runHandshake runs one TLS handshake on the calling goroutine.
func (s *Server) runHandshake(wc *wsConn) {
	ts := wc.tls()
	ts.tr.mu.Lock()
	closed := ts.tr.closed
	ts.tr.mu.Unlock()
	if closed {
		return // its handshake timer fired while it waited for a goroutine
	}
	err := ts.conn.Handshake()
	if err == nil {
		_ = wc.lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			wc.tlsEstablished()
			return nil
		}))
		return
	}
	notTLS := s.handshakeFailed(err, ts.tr.remote)
	_ = wc.lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		if wc.phase() != phaseTLS {
			return nil
		}
		if notTLS {
			// A plain HTTP request on the TLS port: say so in plain
			// HTTP, as net/http does.
			_, _ = wc.c.Write(httpOnTLSPort)
			wc.setPhase(phaseFailing)
			wc.flushFailing()
			return nil
		}
		wc.closeNow()
		return nil
	}))
}

// handshakeFailed counts a failed TLS handshake under its label and reports
// whether the client spoke plain HTTP.
func (s *Server) handshakeFailed(err error, remote net.Addr) (notTLS bool) {
	var rhe tls.RecordHeaderError
	notTLS = errors.As(err, &rhe) && rhe.Conn != nil
	switch {
	case notTLS:
		s.tlsFailed("not tls")
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.tlsFailed("timeout") // the bridge road's socket deadline
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, context.Canceled):
		s.tlsFailed("closed")
	default:
		s.tlsFailed(tlsFailureLabel(err))
	}
	s.log.Debug("wsloop: TLS handshake failed", "remote", remote, "err", err)
	return notTLS
}

// queueBridged queues the TLS handshake of an accepted connection that will
// be bridged: the fallback road, for a Go release whose crypto/tls the
// loops cannot read (tlsBridged). The connection's handshake timeout runs
// from now, as a socket deadline.
func (s *Server) queueBridged(c net.Conn) {
	s.handshakes.queue(s, handshakeJob{raw: c, by: socketDeadline(s.opts.HandshakeTimeout)})
}

// runBridgedHandshake runs the TLS handshake of an accepted connection on
// the calling goroutine, bounded by its deadline and by ctx (the server's
// drain), then bridges the connection to a loop, where its WebSocket
// handshake runs as on a plain connection, under its own handshake timer.
// The connection was counted at accept; if it never reaches a loop, the
// count is taken back here.
func (s *Server) runBridgedHandshake(ctx context.Context, c net.Conn, by time.Time) {
	if len(s.opts.ProxyProtocol) > 0 {
		// Behind a balancer the PROXY protocol header comes before TLS:
		// read as net/http's road reads it (proxylistener.go), and the
		// bridge then reports the client's addresses.
		c = &proxyConn{Conn: c, s: s, trusted: s.proxyTrusted(c.RemoteAddr())}
	}
	_ = c.SetDeadline(by)
	tc := tls.Server(c, s.tlsConf)
	err := tc.HandshakeContext(ctx)
	if err == nil && s.draining.Load() {
		err = context.Canceled // it finished as the drain began: nobody serves it
	}
	if err != nil {
		if s.handshakeFailed(err, c.RemoteAddr()) {
			// As the loop road and net/http answer plain HTTP on a TLS
			// port; then read what the client sends until it closes or
			// the deadline passes, so that the close does not reset the
			// answer away.
			_, _ = c.Write(httpOnTLSPort)
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
		}
		c.Close()
		s.connGone()
		return
	}
	_ = c.SetDeadline(time.Time{})
	s.stats.tlsHandshakes.Add(1)
	if err := s.bridge(tc, &adoption{handshake: true}); err != nil {
		s.connGone()
		s.stats.acceptErrors.Add(1)
		if ok, n := s.stats.acceptLog.allow(s.clock, time.Second); ok {
			s.log.Warn("wsloop: could not bridge a wss connection to an event loop", "err", err, "failed_since_last_log", n)
		}
	}
}

var httpOnTLSPort = []byte("HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")

// tlsFailureLabel sorts a handshake error into a fixed set of labels, for
// Stats.TLSFailures.
func tlsFailureLabel(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "no cipher suite"), strings.Contains(msg, "unsupported versions"), strings.Contains(msg, "protocol version"):
		return "no common parameters"
	case strings.Contains(msg, "certificate"):
		return "certificate"
	case strings.Contains(msg, "oversized"), strings.Contains(msg, "record overflow"):
		return "oversized record"
	case strings.Contains(msg, "unexpected message"):
		return "unexpected message"
	case strings.Contains(msg, "bad record MAC"), strings.Contains(msg, "decrypt"):
		return "bad record"
	}
	return "other"
}

// tlsFailed counts a failed TLS handshake or connection under label.
func (s *Server) tlsFailed(label string) {
	s.stats.rmu.Lock()
	s.stats.tlsFailures[label]++
	s.stats.rmu.Unlock()
}
