package engine

import (
	"context"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Timers. Each loop has a timer wheel (below) whose tick is a quarter of the
// shortest timeout; the server's clock calls onTick every tick, which moves
// every loop's wheel on that loop. A connection has one wheel entry, for its
// earliest deadline; when it fires, onTimer enforces every timeout that
// applies and schedules the next check.

// tickFor picks the timer wheel's resolution: a quarter of the shortest
// timeout, between 5 ms and 500 ms, so that timeouts fire within 25% of
// their value and an idle server wakes at most a few times a second.
func tickFor(o *Options) time.Duration {
	min := o.HandshakeTimeout
	for _, d := range []time.Duration{o.IdleTimeout, o.MessageTimeout, o.CloseTimeout, o.WriteStallTimeout, o.PingInterval, o.PongTimeout} {
		if d > 0 && d < min {
			min = d
		}
	}
	t := min / 4
	if t < 5*time.Millisecond {
		t = 5 * time.Millisecond
	}
	if t > 500*time.Millisecond {
		t = 500 * time.Millisecond
	}
	return t
}

// ticks converts a duration to wheel ticks, rounding up, at least 1.
func (s *Server) ticks(d time.Duration) uint32 {
	t := uint32((d + s.tick - 1) / s.tick)
	if t == 0 {
		t = 1
	}
	return t
}

// ticksSince returns the tick of time t, counted from the server's start.
func (s *Server) ticksSince(t time.Time) uint32 { return uint32(t.Sub(s.start)/s.tick) + 1 }

// onTick runs every tick on the clock's goroutine: it queues the wheel's
// advance on every loop (one task per loop at a time, so a loop stuck in a
// callback does not pile them up) and wakes a paused accept loop. With a
// clock other than the system's (a test's), it returns only once every loop
// has advanced, so that a test that moved the clock sees the timeouts it
// caused.
func (s *Server) onTick() {
	s.descriptorFreed()
	if s.clients != nil {
		s.clients.sweep(s.sinceStart()) // per-client state of clients gone quiet (clients.go)
	}
	_, system := s.clock.(systemClock)
	queued := make([]*loop, 0, 8)
	for _, lp := range s.loopList() {
		if !lp.ticking.CompareAndSwap(false, true) {
			continue
		}
		select {
		case <-lp.ticked:
		default:
		}
		if err := lp.el.Execute(context.Background(), lp.tickTask); err != nil {
			lp.ticking.Store(false)
			continue
		}
		queued = append(queued, lp)
	}
	if system {
		return
	}
	for _, lp := range queued {
		select {
		case <-lp.ticked:
		case <-s.stopReq:
			return
		}
	}
}

// armTimer schedules the connection's next deadline from its state. Loop only.
func (wc *wsConn) armTimer() {
	s := wc.lp.srv
	lp := wc.lp
	next := uint32(0)
	consider := func(at uint32) {
		if next == 0 || int32(at-next) < 0 {
			next = at
		}
	}
	o := &s.opts
	paused := wc.has(sPaused) // the waits for input are suspended (readpause.go)
	if o.IdleTimeout > 0 && !paused {
		idle := s.ticks(o.IdleTimeout)
		if !wc.has(sProbeSent) {
			consider(wc.lastRead + idle/2)
		} else {
			consider(wc.lastRead + idle)
		}
	}
	if wc.acceptOrMsgAt != 0 && o.MessageTimeout > 0 && !paused {
		consider(wc.acceptOrMsgAt + s.ticks(o.MessageTimeout))
	}
	if o.PingInterval > 0 && !paused {
		if wc.has(sPongWait) {
			consider(wc.pingOrCloseAt + s.ticks(o.PongTimeout))
		} else {
			consider(wc.pingOrCloseAt + s.ticks(o.PingInterval))
		}
	}
	if x := wc.x.Load(); x != nil && x.stallSince != 0 {
		consider(x.stallSince + s.ticks(o.WriteStallTimeout))
	}
	if since := wc.heldSince(); since != 0 && o.WriteStallTimeout > 0 {
		consider(since + s.ticks(o.WriteStallTimeout))
	}
	if next != 0 {
		if int32(next-lp.now) <= 0 {
			next = lp.now + 1
		}
		lp.wheel.schedule(wc, next)
	}
}

// onTimer runs when the connection's wheel entry is due: it enforces every
// timeout that applies and schedules the next check. Loop only.
func (wc *wsConn) onTimer() {
	s := wc.lp.srv
	lp := wc.lp
	now := lp.now
	o := &s.opts
	switch wc.phase() {
	case phaseTLS:
		if now-wc.acceptOrMsgAt >= s.ticks(o.HandshakeTimeout) {
			lp.stats.timeouts.Add(1)
			s.tlsFailed("timeout")
			wc.closeNow()
			return
		}
		lp.wheel.schedule(wc, wc.acceptOrMsgAt+s.ticks(o.HandshakeTimeout))
		return
	case phaseProxy:
		if now-wc.acceptOrMsgAt >= s.ticks(o.HandshakeTimeout) {
			lp.stats.timeouts.Add(1)
			s.proxyRefused(proxyTimeout, wc.c.RemoteAddr(), nil)
			wc.setPhase(phaseFailing) // counted: not "truncated" as well when it closes
			wc.closeNow()             // the balancer's fault, not the client's: no HTTP answer
			return
		}
		lp.wheel.schedule(wc, wc.acceptOrMsgAt+s.ticks(o.HandshakeTimeout))
		return
	case phaseHandshake:
		if now-wc.acceptOrMsgAt >= s.ticks(o.HandshakeTimeout) {
			wc.handshakeTimedOut()
			return
		}
		lp.wheel.schedule(wc, wc.acceptOrMsgAt+s.ticks(o.HandshakeTimeout))
		return
	case phaseClosing, phaseFailing:
		if wc.has(sCloseFlush) {
			// Closing once gnet has written everything (closeWhenFlushed).
			if wc.c.OutboundBuffered() == 0 || now-wc.pingOrCloseAt >= s.ticks(o.CloseTimeout) {
				wc.closeNow()
				return
			}
			lp.wheel.schedule(wc, now+1)
			return
		}
		if !wc.has(sCloseTimed) {
			wc.pingOrCloseAt = now
			wc.set(sCloseTimed, true)
		}
		if now-wc.pingOrCloseAt >= s.ticks(o.CloseTimeout) {
			if wc.phase() == phaseClosing {
				// The peer never answered our close frame. (A failing
				// connection was counted for whatever failed it.) A
				// server's OnClose reports the close it sent; a
				// client's says the server never answered
				// (handler.ErrCloseTimeout), which a client needs to
				// tell a completed close from an abandoned one.
				if wc.has(sClient) {
					wc.setCloseErr(handler.ErrCloseTimeout)
				} else {
					wc.setCloseErr(wc.sentCloseErr(0))
				}
				lp.stats.timeouts.Add(1)
			}
			wc.closeNow()
			return
		}
		lp.wheel.schedule(wc, wc.pingOrCloseAt+s.ticks(o.CloseTimeout))
		return
	case phaseClosed, phaseMoved:
		return
	}

	paused := wc.has(sPaused) // the waits for input are suspended (readpause.go)
	if o.IdleTimeout > 0 && !paused {
		idle := s.ticks(o.IdleTimeout)
		since := now - wc.lastRead
		if since >= idle {
			lp.stats.timeouts.Add(1)
			wc.fail(codec.CloseGoingAway, "idle timeout", handler.ErrIdleTimeout)
			return
		}
		if since >= idle/2 && !wc.has(sProbeSent) {
			wc.set(sProbeSent, true)
			if !wc.pingOnLoop() {
				return
			}
		}
	}
	if wc.acceptOrMsgAt != 0 && o.MessageTimeout > 0 && !paused && now-wc.acceptOrMsgAt >= s.ticks(o.MessageTimeout) {
		lp.stats.timeouts.Add(1)
		wc.fail(codec.ClosePolicyViolation, "message not completed in time", handler.ErrMessageTimeout)
		return
	}
	if o.PingInterval > 0 && !paused {
		if wc.has(sPongWait) && now-wc.pingOrCloseAt >= s.ticks(o.PongTimeout) {
			lp.stats.timeouts.Add(1)
			wc.fail(codec.ClosePolicyViolation, "pong timeout", handler.ErrPongTimeout)
			return
		}
		if !wc.has(sPongWait) && now-wc.pingOrCloseAt >= s.ticks(o.PingInterval) {
			wc.pingOrCloseAt = now
			wc.set(sPongWait, true)
			if !wc.pingOnLoop() {
				return
			}
		}
	}
	if since := wc.heldSince(); since != 0 && o.WriteStallTimeout > 0 && now-since >= s.ticks(o.WriteStallTimeout) {
		// Data waited behind a fragmented message that was never
		// finished: the writer that opened it is gone or stuck.
		lp.stats.timeouts.Add(1)
		wc.fail(codec.ClosePolicyViolation, "message left unfinished", handler.ErrMessageStalled)
		return
	}
	if x := wc.x.Load(); x != nil && x.stallSince != 0 {
		ob := wc.c.OutboundBuffered()
		switch {
		case ob == 0:
			x.stallSince = 0
		case ob < x.stallBytes:
			x.stallSince, x.stallBytes = now, ob // it drains, slowly
		case now-x.stallSince >= s.ticks(o.WriteStallTimeout):
			lp.stats.timeouts.Add(1)
			wc.setCloseErr(handler.ErrWriteStall)
			wc.setPhase(phaseFailing)
			wc.closeNow()
			return
		}
	}
	wc.flush()
	if wc.phase() == phaseOpen {
		wc.armTimer()
	}
}

// pingOnLoop sends a server ping from the loop (the idle probe, the
// PingInterval ping) and reports whether the connection is still open.
// Ping queues its frame the way a write from any goroutine does; between
// beginCallbacks and endCallbacks the write path leaves the flush to the
// loop instead of queueing a flush task on it, so a probe does not cost
// every idle connection a task (and gnet's allocations for it) once per
// probe period. Loop only, outside callbacks.
func (wc *wsConn) pingOnLoop() bool {
	if wc.has(sInLoop) {
		_ = wc.Ping(nil) // inside a callback batch: its end flushes
		return true
	}
	wc.beginCallbacks()
	_ = wc.Ping(nil)
	wc.endCallbacks()
	return wc.phase() != phaseClosed
}

// wheel is a hashed timer wheel: one slot per tick modulo its size, each slot
// an intrusive list of connections whose deadline falls on it, plus one
// more list, parked, for connections with no deadline. Every connection of
// the loop is on exactly one of these lists from accept to close, so the
// wheel is also the loop's list of connections (for shutdown and
// BroadcastAll) and a connection needs no second pair of links.
//
// A connection has at most one timed entry, for its earliest deadline; when
// that fires the connection checks all its timeouts and schedules the next
// one. Activity (bytes read) does not touch the wheel: it only updates a
// tick stamp that the firing entry compares against. So a tick costs
// O(expired entries), never O(connections), and a busy connection costs at
// most one wheel move per timeout period.
type wheel struct {
	slots [wheelSlots + 1]*wsConn // slots[parked]: no deadline
	n     int                     // connections on all lists
	tmp   []*wsConn               // each's snapshot, reused
}

const (
	wheelSlots = 1024
	parked     = wheelSlots
)

// slot returns the head of the list wc is on.
func (w *wheel) slot(wc *wsConn) **wsConn {
	if wc.has(sArmed) {
		return &w.slots[wc.deadline%wheelSlots]
	}
	return &w.slots[parked]
}

func (w *wheel) push(head **wsConn, wc *wsConn) {
	wc.tnext, wc.tprev = *head, nil
	if *head != nil {
		(*head).tprev = wc
	}
	*head = wc
}

func (w *wheel) unlink(wc *wsConn) {
	if wc.tprev != nil {
		wc.tprev.tnext = wc.tnext
	} else if head := w.slot(wc); *head == wc {
		*head = wc.tnext
	}
	if wc.tnext != nil {
		wc.tnext.tprev = wc.tprev
	}
	wc.tnext, wc.tprev = nil, nil
}

// add puts a new connection on the parked list.
func (w *wheel) add(wc *wsConn) {
	wc.set(sArmed, false)
	w.push(&w.slots[parked], wc)
	w.n++
}

// drop takes a closed connection off the wheel for good.
func (w *wheel) drop(wc *wsConn) {
	w.unlink(wc)
	wc.set(sArmed, false)
	w.n--
}

// schedule arms wc's entry for tick at, moving it if it is armed for a later
// tick; an earlier entry is kept (it will reschedule when it fires).
func (w *wheel) schedule(wc *wsConn, at uint32) {
	if wc.has(sArmed) && int32(at-wc.deadline) >= 0 {
		return
	}
	w.unlink(wc)
	wc.deadline = at
	wc.set(sArmed, true)
	w.push(&w.slots[at%wheelSlots], wc)
}

// disarm moves wc's entry to the parked list.
func (w *wheel) disarm(wc *wsConn) {
	if !wc.has(sArmed) {
		return
	}
	w.unlink(wc)
	wc.set(sArmed, false)
	w.push(&w.slots[parked], wc)
}

// advance fires the entries due at tick now. Entries in the slot that belong
// to a later round of the wheel stay.
func (w *wheel) advance(now uint32, fire func(*wsConn)) {
	for wc := w.slots[now%wheelSlots]; wc != nil; {
		next := wc.tnext
		if int32(now-wc.deadline) >= 0 {
			w.disarm(wc)
			fire(wc)
		}
		wc = next
	}
}

// each calls fn for every connection on the loop. It works on a snapshot,
// so fn may close, reschedule or disarm any connection.
func (w *wheel) each(fn func(*wsConn)) {
	all := w.tmp[:0]
	for i := range w.slots { // by index: ranging over the array would copy it
		for wc := w.slots[i]; wc != nil; wc = wc.tnext {
			all = append(all, wc)
		}
	}
	for i, wc := range all {
		fn(wc)
		all[i] = nil
	}
	w.tmp = all[:0]
}
