package engine

import (
	"context"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// loop is the state wsloop keeps per gnet event loop. Everything in it is
// touched only on that loop's goroutine, so it needs no locks: the scratch
// buffer for handshake responses, the list of connections (for shutdown and
// broadcast to all), and a timer wheel.
type loop struct {
	srv     *Server
	el      gnet.EventLoop
	idx     int // position in Server.loops
	scratch []byte

	conns wsList // every connection on this loop, handshake phase included
	wheel wheel
	now   uint32 // ticks since the server started, from 1: a zero tick stamp means "unset"

	stats loopStats

	defl loopDeflate // permessage-deflate compressor and decompressor (deflate.go)
}

func newLoop(s *Server, el gnet.EventLoop) *loop {
	lp := &loop{srv: s, el: el}
	lp.now = s.ticksSince(time.Now())
	return lp
}

// Run makes loop a gnet.Runnable: the ticker goroutine queues it on the loop
// to advance the wheel there.
func (lp *loop) Run(context.Context) error {
	now := lp.srv.ticksSince(time.Now())
	for lp.now < now {
		lp.now++
		lp.wheel.advance(lp.now, func(wc *wsConn) { wc.onTimer() })
	}
	return nil
}

// wsList is an intrusive doubly linked list of connections.
type wsList struct{ head *wsConn }

func (l *wsList) push(wc *wsConn) {
	wc.lnext, wc.lprev = l.head, nil
	if l.head != nil {
		l.head.lprev = wc
	}
	l.head = wc
}

func (l *wsList) remove(wc *wsConn) {
	if wc.lprev != nil {
		wc.lprev.lnext = wc.lnext
	} else if l.head == wc {
		l.head = wc.lnext
	}
	if wc.lnext != nil {
		wc.lnext.lprev = wc.lprev
	}
	wc.lnext, wc.lprev = nil, nil
}

// each calls fn for every connection; fn may remove the current one.
func (l *wsList) each(fn func(*wsConn)) {
	for wc := l.head; wc != nil; {
		next := wc.lnext
		fn(wc)
		wc = next
	}
}

// wheel is a hashed timer wheel: one slot per tick modulo its size, each slot
// an intrusive list of connections whose deadline falls on it. A connection
// has at most one entry, for its earliest deadline; when that fires the
// connection checks all its timeouts and schedules the next one. Activity
// (bytes read) does not touch the wheel: it only updates a tick stamp that
// the firing entry compares against. So a tick costs O(expired entries),
// never O(connections), and a busy connection costs at most one wheel move
// per timeout period.
type wheel struct {
	slots [wheelSlots]*wsConn
}

const wheelSlots = 1024

// schedule arms wc's entry for tick at, moving it if it is armed for a later
// tick; an earlier entry is kept (it will reschedule when it fires).
func (w *wheel) schedule(wc *wsConn, at uint32) {
	if wc.timerArmed {
		if int32(at-wc.deadline) >= 0 {
			return
		}
		w.remove(wc)
	}
	wc.deadline = at
	wc.timerArmed = true
	slot := &w.slots[at%wheelSlots]
	wc.tnext, wc.tprev = *slot, nil
	if *slot != nil {
		(*slot).tprev = wc
	}
	*slot = wc
}

func (w *wheel) remove(wc *wsConn) {
	if !wc.timerArmed {
		return
	}
	if wc.tprev != nil {
		wc.tprev.tnext = wc.tnext
	} else {
		w.slots[wc.deadline%wheelSlots] = wc.tnext
	}
	if wc.tnext != nil {
		wc.tnext.tprev = wc.tprev
	}
	wc.tnext, wc.tprev = nil, nil
	wc.timerArmed = false
}

// advance fires the entries due at tick now. Entries in the slot that belong
// to a later round of the wheel stay.
func (w *wheel) advance(now uint32, fire func(*wsConn)) {
	for wc := w.slots[now%wheelSlots]; wc != nil; {
		next := wc.tnext
		if int32(now-wc.deadline) >= 0 {
			w.remove(wc)
			fire(wc)
		}
		wc = next
	}
}
