package engine

import (
	"errors"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Accepting, and the descriptor budget.
//
// gnet's own acceptor cannot be used: it accepts until the listen queue is
// empty before any loop runs OnOpen (so a limit checked there cannot bound
// the descriptors it takes), and it stops the whole engine when accept fails
// with EMFILE, ENFILE or ENOBUFS. A burst of connections at the descriptor
// limit would end the server. So wsloop accepts itself, one connection at a
// time on each of a few goroutines per server (acceptors), and hands each
// socket to a loop:
//
//   - Before a connection is handed to a loop it is counted against
//     maxConns (RLIMIT_NOFILE minus FDReserve by default). Past it, the
//     connection gets a 503 and is closed at once by the accepting
//     goroutine, so refused sockets never pile up.
//   - When accept itself fails because the process or the system is out of
//     descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), the accept
//     loop logs once per interval and waits until a connection closes or
//     the next tick, then tries again. Nothing stops the server.
//
// The adoption path. Every socket reaches a loop through one function,
// adopt, which calls gnet's Client.EnrollContext: the loops are a gnet
// client engine, which has no listener of its own. The same path serves
// the connections upgraded through net/http and the outgoing client
// connections. What it costs against gnet's own acceptor: gnet duplicates the descriptor and closes the
// original (two descriptors for a moment, covered by FDReserve), the
// calling goroutine waits until the loop has registered the socket, and Go's
// net.Conn, its addresses and gnet's hand-off state are garbage afterwards.
//
// Because the hand-off waits for the loop, a goroutine accepting alone
// spends much of its time waiting, and every connection costs two thread
// wake-ups (the loop's, then the acceptor's). Several acceptors side by
// side let a loop register more than one socket per wake-up; the count is
// fixed, never one per connection. The accept rate against gnet's own
// acceptor and the peers is measured by bench/ (bench/README.md, "accept
// storm"), and reported in the README's performance section.

// acceptors is the number of goroutines that accept on one listener: past
// a few they only contend for it.
const acceptors = 4

var (
	limitResponse = codec.AppendResponse(nil, http.StatusServiceUnavailable, http.Header{"Retry-After": {"5"}}, []byte("server at its connection limit, try again later\n"))
	drainResponse = codec.AppendResponse(nil, http.StatusServiceUnavailable, http.Header{"Retry-After": {"5"}}, []byte("server shutting down\n"))
)

// acceptLoop accepts connections until ln is closed. It returns nil when ln
// was closed by Serve, or the error that made accepting impossible.
func (s *Server) acceptLoop(ln net.Listener) error {
	paused := false
	for {
		if paused && !s.descriptorHeadroom(ln) {
			s.waitForDescriptor()
			continue
		}
		paused = false
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-s.stopReq:
				return nil
			default:
			}
			if s.gate.held() {
				// A handoff gave the listener to a successor
				// (handoff.go): wait until it commits (the
				// listener is the successor's) or is called off.
				if s.gate.wait(s.stopReq) {
					return errHandedOff
				}
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !acceptRetryable(err) {
				return err
			}
			s.stats.acceptErrors.Add(1)
			if ok, n := s.stats.acceptLog.allow(s.clock, time.Second); ok {
				s.log.Warn("wsloop: accept failed, pausing until a connection closes", "err", err, "conns", s.stats.conns.Load(), "failed_since_last_log", n)
			}
			s.waitForDescriptor()
			paused = true
			continue
		}
		s.stats.accepted.Add(1)
		switch {
		case s.draining.Load():
			s.stats.reject(http.StatusServiceUnavailable, rejectShutdown)
			refuse(c, drainResponse)
		case s.stats.conns.Add(1) > int64(s.maxConns):
			s.stats.conns.Add(-1)
			s.stats.reject(http.StatusServiceUnavailable, rejectConnLimit)
			if ok, n := s.stats.limitLog.allow(s.clock, time.Second); ok {
				s.log.Warn("wsloop: connection limit reached, refusing connections", "max_conns", s.maxConns, "refused_since_last_log", n)
			}
			refuse(c, limitResponse)
		case s.tlsConf != nil && s.tlsBridged():
			s.queueBridged(c) // the fallback road for wss (tls.go)
		default:
			var mark any // nil, or acceptTracked{} when the per-client limits count it
			if s.clients != nil && !s.proxyTrusted(c.RemoteAddr()) {
				// Checked here, before the socket costs a loop anything;
				// a trusted balancer's clients are checked once its PROXY
				// header names them (proxyproto.go).
				v, counted := s.admitClient(c.RemoteAddr())
				if v != clientAdmitted {
					s.stats.conns.Add(-1)
					if s.tlsConf != nil {
						_ = c.Close() // no HTTP on the TLS port before its handshake
					} else {
						refuse(c, clientResponses[v])
					}
					continue
				}
				if counted {
					mark = acceptTracked{}
				}
			}
			if err := s.enroll(c, mark); err != nil {
				if mark != nil {
					s.releaseClient(c.RemoteAddr())
				}
				s.stats.conns.Add(-1)
				s.stats.acceptErrors.Add(1)
				if ok, n := s.stats.acceptLog.allow(s.clock, time.Second); ok {
					s.log.Warn("wsloop: could not hand a connection to an event loop", "err", err, "failed_since_last_log", n)
				}
				if acceptRetryable(err) {
					s.waitForDescriptor()
					paused = true
				}
			}
		}
	}
}

