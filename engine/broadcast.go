package engine

import (
	"context"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Broadcasts are queued per event loop and run by one task that takes
// everything queued so far. A lone broadcast writes the prepared frame
// straight from its shared bytes, one write(2) per connection. When several
// are waiting (a burst of chat messages, a feed ticking faster than the
// loop drains), each connection's frames are gathered into its outbound
// buffer and flushed once: one write(2) per connection per batch instead of
// one per frame, which is where a fan-out spends its time.

// bcast is one queued broadcast: a frame for the given connections of a
// loop, or for all of them when all is set; or a write of one connection
// deferred behind the broadcasts queued before it (d.wc set, write.go).
type bcast struct {
	conns []*wsConn
	all   bool
	f     *codec.PreparedFrame
	d     deferredWrite
}

// broadcastQueue is the per-loop queue; mu guards it against the
// goroutines that broadcast.
type broadcastQueue struct {
	q       []bcast
	spare   []bcast
	running bool // a task to drain q is queued on the loop
	touched []*wsConn
}

// Broadcast writes the prepared frame f to every connection in conns (which
// must come from this server; a wrapper around one is accepted when it has
// an Unwrap() handler.Conn method). The frame is encoded once and written to
// each connection unchanged, with no goroutine per connection and one task
// per event loop; broadcasts queued meanwhile are written together. Closed
// connections are skipped; a connection over its outbound cap is dropped
// by the slow-consumer policy. Broadcast does not keep conns. Successive
// calls of Broadcast, BroadcastAll and the Conn write methods made by one
// goroutine reach each connection in the order of the calls (the chat
// example relies on it: a member's join notice before its first message).
func (s *Server) Broadcast(conns []handler.Conn, f *codec.PreparedFrame) {
	var groups [][]*wsConn // by loop index; loops may be added meanwhile
	for _, c := range conns {
		wc, ok := unwrapConn(c)
		if !ok || wc.lp.srv != s {
			continue
		}
		for len(groups) <= wc.lp.idx {
			groups = append(groups, nil)
		}
		groups[wc.lp.idx] = append(groups[wc.lp.idx], wc)
	}
	for i, g := range groups {
		if len(g) > 0 {
			s.loopAt(i).enqueueBroadcast(bcast{conns: g, f: f})
		}
	}
}

// unwrapConn returns the connection of this package that c is, or wraps
// (through Unwrap() handler.Conn methods, as a middleware's wrapper has).
func unwrapConn(c handler.Conn) (*wsConn, bool) {
	for {
		u, ok := c.(interface{ Unwrap() handler.Conn })
		if !ok {
			break
		}
		c = u.Unwrap()
	}
	wc, ok := c.(*wsConn)
	return wc, ok
}

// BroadcastAll writes f to every open connection of the server, from the
// loops' own connection lists: nothing is allocated per connection. It
// keeps the order of the calls as Broadcast does.
func (s *Server) BroadcastAll(f *codec.PreparedFrame) {
	for _, lp := range s.loopList() {
		lp.enqueueBroadcast(bcast{all: true, f: f})
	}
}

// enqueueBroadcast queues b on the loop. Until the loop has written it,
// lp.fence counts it, and every write to a connection of the loop is
// deferred behind it (write.go): so a goroutine's Broadcast and its later
// WriteMessage reach a connection in the order of the calls, although the
// one waits for the loop's next turn and the other would go into the
// connection's pending buffer at once.
func (lp *loop) enqueueBroadcast(b bcast) {
	lp.fence.Add(1)
	lp.bmu.Lock()
	lp.bq.q = append(lp.bq.q, b)
	start := !lp.bq.running
	lp.bq.running = true
	lp.bmu.Unlock()
	if !start {
		return
	}
	if err := lp.el.Execute(context.Background(), lp.bcastTask); err != nil {
		// The engine is stopping; its connections go with it.
		lp.bmu.Lock()
		for i := range lp.bq.q {
			lp.bq.q[i].d.discard()
		}
		lp.fence.Add(-int64(len(lp.bq.q)))
		clear(lp.bq.q)
		lp.bq.q = lp.bq.q[:0]
		lp.bq.running = false
		lp.bmu.Unlock()
	}
}

// runBroadcasts is the loop task that writes every queued broadcast.
func (lp *loop) runBroadcasts(context.Context) error {
	lp.bmu.Lock()
	batch := lp.bq.q
	lp.bq.q = lp.bq.spare[:0]
	lp.bq.running = false
	lp.bmu.Unlock()

	if len(batch) == 1 && batch[0].d.wc == nil {
		b := batch[0]
		write := func(wc *wsConn) { wc.writePreparedOnLoop(b.f) } // permessage-deflate aware (deflate.go)
		if b.all {
			lp.wheel.each(write)
		} else {
			for _, wc := range b.conns {
				write(wc)
			}
		}
	} else {
		lp.gatherBroadcasts(batch)
	}
	lp.fence.Add(-int64(len(batch)))
	clear(batch)
	lp.bmu.Lock()
	lp.bq.spare = batch[:0]
	lp.bmu.Unlock()
	return nil
}

// gatherBroadcasts queues every frame of the batch on its connections, in
// order, then flushes each connection once.
func (lp *loop) gatherBroadcasts(batch []bcast) {
	touched := lp.bq.touched[:0]
	for i := range batch {
		b := &batch[i]
		if b.d.wc != nil {
			if wc := b.d.wc; wc.applyDeferred(&b.d) && !wc.has(sTouched) {
				wc.set(sTouched, true)
				touched = append(touched, wc)
			}
			continue
		}
		queue := func(wc *wsConn) {
			if wc.queuePreparedOnLoop(b.f) && !wc.has(sTouched) {
				wc.set(sTouched, true)
				touched = append(touched, wc)
			}
		}
		if b.all {
			lp.wheel.each(queue)
		} else {
			for _, wc := range b.conns {
				queue(wc)
			}
		}
	}
	for i, wc := range touched {
		wc.set(sTouched, false)
		wc.flush()
		touched[i] = nil
	}
	lp.bq.touched = touched[:0]
}

// queuePreparedOnLoop appends f, as this connection must see it, to its
// pending buffer without flushing. It reports whether anything was queued
// that a flush must send. Loop only.
func (wc *wsConn) queuePreparedOnLoop(f *codec.PreparedFrame) bool {
	b, ok := wc.preparedFrame(f)
	if !ok {
		// A context-takeover connection compresses with its own context,
		// through the ordinary write path (deflate.go).
		_ = wc.writeDeflate(f.Op(), f.Payload(), byQueue)
		return true
	}
	if wc.phase() != phaseOpen {
		return false
	}
	return wc.queueOnLoop(b, f.Op().IsData())
}
