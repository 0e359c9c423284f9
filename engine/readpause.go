package engine

import (
	"context"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Flow control: pausing reads, and waiting for the outbound backlog.
//
// PauseReading takes the socket out of its loop's read interest (see
// gnetpoll_unix.go and readpause_*.go), so that nothing is read from it: no
// OnMessage, no control frame answered; the kernel's receive buffer fills
// and TCP's window pushes back on the peer, with no goroutine waiting
// anywhere. While paused, the timeouts that wait for input (idle, message,
// pong) are suspended, and they restart from the resume. Where gnet resets
// the read interest itself (epoll: after a write that leaves bytes in its
// outbound buffer, and once that buffer drains), the next read is noticed
// and the pause restored, so at most one read buffer (ReadBufferCap) can
// slip in per such episode; it waits, unread, in gnet's buffer.
//
// Where the poller cannot be reached (readpause_portable.go, or a gnet
// release whose fields are not found), the fallback stops delivering but
// cannot stop gnet from reading: the bytes wait in gnet's buffer, and past
// pauseFallbackCap the connection is failed with 1008, so that a paused
// connection never holds unbounded memory.
//
// The backlog (Conn.Backlog) is what the connection holds for the kernel:
// wsloop's pending, held and deferred frames and gnet's outbound buffer.
// gnet drains its buffer on its own, with no callback, so a notification
// (Conn.NotifyBacklog) that is not satisfied at once puts the connection on
// its loop's watch list, which the loop checks every drainPoll while it is
// not empty; the cost is O(watched) per check, nothing when nobody waits.

// pauseFallbackCap bounds what a paused connection may hold in gnet's
// buffer when reads cannot be paused at the poller.
const pauseFallbackCap = 1 << 20

// drainPoll is how often a loop checks the connections whose backlog
// notification waits.
const drainPoll = 2e6 // 2 ms, in time.Duration units

// Backlog returns the bytes the connection holds for the kernel. See
// [handler.Conn].
func (wc *wsConn) Backlog() int {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.phase() == phaseClosed {
		return 0
	}
	return wc.backlogLocked()
}

// NotifyBacklog runs f once on the loop when the backlog is at most mark.
// See [handler.Conn].
func (wc *wsConn) NotifyBacklog(mark int, f func()) {
	if f == nil {
		return
	}
	wc.mu.Lock()
	x := wc.extra()
	x.drainMark, x.drainFn = mark, f
	wc.mu.Unlock()
	if err := wc.lp.el.Execute(context.Background(), (*drainTask)(wc)); err != nil {
		// The engine has stopped: nothing will drain, and no loop runs
		// f; run it here rather than never.
		wc.mu.Lock()
		f, x.drainFn = x.drainFn, nil
		wc.mu.Unlock()
		if f != nil {
			f()
		}
	}
}

// drainTask checks a new backlog notification on the loop.
type drainTask wsConn

func (t *drainTask) Run(context.Context) error {
	wc := (*wsConn)(t)
	if !wc.checkDrain() {
		wc.lp.watchDrain(wc)
	}
	return nil
}

// checkDrain refreshes the backlog from gnet's buffer and fires the
// notification if the backlog is at its mark. It reports whether nothing
// is left to watch. Loop only.
func (wc *wsConn) checkDrain() bool {
	if wc.phase() == phaseClosed {
		wc.fireDrain()
		return true
	}
	wc.refreshQueued()
	wc.mu.Lock()
	x := wc.x.Load()
	if x == nil || x.drainFn == nil {
		wc.mu.Unlock()
		return true
	}
	if wc.backlogLocked() > x.drainMark {
		wc.mu.Unlock()
		return false
	}
	wc.mu.Unlock()
	wc.fireDrain()
	return true
}

// fireDrain takes the pending notification, if any, and runs it. Loop only.
func (wc *wsConn) fireDrain() {
	wc.mu.Lock()
	var f func()
	if x := wc.x.Load(); x != nil {
		f, x.drainFn = x.drainFn, nil
	}
	wc.mu.Unlock()
	if f != nil {
		wc.lp.srv.callDrain(wc, f)
	}
}

// refreshQueued records gnet's outbound backlog as of now. Loop only.
func (wc *wsConn) refreshQueued() {
	if wc.phase() != phaseClosed {
		wc.queued.Store(uint32(min(wc.c.OutboundBuffered(), 1<<32-1)))
	}
}

// watchDrain puts wc on the loop's watch list, and starts the loop's
// checks if the list was empty. Loop only.
func (lp *loop) watchDrain(wc *wsConn) {
	if wc.has(sDrainWatched) {
		return
	}
	wc.set(sDrainWatched, true)
	lp.drainWatch = append(lp.drainWatch, wc)
	if lp.stopDrainPoll == nil {
		lp.stopDrainPoll = lp.srv.clock.Every(drainPoll, func() {
			if lp.drainQueued.CompareAndSwap(false, true) {
				if lp.el.Execute(context.Background(), lp.drainCheckTask) != nil {
					lp.drainQueued.Store(false)
				}
			}
		})
	}
}

// checkDrains runs every drainPoll while connections wait for their
// backlog: it fires those at their mark and stops when none is left.
func (lp *loop) checkDrains(context.Context) error {
	lp.drainQueued.Store(false)
	keep := lp.drainWatch[:0]
	for _, wc := range lp.drainWatch {
		if wc.checkDrain() {
			wc.set(sDrainWatched, false)
			continue
		}
		keep = append(keep, wc)
	}
	clear(lp.drainWatch[len(keep):])
	lp.drainWatch = keep
	if len(keep) == 0 && lp.stopDrainPoll != nil {
		lp.stopDrainPoll()
		lp.stopDrainPoll = nil
	}
	return nil
}

// PauseReading stops reading from the connection. See [handler.Conn].
func (wc *wsConn) PauseReading() {
	if wc.st.Or(sPauseWanted)&sPauseWanted != 0 {
		return // asked already
	}
	// Inside the connection's callbacks, frames() also sees the bit
	// before it delivers the next message, and stops there.
	_ = wc.lp.el.Execute(context.Background(), (*readStateTask)(wc))
}

// ResumeReading reads again. See [handler.Conn].
func (wc *wsConn) ResumeReading() {
	if wc.st.And(^sPauseWanted)&sPauseWanted == 0 {
		return // not paused
	}
	_ = wc.lp.el.Execute(context.Background(), (*readStateTask)(wc))
}

// readStateTask applies the wanted read state on the loop.
type readStateTask wsConn

func (t *readStateTask) Run(context.Context) error {
	(*wsConn)(t).applyReadState()
	return nil
}

// applyReadState pauses or resumes reads to match what the application
// last asked. Loop only.
func (wc *wsConn) applyReadState() {
	switch p := wc.phase(); {
	case p == phaseClosed:
		return
	case wc.has(sPauseWanted) && !wc.has(sPaused):
		wc.set(sPaused, true)
		wc.setReadInterest(false)
	case !wc.has(sPauseWanted) && wc.has(sPaused):
		wc.set(sPaused, false)
		wc.setReadInterest(true)
		// The waits for input start again from now.
		now := wc.lp.now
		wc.lastRead = now
		if wc.acceptOrMsgAt != 0 {
			wc.acceptOrMsgAt = now
		}
		if wc.has(sPongWait) {
			wc.pingOrCloseAt = now
		}
		if wc.phase() == phaseOpen {
			wc.armTimer()
		}
		if wc.inputLeft() {
			// What arrived before the pause, or slipped in during it,
			// raises no event of its own: read it now.
			wc.set(sReadHalted, false)
			_ = wc.c.Wake(nil)
		}
	case !wc.has(sPauseWanted) && wc.has(sReadHalted):
		// Paused and resumed again before the loop applied either:
		// the poller never stopped reading, but frames() stopped at
		// the pause, and the messages it left raise no event until new
		// bytes arrive, which may be never. Read them now.
		wc.set(sReadHalted, false)
		if wc.inputLeft() {
			_ = wc.c.Wake(nil)
		}
	}
}

// setReadInterest turns the socket's read interest on or off at the
// loop's poller; without one it does nothing (the fallback). Loop only.
func (wc *wsConn) setReadInterest(read bool) {
	lp := wc.lp
	if lp.pollFD == 0 {
		lp.pollFD = gnetPollerFD(wc.c) + 1 // stored +1: 0 means "not looked up"
	}
	if lp.pollFD <= 0 {
		return
	}
	if err := setReadInterest(lp.pollFD-1, wc.c.Fd(), read, wc.c.OutboundBuffered() > 0); err != nil {
		lp.srv.log.Debug("wsloop: read interest", "read", read, "err", err)
	}
}

// pausedTraffic handles a read event on a paused connection: it leaves the
// bytes where they are and restores the pause that gnet undid, or, in the
// fallback, bounds what waits. It reports whether the connection is
// paused. Loop only.
func (wc *wsConn) pausedTraffic() bool {
	if !wc.has(sPauseWanted) && !wc.has(sPaused) {
		return false
	}
	if !wc.has(sPaused) || !wc.has(sPauseWanted) {
		wc.applyReadState()
		if !wc.has(sPaused) {
			return false
		}
	} else {
		wc.setReadInterest(false)
	}
	if wc.lp.pollFD <= 0 && wc.c.InboundBuffered() > pauseFallbackCap && wc.phase() == phaseOpen {
		// The fallback cannot stop the reads: bound them.
		wc.fail(codec.ClosePolicyViolation, "paused connection over its read bound", handler.ErrPausedOverflow)
	}
	return true
}

// afterPausedWrite restores a pause that gnet undid when a write left bytes
// in its outbound buffer (epoll). Loop only.
func (wc *wsConn) afterPausedWrite() {
	if gnetRestoresRead && wc.has(sPaused) {
		wc.setReadInterest(false)
	}
}