// acceptRetryable reports whether an accept (or a dup during adoption)
// failed for a reason that passes: the process or the system is out of
// descriptors or memory, or the peer gave up before it was accepted. The
// error numbers that say so differ by system (retryableErrno,
// sockets_*.go).
func acceptRetryable(err error) bool {
	var errno syscall.Errno
	if errors.As(err, &errno) && retryableErrno(errno) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitForDescriptor pauses an accept loop after a retryable failure until
// a connection closes or the next tick of the server's clock, so that a
// listener that stays readable does not spin. Each such event wakes one
// paused acceptor; the others follow at the next ones.
func (s *Server) waitForDescriptor() {
	s.acceptPaused.Add(1)
	select {
	case <-s.fdFreed:
	case <-s.stopReq:
	}
	s.acceptPaused.Add(-1)
}

// descriptorHeadroom reports whether the process can open the two
// descriptors that accepting and adopting a connection take for a moment.
// After a pause the accept loop checks before it accepts: a connection
// taken from the listen queue when only one descriptor is free would be
// closed at once (its duplicate fails), where it could have waited.
func (s *Server) descriptorHeadroom(ln net.Listener) bool {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	ok = true
	_ = rc.Control(func(fd uintptr) { ok = twoDescriptorsFree(fd) })
	return ok
}

// descriptorFreed wakes a paused accept loop.
func (s *Server) descriptorFreed() {
	if s.acceptPaused.Load() == 0 {
		return
	}
	select {
	case s.fdFreed <- struct{}{}:
	default:
	}
}

// adoption carries what a socket brings to its loop besides the socket:
// nil for a connection wsloop accepted itself, the outcome of the handshake
// for one upgraded through net/http or dialed (Dial).
type adoption struct {
	info *connInfo       // path, query, subprotocol, and the addresses of a bridged connection
	ctx  any             // Conn.Context before OnOpen
	h    handler.Handler // the connection's handler, nil for the server's
	max  int64           // the connection's MaxMessageSize, 0 for the server's
	defl *connDeflate    // negotiated permessage-deflate, nil if none
	pre  []byte          // bytes the peer sent after its handshake, already read off the socket (by net/http, or by Dial)

	// handshake: the WebSocket handshake is still to come, on the loop, as
	// for a connection accepted here. Set for a wss connection bridged at
	// accept (tls.go, runBridgedHandshake); info then has its addresses.
	handshake bool

	client  bool      // dialed by this side: masks its frames, reads unmasked ones (dial.go)
	tracked bool      // counted by the per-client limits (Upgrade): uncounted when it closes
	tls     *tlsState // wss from Dial: crypto/tls in its transport's direct mode, attached to the loop here

	bridged bool        // the loop's socket is one end of a pair whose other end two goroutines copy to a TLS connection (upgrade.go)
	restore *connRecord // a connection moved here from the predecessor (handoff.go)
	retake  *moveRec    // a connection of ours whose move was called off (handoff.go)

	wc *wsConn // set on the loop: the connection, for Upgrade and Dial to return
}

// adopt hands c to an event loop: gnet duplicates its descriptor and closes
// c, then the loop registers the duplicate and runs opened (and, for an
// upgraded connection, OnOpen) before adopt returns. The caller has
// counted the connection in stats.conns; on error it is not registered and
// the caller must take it back.
func (s *Server) adopt(c net.Conn, a *adoption) error {
	if a == nil {
		return s.enroll(c, nil)
	}
	return s.enroll(c, a)
}

// acceptTracked marks a socket accepted by wsloop whose connection the
// per-client limits counted: the loop must uncount it when it closes. It
// has no size, so passing it costs no allocation.
type acceptTracked struct{}

// enroll is adopt with the value opened finds in the connection's context:
// nil, acceptTracked{} or an *adoption.
func (s *Server) enroll(c net.Conn, ctx any) error {
	s.mu.Lock()
	cli := s.cli
	s.mu.Unlock()
	if cli == nil {
		c.Close()
		return ErrNotServing
	}
	_, err := cli.EnrollContext(c, ctx)
	return err
}

// ErrNotServing is returned by Upgrade, Dial and the adoption of a socket
// once the server is draining or has stopped (after Shutdown, or after the
// context given to Start ended).
var ErrNotServing = errors.New("wsloop: server not serving")

// opened runs on the loop for every adopted socket: it creates the
// connection's state, in the handshake phase with its handshake timer
// running, or open already when the handshake happened elsewhere.
func (s *Server) opened(c gnet.Conn) {
	lp := s.loopFor(c.EventLoop())
	a, _ := c.Context().(*adoption)
	if a != nil && a.retake != nil {
		a.retake.retaken(c) // handoff.go
		return
	}
	wc := &wsConn{c: c, lp: lp}
	wc.lastRead = lp.now
	lp.wheel.add(wc)
	if _, tracked := c.Context().(acceptTracked); tracked || a != nil && a.tracked {
		wc.set(sTracked, true)
	}
	if a != nil && a.bridged {
		wc.set(sBridged, true)
	}
	c.SetContext(wc)
	// EnrollContext also stored the adoption as gnet's SafeContext, which
	// would keep it (and the bytes it carries) for the connection's life;
	// trimGnetConn drops it with the addresses' extra bytes (gnetconn.go).
	if !lp.trimGnetConn(c, a != nil && a.client) && a != nil {
		c.SetSafeContext(nil)
	}
	if a != nil && a.restore != nil {
		wc.restored(a) // handoff.go
		return
	}
	// A socket taken just before Shutdown began can reach its loop after
	// the drain swept that loop (or a loop the drain did not know yet):
	// the drain would never see it, and Shutdown would wait for it.
	draining := s.draining.Load()
	if a != nil && !a.handshake {
		wc.adopted(a)
		if draining {
			wc.drain()
		}
		return
	}
	if draining {
		wc.drain()
		return
	}
	wc.acceptOrMsgAt = lp.now // the handshake timeout runs from accept, PROXY header and TLS included
	lp.wheel.schedule(wc, lp.now+s.ticks(s.opts.HandshakeTimeout))
	switch {
	case a != nil:
		// Bridged after its TLS handshake: plaintext from here on, and
		// the client's addresses (the loop's socket is one end of a
		// socketpair).
		wc.mu.Lock()
		wc.setInfoLocked(a.info) // this connection's own: it carries addresses
		wc.mu.Unlock()
	case len(s.opts.ProxyProtocol) > 0 && s.proxyTrusted(c.RemoteAddr()):
		wc.setPhase(phaseProxy) // its PROXY protocol header first, then TLS (proxyproto.go)
	case s.tlsConf != nil:
		wc.tlsStart()
	}
	if s.testHookOpened != nil {
		s.testHookOpened()
	}
}

// adopted opens a connection whose handshake was done before it reached the
// loop, then decodes the bytes the client sent after its request.
func (wc *wsConn) adopted(a *adoption) {
	a.wc = wc
	if a.client {
		wc.set(sClient, true)
		wc.dec.Client = true // RFC 6455 §5.1: a masked server frame fails the connection
		wc.lp.srv.stats.dialed.Add(1)
	}
	if a.tls != nil {
		// From here crypto/tls reads what this loop feeds and writes to
		// gnet; what it already holds is read below, at once.
		wc.extra().tls = a.tls
		a.tls.tr.attach(wc)
	}
	if a.h != nil || a.max != 0 || a.defl != nil || len(a.pre) > 0 {
		x := wc.extra()
		if a.h != nil {
			x.h = a.h
			x.stream, _ = a.h.(handler.StreamHandler)
		}
		x.maxMsg = a.max
		if len(a.pre) > 0 {
			x.pending = a.pre
		}
	}
	if a.defl != nil {
		wc.applyDeflate(a.defl)
	}
	info := a.info
	if info != nil && info.remote == nil && info.local == nil {
		info = wc.lp.internInfo(info) // made by Upgrade or Dial: share it with the loop's others (info.go)
	}
	wc.open(info, a.ctx)
	// Decode what came with the handshake now: no read event will come
	// for bytes that are not in the socket any more. For wss that
	// includes whatever crypto/tls holds, decrypted or not.
	if wc.phase() == phaseOpen && (a.tls != nil || wc.inputLeft()) {
		if wc.traffic() == gnet.Close {
			wc.closeNow()
		}
	}
}
