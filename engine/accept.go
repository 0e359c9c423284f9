package engine

import (
	"errors"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

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
// connections. What it costs, measured against gnet's own acceptor (see
// the package README): gnet duplicates the descriptor and closes the
// original (two descriptors for a moment, covered by FDReserve), the
// calling goroutine waits until the loop has registered the socket, and Go's
// net.Conn, its addresses and gnet's hand-off state are garbage afterwards.
//
// Because the hand-off waits for the loop, a goroutine accepting alone
// spends much of its time waiting, and every connection costs two thread
// wake-ups (the loop's, then the acceptor's). Several acceptors side by
// side let a loop register more than one socket per wake-up; the count is
// fixed, never one per connection. Measured on two cores (unpaced ramp of
// 19,000): one acceptor ~20k connections/s, four ~25k, gnet's own acceptor
// ~39k (see the package README).

// acceptors is the number of goroutines that accept on one listener: past
// a few they only contend for it.
const acceptors = 4

// reusePort sets SO_REUSEPORT on a listening socket before it binds.
func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// defaultMaxConns keeps reserve descriptors free under RLIMIT_NOFILE for
// everything else the process does: listeners, files, the second descriptor
// of a socket being adopted, a refused connection being answered.
func defaultMaxConns(reserve int) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 30
	}
	n := int(rl.Cur) - reserve
	if n < 1 {
		n = 1
	}
	return n
}

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
		default:
			if err := s.adopt(c, nil); err != nil {
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
// descriptors or memory, or the peer gave up before it was accepted.
func acceptRetryable(err error) bool {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM,
			unix.ECONNABORTED, unix.ECONNRESET, unix.EINTR, unix.EAGAIN,
			unix.EPERM, unix.EPROTO, unix.ETIMEDOUT:
			return true
		}
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
	_ = rc.Control(func(fd uintptr) {
		a, err := unix.Dup(int(fd))
		if err != nil {
			ok = false
			return
		}
		b, err := unix.Dup(int(fd))
		if err != nil {
			ok = false
		} else {
			unix.Close(b)
		}
		unix.Close(a)
	})
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

// refuse answers a connection the server will not serve with resp and
// closes it, from the accepting goroutine: a refused socket holds its
// descriptor for no longer than this call. Whatever the client already
// sent is read first, so that the close does not turn into a reset that
// would destroy the response in flight.
func refuse(c net.Conn, resp []byte) {
	if rc, err := c.(syscall.Conn).SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			var buf [1024]byte
			for i := 0; i < 8; i++ {
				if n, err := unix.Read(int(fd), buf[:]); n <= 0 || err != nil {
					break
				}
			}
			_, _ = unix.Write(int(fd), resp) // a fresh socket's send buffer takes it whole
			_ = unix.Shutdown(int(fd), unix.SHUT_WR)
		})
	}
	_ = c.Close()
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

	client bool      // dialed by this side: masks its frames, reads unmasked ones (dial.go)
	tls    *tlsState // wss from Dial: crypto/tls in its transport's direct mode, attached to the loop here

	wc *wsConn // set on the loop: the connection, for Upgrade and Dial to return
}

// adopt hands c to an event loop: gnet duplicates its descriptor and closes
// c, then the loop registers the duplicate and runs opened (and, for an
// upgraded connection, OnOpen) before adopt returns. The caller has
// counted the connection in stats.conns; on error it is not registered and
// the caller must take it back.
func (s *Server) adopt(c net.Conn, a *adoption) error {
	var ctx any
	if a != nil {
		ctx = a
	}
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

// ErrNotServing is returned by Upgrade when the server's event loops are not
// running: before Serve or ListenAndServe, or after Shutdown.
var ErrNotServing = errors.New("wsloop: server not serving")

// opened runs on the loop for every adopted socket: it creates the
// connection's state, in the handshake phase with its handshake timer
// running, or open already when the handshake happened elsewhere.
func (s *Server) opened(c gnet.Conn) {
	lp := s.loopFor(c.EventLoop())
	wc := &wsConn{c: c, lp: lp}
	wc.lastRead = lp.now
	lp.wheel.add(wc)
	a, _ := c.Context().(*adoption)
	c.SetContext(wc)
	// EnrollContext also stored the adoption as gnet's SafeContext, which
	// would keep it (and the bytes it carries) for the connection's life;
	// trimGnetConn drops it with the addresses' extra bytes (gnetconn.go).
	if !lp.trimGnetConn(c, a != nil && a.client) && a != nil {
		c.SetSafeContext(nil)
	}
	if a != nil {
		wc.adopted(a)
		return
	}
	wc.msgStart = lp.now // the handshake timeout runs from accept, TLS included
	lp.wheel.schedule(wc, lp.now+s.ticks(s.opts.HandshakeTimeout))
	if s.tlsConf != nil {
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
