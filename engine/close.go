package engine

import (
	"errors"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Closing.
//
// Every close frame the server sends is queued by queueCloseLocked, which
// also counts it in Stats.ClosesByCode. What happens to the TCP connection
// afterwards depends on why the server closes (closeMode). The loop acts on
// a queued close when it writes the pending frames (afterQueuedClose), so a
// close queued from another goroutine (Conn.Close, a write refused by the
// slow-consumer policy) is finished on the loop like any other.

// closeMode says how a close the server sends ends the connection.
type closeMode uint8

const (
	// closeAwait waits for the peer's close frame, bounded by
	// CloseTimeout: Conn.Close and the drain of Shutdown.
	closeAwait closeMode = iota
	// closeFail fails the connection (RFC 6455 §7.1.7): after the close
	// frame the server half-closes and discards input until the peer
	// closes or CloseTimeout passes. Protocol errors, limits, timeouts,
	// a panicking callback.
	closeFail
	// closeReply answers the peer's close frame: the TCP connection is
	// closed once the frame is written (RFC 6455 §7.1.1: the server
	// closes first).
	closeReply
	// closeAbort drops what is queued, sends the close frame and closes
	// the TCP connection: the slow-consumer policy, where the peer is not
	// reading and waiting for its answer would be pointless.
	closeAbort
)

// queueCloseLocked queues a close frame with code and reason after whatever
// the application queued (closeAbort: instead of it) and moves the
// connection to the phase that follows, under mu. It does nothing unless the
// connection is open: only one close frame is ever sent. Safe from any
// goroutine.
func (wc *wsConn) queueCloseLocked(code uint16, reason string, mode closeMode) bool {
	if wc.phase() != phaseOpen {
		return false
	}
	var p [codec.MaxCloseReason + 2]byte
	payload := codec.AppendClosePayload(p[:0], code, reason)
	// No data frame may follow the close frame (RFC 6455 §5.5.1): what
	// waited behind an open message is dropped, and that message is cut
	// short, which the peer's close handling allows.
	wc.dropHeldLocked()
	if mode == closeAbort && wc.out != nil {
		wc.out.b = wc.out.b[:0]
	}
	wc.out = growOut(wc.out, len(payload)+codec.MaxHeaderSize)
	if wc.st.Load()&sClient != 0 {
		wc.out.b = codec.AppendMaskedFrame(wc.out.b, true, codec.OpClose, 0, newMask(), payload)
	} else {
		wc.out.b = codec.AppendFrame(wc.out.b, true, codec.OpClose, 0, payload)
	}
	switch mode {
	case closeAwait, closeReply:
		wc.setPhase(phaseClosing)
	case closeFail:
		wc.setPhase(phaseFailing)
	case closeAbort:
		wc.setPhase(phaseFailing)
		wc.set(sAbort, true)
	}
	wc.lp.srv.stats.countClose(code)
	return true
}

// afterQueuedClose finishes a close whose frame was just written: start the
// wait for the peer's answer, or end the TCP connection for an abort.
// Loop only.
func (wc *wsConn) afterQueuedClose() {
	switch wc.phase() {
	case phaseClosing:
		if !wc.has(sCloseTimed) {
			wc.startCloseTimer() // our close frame just went out: wait for the answer, bounded
		}
	case phaseFailing:
		if wc.has(sAbort) {
			wc.set(sAbort, false)
			wc.setCloseErr(handler.ErrSlowConsumer)
			wc.closeNow()
		}
	}
}

// Close starts the closing handshake with code and reason. See [handler.Conn].
func (wc *wsConn) Close(code uint16, reason string) error {
	if !codec.ValidCloseCode(code) {
		code = codec.CloseNormal
	}
	wc.mu.Lock()
	if wc.phase() != phaseOpen {
		wc.mu.Unlock()
		return handler.ErrClosed
	}
	if wc.fenced() {
		// Behind the broadcasts queued before it, like any write.
		return wc.deferLocked(deferredWrite{close: true, code: code, why: reason})
	}
	wc.closeLocked(code, reason)
	return wc.queuedLocked()
}

// closeLocked queues Conn.Close's frame and records what it sent for
// OnClose. Under mu.
func (wc *wsConn) closeLocked(code uint16, reason string) {
	if !wc.queueCloseLocked(code, reason, closeAwait) {
		return
	}
	sent := &handler.CloseError{Code: code, Reason: reason}
	if len(reason) > codec.MaxCloseReason {
		var p [codec.MaxCloseReason + 2]byte
		sent.Reason = string(codec.AppendClosePayload(p[:0], code, reason)[2:])
	}
	wc.extra().sentClose = sent
}

// fail ends the connection for a protocol error, a limit, a timeout or a
// panic (RFC 6455 §7.1.7): it sends a close frame with code and reason,
// then half-closes the TCP connection once the frame is on its way and
// reads and drops what the peer still sends, until the peer closes or
// CloseTimeout passes (flushFailing). cause is what OnClose reports. Loop
// only.
func (wc *wsConn) fail(code uint16, reason string, cause error) {
	if wc.phase() == phaseClosed {
		return
	}
	wc.setCloseErr(cause)
	wc.dropAssembly() // nothing more will be delivered
	wc.mu.Lock()
	if !wc.queueCloseLocked(code, reason, closeFail) {
		wc.setPhase(phaseFailing) // a close frame went out already: stop reading
	}
	wc.mu.Unlock()
	wc.flushFailing()
}

// dropAssembly gives back the memory of a message that will never be
// delivered, at once rather than when the connection is finally closed.
// Loop only.
func (wc *wsConn) dropAssembly() {
	if x := wc.x.Load(); x != nil {
		wc.lp.srv.releaseAssembly(x)
	}
}

// drain starts the close handshake for shutdown. Loop only.
func (wc *wsConn) drain() {
	switch wc.phase() {
	case phaseHandshake, phaseTLS, phaseProxy:
		wc.setCloseErr(handler.ErrShutdown)
		wc.closeNow()
	case phaseOpen:
		const reason = "server shutting down"
		wc.setCloseErr(&handler.CloseError{Code: codec.CloseGoingAway, Reason: reason})
		wc.mu.Lock()
		wc.queueCloseLocked(codec.CloseGoingAway, reason, closeAwait)
		wc.mu.Unlock()
		wc.flush()
	}
}

// linger ends a connection after an HTTP response was written: half-close,
// then read and drop until the peer closes or CloseTimeout passes, so that
// unread request bytes cannot turn our close into a reset that destroys the
// response in flight. Loop only.
func (wc *wsConn) linger() {
	wc.dropInput()
	wc.setPhase(phaseFailing)
	wc.flushFailing()
}

// flushFailing writes what is pending and half-closes: the peer sees our
// close frame followed by FIN, and whatever it still sends is read and
// discarded until it closes too (or CloseTimeout passes). Closing at once
// instead could turn into a reset that destroys the close frame in flight.
func (wc *wsConn) flushFailing() {
	wc.mu.Lock()
	o := wc.out
	wc.out = nil
	wc.mu.Unlock()
	if o != nil {
		if len(o.b) > 0 {
			wc.write(o.b)
		}
		putOut(o)
	}
	if wc.phase() == phaseClosed {
		return
	}
	if !wc.has(sClient) {
		wc.tlsCloseNotify()
		if wc.c.OutboundBuffered() == 0 {
			_ = shutdownWrite(wc.c.Fd())
		}
	}
	// A client does not half-close: RFC 6455 §7.1.1 has the server close
	// the TCP connection first, so it waits for that (awaitServerClose).
	wc.startCloseTimer()
}

// awaitServerClose is where a client goes once the close handshake is done
// or its close frame is out after a failure: RFC 6455 §7.1.1 has the
// server close the TCP connection first ("so that it holds the TIME_WAIT
// state and not the client"), so the client reads and drops until the
// server's FIN, and closes itself only when CloseTimeout passes without
// it. Loop only.
func (wc *wsConn) awaitServerClose() {
	wc.setPhase(phaseFailing)
	wc.startCloseTimer()
}

// startCloseTimer bounds the wait for the peer's close frame or FIN from
// now. Loop only.
func (wc *wsConn) startCloseTimer() {
	s := wc.lp.srv
	wc.pingOrCloseAt = wc.lp.now
	wc.set(sCloseTimed, true)
	wc.lp.wheel.schedule(wc, wc.lp.now+s.ticks(s.opts.CloseTimeout))
}

// closeWhenFlushed closes the TCP connection once gnet has written all it
// holds, and returns the action for gnet: Close when nothing is left.
// gnet's own close writes what the socket takes at once and drops the rest,
// which would cut the end of a large reply sent just before the server
// closes (the echo of a message that came with the client's close frame) on
// a socket whose send buffer is full: a peer that reads slowly, or the
// socketpair of a bridged connection, whose buffer is small. Until then the
// connection is failing (input is read and dropped); the timer looks every
// tick, and CloseTimeout bounds the wait. Loop only.
func (wc *wsConn) closeWhenFlushed() gnet.Action {
	if wc.c.OutboundBuffered() == 0 {
		return gnet.Close
	}
	wc.setPhase(phaseFailing)
	wc.set(sCloseFlush, true)
	wc.startCloseTimer()
	wc.lp.wheel.schedule(wc, wc.lp.now+1)
	return gnet.None
}

// closeNow closes the TCP connection from the loop. gnet writes what is
// still in its outbound buffer first, as far as the socket takes it.
func (wc *wsConn) closeNow() {
	if wc.phase() == phaseClosed {
		return
	}
	wc.tlsCloseNotify()
	_ = wc.lp.el.Close(wc.c)
}

// sentCloseErr returns what OnClose reports for a close this side started
// (Conn.Close, drain) that ends without a recorded cause: the code and
// reason Conn.Close sent, else the peer's echoed code, else
// ErrCloseTimeout when the peer never answered (fallback 0).
func (wc *wsConn) sentCloseErr(fallback uint16) error {
	var sent *handler.CloseError
	wc.mu.Lock()
	if x := wc.x.Load(); x != nil {
		sent = x.sentClose
	}
	wc.mu.Unlock()
	switch {
	case sent != nil:
		return sent
	case fallback != 0:
		return &handler.CloseError{Code: fallback}
	}
	return handler.ErrCloseTimeout
}

// errPeerGone is reported when the TCP connection ended without a close
// frame and without a socket error.
var errPeerGone = errors.New("wsloop: connection closed by peer without a close frame (1006)")

// onClosed runs on the loop when gnet closed the socket (gnet's OnClose): it
// releases the connection's buffers and reservations and runs the
// handler's OnClose exactly once for connections whose OnOpen ran.
func (wc *wsConn) onClosed(err error) {
	s := wc.lp.srv
	if wc.phase() == phaseProxy && wc.c.InboundBuffered() > 0 && !s.draining.Load() {
		// The balancer closed in the middle of a header. (Without a byte
		// of one it was a TCP health check.)
		s.proxyRefused(proxyTruncated, wc.c.RemoteAddr(), err)
	}
	if wc.has(sTracked) {
		s.releaseClient(wc.peerAddr()) // the address it was admitted under (clients.go)
	}
	if wc.lp.proxyHdrs != nil {
		delete(wc.lp.proxyHdrs, wc)
	}
	if wc.phase() == phaseMoved {
		wc.detached() // gnet let go of a socket a handoff holds (handoff.go)
		return
	}
	wc.mu.Lock()
	wc.setPhase(phaseClosed)
	if wc.out != nil {
		putOut(wc.out)
		wc.out = nil
	}
	wc.dropHeldLocked()
	wc.mu.Unlock()
	wc.lp.wheel.drop(wc)
	if x := wc.x.Load(); x != nil {
		s.releaseAssembly(x)
		s.releaseHeader(x)
		x.pending = nil
		if x.tls != nil {
			x.tls.tr.close() // a handshake waiting for bytes gives up
		}
	}
	s.closeDeflate(wc) // permessage-deflate: return the context-takeover reservation (deflate.go)
	wc.fireDrain()     // a producer waiting for the backlog is not left waiting (readpause.go)
	if wc.has(sHandlerRan) {
		s.stats.open.Add(-1)
		cause := wc.closeErr()
		if cause == nil {
			cause = err
			if s.draining.Load() {
				cause = handler.ErrShutdown
			}
			if cause == nil {
				cause = errPeerGone
			}
		}
		s.callClose(wc, cause)
	}
	s.connGone()
}

// connGone uncounts a connection that is closed, moved away (handoff.go),
// or ended before it reached a loop (a bridged TLS handshake, tls.go).
func (s *Server) connGone() {
	if s.stats.conns.Add(-1) == 0 {
		if s.draining.Load() {
			s.drainOnce.Do(func() { close(s.drained) })
		}
		select {
		case s.emptied <- struct{}{}:
		default:
		}
	}
	s.descriptorFreed()
}
