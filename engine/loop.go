package engine

import (
	"context"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/handler"
)

// loop is the state wsloop keeps per gnet event loop. Everything in it is
// touched only on that loop's goroutine, so it needs no locks: the scratch
// buffer for handshake responses and the timer wheel, which also lists the
// loop's connections (for shutdown and broadcast to all).
type loop struct {
	srv     *Server
	el      gnet.EventLoop
	idx     int // position in Server.loops
	scratch []byte
	upRes   handler.UpgradeResponse // the handshake's response, reused

	wheel wheel  // every connection on this loop, handshake phase included, with its timer
	now   uint32 // ticks since the server started, from 1: a zero tick stamp means "unset"

	stats loopStats

	defl loopDeflate // permessage-deflate compressor and decompressor (deflate.go)

	bmu sync.Mutex     // guards bq.q, bq.spare and bq.running
	bq  broadcastQueue // broadcasts waiting for the loop (broadcast.go)

	bcastTask gnet.Runnable // runBroadcasts, made once
}

func newLoop(s *Server, el gnet.EventLoop) *loop {
	lp := &loop{srv: s, el: el}
	lp.bcastTask = gnet.RunnableFunc(lp.runBroadcasts)
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
	if wc.has(lArmed) {
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
	wc.set(lArmed, false)
	w.push(&w.slots[parked], wc)
	w.n++
}

// drop takes a closed connection off the wheel for good.
func (w *wheel) drop(wc *wsConn) {
	w.unlink(wc)
	wc.set(lArmed, false)
	w.n--
}

// schedule arms wc's entry for tick at, moving it if it is armed for a later
// tick; an earlier entry is kept (it will reschedule when it fires).
func (w *wheel) schedule(wc *wsConn, at uint32) {
	if wc.has(lArmed) && int32(at-wc.deadline) >= 0 {
		return
	}
	w.unlink(wc)
	wc.deadline = at
	wc.set(lArmed, true)
	w.push(&w.slots[at%wheelSlots], wc)
}

// disarm moves wc's entry to the parked list.
func (w *wheel) disarm(wc *wsConn) {
	if !wc.has(lArmed) {
		return
	}
	w.unlink(wc)
	wc.set(lArmed, false)
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
