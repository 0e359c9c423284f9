package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// The write path.
//
// Every write, from a callback or from any other goroutine, encodes its frame
// into the connection's pending buffer (wsConn.out) under mu. Inside a
// callback the loop flushes the buffer when the callbacks of that read end:
// one write system call for all the frames they produced. From elsewhere
// the first write queues one flush task on the loop (flushTask). So the
// order of frames is the order of the calls, a write never touches the
// socket off the loop, and no goroutine needs to know whether it is the
// loop's.
//
// Messages stay whole (RFC 6455 §5.4: only control frames may come between
// the fragments of a message). While a fragmented message is open (a
// NextWriter has sent its first fragment and not yet its final one), data
// frames from every other call go to the held buffer (heldOut) instead, in
// the order of the calls, and follow the open message's final frame. No
// writer waits: holding is queueing. Control frames always go to the
// pending buffer, between fragments if need be.
//
// The write paths, each named where it is: enqueueFrame (WriteMessage, a
// NextWriter's fragments, Ping, Pong, and the plain frames of the
// permessage-deflate writes), enqueueRaw (WritePrepared, and the compressed
// frames of writeDeflate), writeOnLoop (a lone Broadcast or BroadcastAll,
// written from the shared frame), queueOnLoop (the batched broadcast path),
// writeDeflate and writePreparedDeflate (deflate.go), and the client's
// masking (appendEncodedLocked, enqueueFrame). Every data frame of them
// passes through dataBufLocked, which picks the pending or the held buffer,
// and placedLocked, which keeps the open message's state; while broadcasts
// wait on the loop, each is deferred behind them first (deferLocked).
// TestMessagesStayWhole (write_race_test.go) reaches each one.
//
// Two functions see every frame: admitLocked, which applies the
// slow-consumer policy and counts messages, and write, which hands bytes to
// gnet and counts them.
//
// Locks on the path of one echoed message: WriteMessage takes mu once to
// queue the frame, and endCallbacks takes it once to take the frames; the
// phase and the flags are read from wsConn.st without it.

var errBadOp = errors.New("wsloop: WriteMessage and NextWriter take handler.Text or handler.Binary")

// WriteMessage sends data as one message. See [handler.Conn].
func (wc *wsConn) WriteMessage(op handler.Op, data []byte) error {
	if op != codec.OpText && op != codec.OpBinary {
		return errBadOp
	}
	if wc.deflate() != nil {
		return wc.writeDeflate(op, data, byCaller) // permessage-deflate: whole messages only (deflate.go)
	}
	return wc.enqueueFrame(nil, true, op, data, true, byCaller)
}

// WritePrepared sends a frame encoded once for many connections.
func (wc *wsConn) WritePrepared(f *codec.PreparedFrame) error {
	if wc.deflate() != nil { // permessage-deflate (deflate.go)
		return wc.writePreparedDeflate(f)
	}
	return wc.enqueueRaw(f.Bytes(), f.Op().IsData(), byCaller)
}

// Ping sends a ping with up to 125 bytes of application data.
func (wc *wsConn) Ping(data []byte) error {
	if len(data) > 125 {
		return handler.ErrTooLarge
	}
	return wc.enqueueFrame(nil, true, codec.OpPing, data, false, byCaller)
}

// Pong sends a pong with up to 125 bytes of application data.
func (wc *wsConn) Pong(data []byte) error {
	if len(data) > 125 {
		return handler.ErrTooLarge
	}
	return wc.enqueueFrame(nil, true, codec.OpPong, data, false, byCaller)
}

// NextWriter returns a writer that sends one message as fragments.
func (wc *wsConn) NextWriter(op handler.Op) (io.WriteCloser, error) {
	if op != codec.OpText && op != codec.OpBinary {
		return nil, errBadOp
	}
	return &fragmentWriter{wc: wc, op: op}, nil
}

// fragmentWriter sends one message as a sequence of frames: each Write one
// frame, Close the final (empty) one. Its pointer identifies the message
// while it is open (heldOut.open). It is not safe for concurrent use, as
// an io.Writer is not; the connection is.
type fragmentWriter struct {
	wc     *wsConn
	op     handler.Op
	sent   bool // a frame was queued: the next one is a continuation
	closed bool
}

func (w *fragmentWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, handler.ErrClosed
	}
	op := w.op
	if w.sent {
		op = codec.OpContinuation
	}
	if err := w.wc.enqueueFrame(w, false, op, p, false, byCaller); err != nil {
		return 0, err
	}
	w.sent = true
	return len(p), nil
}

func (w *fragmentWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if !w.sent {
		// Nothing went out: the message is this one frame, whole, and
		// compressed like any other when the connection compresses.
		return w.wc.WriteMessage(w.op, nil)
	}
	return w.wc.enqueueFrame(w, true, codec.OpContinuation, nil, true, byCaller)
}

// heldOut is the state of a connection on which a fragmented message is
// open: which writer's fragments go to the wire, and the data frames of
// every other write, held until that message's final frame. Guarded by
// wsConn.mu. A connection gets one the first time a NextWriter sends a
// fragment, and keeps it (in connExtra) so that the next one allocates
// nothing.
type heldOut struct {
	open  *fragmentWriter // the message on the wire; nil when none is open
	buf   *outBuf         // held frames, in the order of the calls; nil when none
	segs  []heldSeg       // buf cut by writer, in order
	taken []bool          // scratch of releaseHeldLocked, reused
	// since is the tick at which the oldest held frame was first seen
	// on the loop, 0 while nothing is held or the loop has not looked
	// yet: WriteStallTimeout counts from it (timers.go).
	since uint32
}

// heldSeg is a run of held bytes written by one call.
type heldSeg struct {
	w   *fragmentWriter // the message it belongs to; nil for a whole message
	end int             // its end in heldOut.buf
	fin bool            // the final frame of w's message
}

// holdLocked returns the connection's heldOut, nil if it never had one.
// Under mu.
func (wc *wsConn) holdLocked() *heldOut {
	if x := wc.x.Load(); x != nil {
		return x.hold
	}
	return nil
}

// heldLen is the number of held bytes. Under mu.
func (h *heldOut) heldLen() int {
	if h == nil || h.buf == nil {
		return 0
	}
	return len(h.buf.b)
}

// dataBufLocked returns the buffer the next data frame of w (nil for a
// whole message) goes to: the pending buffer, or the held one when another
// message is open; h is the heldOut in the second case. Under mu.
func (wc *wsConn) dataBufLocked(w *fragmentWriter) (dst **outBuf, h *heldOut) {
	if h := wc.holdLocked(); h != nil && h.open != nil && h.open != w {
		return &h.buf, h
	}
	return &wc.out, nil
}

// placedLocked records a data frame of w just appended where dataBufLocked
// said (h: the heldOut it returned). A first fragment on the wire opens
// w's message; its final frame closes it and releases what was held behind
// it. Under mu.
func (wc *wsConn) placedLocked(w *fragmentWriter, fin bool, h *heldOut) {
	switch {
	case h != nil:
		h.segs = append(h.segs, heldSeg{w: w, end: len(h.buf.b), fin: fin})
	case w == nil:
	case !fin:
		x := wc.extra()
		if x.hold == nil {
			x.hold = new(heldOut)
		}
		x.hold.open = w
	default:
		if h := wc.holdLocked(); h != nil && h.open == w {
			h.open = nil
			wc.releaseHeldLocked(h)
		}
	}
}

// releaseHeldLocked moves held frames to the pending buffer once the open
// message has ended, in the order of the calls: the oldest held frame goes
// first; if it opens a message (a first fragment), that message's frames go
// next, and everyone else's stay held until its final frame, which lets
// the oldest of them go, and so on. Under mu.
func (wc *wsConn) releaseHeldLocked(h *heldOut) {
	if h.buf == nil {
		return
	}
	b, n := h.buf.b, len(h.segs)
	h.taken = append(h.taken[:0], make([]bool, n)...)
	span := func(i int) []byte {
		start := 0
		if i > 0 {
			start = h.segs[i-1].end
		}
		return b[start:h.segs[i].end]
	}
	first := 0 // no held frame before it is left
	for {
		for first < n && h.taken[first] {
			first++
		}
		i := first
		if h.open != nil {
			for i < n && (h.taken[i] || h.segs[i].w != h.open) {
				i++
			}
		}
		if i == n {
			break
		}
		sg := h.segs[i]
		seg := span(i)
		wc.out = growOut(wc.out, len(seg))
		wc.out.b = append(wc.out.b, seg...)
		h.taken[i] = true
		switch {
		case sg.w == nil:
		case !sg.fin:
			h.open = sg.w
		case h.open == sg.w:
			h.open = nil
		}
	}
	// Keep what was not taken, in order, at the front of the buffer.
	keep, k, prevEnd := 0, 0, 0
	for i := range n {
		sg := h.segs[i]
		start := prevEnd
		prevEnd = sg.end
		if h.taken[i] {
			continue
		}
		keep += copy(b[keep:], b[start:sg.end]) // moves down: keep <= start
		h.segs[k] = heldSeg{w: sg.w, end: keep, fin: sg.fin}
		k++
	}
	clear(h.segs[k:])
	h.segs = h.segs[:k]
	if keep == 0 {
		putOut(h.buf)
		h.buf, h.since = nil, 0
		return
	}
	h.buf.b = b[:keep]
}

// dropHeldLocked forgets what is held and the open message: the connection
// is closing, and no data frame may follow a close frame. Under mu.
func (wc *wsConn) dropHeldLocked() {
	h := wc.holdLocked()
	if h == nil {
		return
	}
	if h.buf != nil {
		putOut(h.buf)
	}
	clear(h.segs)
	h.open, h.buf, h.segs, h.since = nil, nil, h.segs[:0], 0
}

// stampHeldLocked starts the clock on held frames the loop sees for the
// first time; it reports whether it did, so that the caller schedules the
// stall check. Loop only, under mu.
func (wc *wsConn) stampHeldLocked() bool {
	h := wc.holdLocked()
	if h == nil || h.buf == nil || h.since != 0 {
		return false
	}
	h.since = wc.lp.now
	return true
}

// heldSince returns the tick held frames have waited since, 0 if none
// wait. Loop only.
func (wc *wsConn) heldSince() uint32 {
	x := wc.x.Load()
	if x == nil {
		return 0
	}
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if x.hold == nil {
		return 0
	}
	return x.hold.since
}

// scheduleHeldCheck arms the timer for held frames stamped just now. Loop
// only.
func (wc *wsConn) scheduleHeldCheck() {
	s := wc.lp.srv
	if s.opts.WriteStallTimeout > 0 && wc.phase() == phaseOpen {
		wc.lp.wheel.schedule(wc, wc.lp.now+s.ticks(s.opts.WriteStallTimeout))
	}
}

// Writes behind broadcasts. A broadcast reaches a connection when its loop
// runs the broadcast queue, while a write goes into the connection's pending
// buffer at once; so while broadcasts wait on a loop (lp.fence), every
// write to a connection of that loop is deferred into the same queue
// instead, already encoded, and applied in its turn. That keeps the order
// of one goroutine's calls across Broadcast, BroadcastAll and the Conn
// methods. When nothing waits, which is always the case without
// broadcasts, a write pays one atomic load for it.

// deferredWrite is a write queued behind broadcasts: the frame as it goes
// on the wire (masked already for a client), or a close.
type deferredWrite struct {
	wc    *wsConn
	frame []byte          // from getBuf; nil for a close
	w     *fragmentWriter // the frame's message, nil for a whole one
	fin   bool            // the final frame of w's message
	data  bool            // a data frame (else a control frame)
	close bool            // Conn.Close, with code and reason
	code  uint16
	why   string
	// compress: frame holds the payload of a message of type op for a
	// connection that keeps its compression context; it is compressed
	// when applied (deflate.go).
	compress bool
	op       codec.OpCode
}

// fenced reports whether writes to the connection must wait behind
// broadcasts queued on its loop.
func (wc *wsConn) fenced() bool { return wc.lp.fence.Load() != 0 }

// deferLocked queues d behind the loop's broadcasts and unlocks mu. Its
// bytes count in the connection's backlog until they are applied.
func (wc *wsConn) deferLocked(d deferredWrite) error {
	d.wc = wc
	wc.extra().deferred += len(d.frame)
	wc.mu.Unlock()
	wc.lp.enqueueBroadcast(bcast{d: d})
	return nil
}

// applyDeferred applies a deferred write on the loop, in its turn among the
// broadcasts. It reports whether the connection needs a flush. Loop only.
func (wc *wsConn) applyDeferred(d *deferredWrite) bool {
	wc.mu.Lock()
	wc.extra().deferred -= len(d.frame)
	if d.compress {
		wc.mu.Unlock()
		_ = wc.writeDeflate(d.op, d.frame, byQueue)
		d.discard()
		return true
	}
	switch {
	case d.close:
		wc.closeLocked(d.code, d.why)
	case wc.phase() != phaseOpen:
		// Closed meanwhile: the write is dropped, as a write after the
		// close would have been refused.
	case !d.data:
		o := growOut(wc.out, len(d.frame))
		o.b = append(o.b, d.frame...)
		wc.out = o
	default:
		dst, h := wc.dataBufLocked(d.w)
		o := growOut(*dst, len(d.frame))
		o.b = append(o.b, d.frame...)
		*dst = o
		wc.placedLocked(d.w, d.fin, h)
	}
	wc.mu.Unlock()
	d.discard()
	return true
}

// discard gives a deferred write's buffer back.
func (d *deferredWrite) discard() {
	if d.frame != nil {
		putBuf(d.frame)
		d.frame = nil
	}
}

// Who is writing, for the fence: an application's call, which waits behind
// queued broadcasts, or the loop applying that queue, which is their turn.
const (
	byCaller = false
	byQueue  = true
)

// enqueueFrame encodes a frame of writer w (nil unless a NextWriter's) into
// the pending buffer, or the held one while another message is open; or
// defers it behind queued broadcasts unless the loop is applying them
// (byQueue).
func (wc *wsConn) enqueueFrame(w *fragmentWriter, fin bool, op codec.OpCode, payload []byte, message, applying bool) error {
	n := codec.MaxHeaderSize + len(payload)
	wc.mu.Lock()
	if err := wc.admitLocked(n, message, wc.backlogLocked()); err != nil {
		return wc.refused(err)
	}
	if !applying && wc.fenced() {
		b := getBuf(n)
		if wc.st.Load()&sClient != 0 {
			b = codec.AppendMaskedFrame(b, fin, op, 0, newMask(), payload)
		} else {
			b = codec.AppendFrame(b, fin, op, 0, payload)
		}
		return wc.deferLocked(deferredWrite{frame: b, w: w, fin: fin, data: !op.IsControl()})
	}
	dst, h := &wc.out, (*heldOut)(nil)
	if !op.IsControl() {
		dst, h = wc.dataBufLocked(w)
	}
	o := growOut(*dst, n)
	*dst = o
	if wc.st.Load()&sClient != 0 {
		// RFC 6455 §5.3: every client frame is masked, with a fresh key.
		o.b = codec.AppendMaskedFrame(o.b, fin, op, 0, newMask(), payload)
	} else {
		o.b = codec.AppendFrame(o.b, fin, op, 0, payload)
	}
	if !op.IsControl() {
		wc.placedLocked(w, fin, h)
	}
	return wc.queuedLocked()
}

// appendEncodedLocked appends an encoded (unmasked) frame to *dst as this
// connection sends it: unchanged from a server, masked into the buffer by
// a client. Under mu.
func (wc *wsConn) appendEncodedLocked(dst **outBuf, frame []byte) {
	if wc.st.Load()&sClient != 0 {
		o := growOut(*dst, len(frame)+4)
		o.b = codec.MaskFrame(o.b, frame, newMask())
		*dst = o
		return
	}
	o := growOut(*dst, len(frame))
	o.b = append(o.b, frame...)
	*dst = o
}

// enqueueRaw appends an encoded frame, whole (a data message of one frame,
// or a control frame), to the pending buffer, or to the held one while a
// message is open.
func (wc *wsConn) enqueueRaw(frame []byte, data, applying bool) error {
	wc.mu.Lock()
	if err := wc.admitLocked(len(frame), data, wc.backlogLocked()); err != nil {
		return wc.refused(err)
	}
	if !applying && wc.fenced() {
		var b *outBuf
		wc.appendEncodedLocked(&b, frame) // masked for a client
		d := deferredWrite{frame: append(getBuf(len(b.b)), b.b...), fin: true, data: data}
		putOut(b)
		return wc.deferLocked(d)
	}
	wc.appendWholeLocked(frame, data)
	return wc.queuedLocked()
}

// appendWholeLocked appends an encoded frame, whole, where it belongs.
// Under mu.
func (wc *wsConn) appendWholeLocked(frame []byte, data bool) {
	if !data {
		wc.appendEncodedLocked(&wc.out, frame)
		return
	}
	dst, h := wc.dataBufLocked(nil)
	wc.appendEncodedLocked(dst, frame)
	wc.placedLocked(nil, true, h)
}

// backlogLocked is what the connection holds for the socket as far as a
// goroutine off the loop can tell: gnet's outbound bytes as of the last
// flush, and the frames pending and held since. Under mu.
func (wc *wsConn) backlogLocked() int {
	n := int(wc.queued.Load()) + wc.outLen()
	if x := wc.x.Load(); x != nil {
		n += x.hold.heldLen() + x.deferred
	}
	return n
}

// admitLocked decides, under mu, whether a frame of n bytes may be queued:
// the connection must be open, and backlog (the bytes the connection
// already holds that count against the cap) plus n must stay under
// MaxOutboundBytes. Past the cap the slow-consumer policy applies: the
// write is refused and the connection is dropped with 1008. It counts
// admitted messages: the one place Stats.MessagesOut is counted.
func (wc *wsConn) admitLocked(n int, message bool, backlog int) error {
	if wc.phase() != phaseOpen {
		return handler.ErrClosed
	}
	// The cap bounds the backlog: a message larger than the cap may still
	// go to a connection that has nothing queued.
	if max := wc.lp.srv.opts.MaxOutboundBytes; max > 0 && backlog > 0 && backlog+n > max {
		wc.queueCloseLocked(codec.ClosePolicyViolation, "slow consumer", closeAbort)
		wc.lp.stats.slowConsumers.Add(1)
		return handler.ErrSlowConsumer
	}
	if message {
		wc.lp.stats.messagesOut.Add(1)
	}
	return nil
}

// refused unlocks mu after admitLocked refused a write and, when the
// refusal queued the slow-consumer close, makes sure the loop acts on it.
func (wc *wsConn) refused(err error) error {
	if errors.Is(err, handler.ErrSlowConsumer) {
		_ = wc.queuedLocked()
	} else {
		wc.mu.Unlock()
	}
	return err
}

// queuedLocked marks the pending buffer dirty and unlocks mu; if the loop
// will not flush on its own (it is not inside this connection's callbacks
// and no flush task is queued), it queues one.
func (wc *wsConn) queuedLocked() error {
	schedule := false
	for {
		old := wc.st.Load()
		if old&(sInLoop|sFlushQueued) != 0 {
			break
		}
		if wc.st.CompareAndSwap(old, old|sFlushQueued) {
			schedule = true
			break
		}
	}
	wc.mu.Unlock()
	if schedule {
		if err := wc.lp.el.Execute(context.Background(), (*flushTask)(wc)); err != nil {
			// The engine is stopping; the connection goes with it.
			wc.set(sFlushQueued, false)
		}
	}
	return nil
}

// outLen is the number of pending bytes, under mu.
func (wc *wsConn) outLen() int {
	if wc.out == nil {
		return 0
	}
	return len(wc.out.b)
}

// flushTask is the flush queued on the loop by writes from outside it: the
// connection itself under another type, so that queueing it allocates
// nothing while a handler.Conn offers no Run method that would flush off
// the loop.
type flushTask wsConn

// Run flushes the connection on its loop.
func (t *flushTask) Run(context.Context) error {
	wc := (*wsConn)(t)
	wc.set(sFlushQueued, false)
	wc.flush()
	return nil
}

// beginCallbacks marks the start of a batch of callbacks on the loop: writes
// made meanwhile are flushed by endCallbacks.
func (wc *wsConn) beginCallbacks() { wc.st.Or(sInLoop) }

// endCallbacks ends the batch and flushes what it wrote.
func (wc *wsConn) endCallbacks() {
	wc.mu.Lock()
	o := wc.out
	wc.out = nil
	wc.st.And(^sInLoop)
	stamped := wc.stampHeldLocked()
	wc.mu.Unlock()
	if stamped {
		wc.scheduleHeldCheck()
	}
	wc.writeOut(o)
}

// flush writes the pending frames with one system call. Loop only. A
// connection detached for a handoff keeps them: they move with it.
func (wc *wsConn) flush() {
	if wc.phase() == phaseMoved {
		return
	}
	wc.mu.Lock()
	o := wc.out
	wc.out = nil
	stamped := wc.stampHeldLocked()
	wc.mu.Unlock()
	if stamped {
		wc.scheduleHeldCheck()
	}
	wc.writeOut(o)
}

// writeOut writes frames taken from the pending buffer, gives the buffer
// back and acts on a close that was queued with them. Loop only.
func (wc *wsConn) writeOut(o *outBuf) {
	if o == nil {
		return
	}
	if len(o.b) > 0 {
		wc.write(o.b)
	}
	putOut(o)
	wc.afterQueuedClose()
}

// write hands b to gnet, which writes what the socket takes and keeps the
// rest. It follows bufio.Writer's rule for errors: a failed write closes
// the connection (gnet runs OnClose from inside Write), and from then on
// every write is refused without touching the socket, whose descriptor
// number may already belong to another connection. It counts the bytes of
// an open connection: the one place Stats.BytesOut is counted. Loop only.
func (wc *wsConn) write(b []byte) bool {
	p := wc.phase()
	if p == phaseClosed || p == phaseMoved {
		return false
	}
	var err error
	if ts := wc.tls(); ts != nil {
		_, err = ts.conn.Write(b) // encrypted into the transport, which writes to gnet
	} else {
		_, err = wc.c.Write(b)
	}
	if err != nil || wc.phase() == phaseClosed {
		return false
	}
	if p != phaseHandshake {
		wc.lp.stats.bytesOut.Add(int64(len(b)))
		wc.afterWrite()
	}
	if wc.st.Load()&sPaused != 0 {
		wc.afterPausedWrite()
	}
	return true
}

// afterWrite records gnet's outbound backlog for the cap and starts the
// write-stall timer when the socket did not take everything. Loop only.
func (wc *wsConn) afterWrite() {
	s := wc.lp.srv
	ob := wc.c.OutboundBuffered()
	wc.queued.Store(uint32(min(ob, math.MaxUint32)))
	if ob > 0 && s.opts.WriteStallTimeout > 0 {
		if x := wc.extra(); x.stallSince == 0 {
			x.stallSince, x.stallBytes = wc.lp.now, ob
			wc.lp.wheel.schedule(wc, wc.lp.now+s.ticks(s.opts.WriteStallTimeout))
		}
	}
}

// writeOnLoop writes an immutable frame straight to the socket, after what
// is pending, under the outbound cap: a broadcast's shared frame needs no
// copy into the pending buffer. While a message is open it is held like
// any other write instead. Loop only.
func (wc *wsConn) writeOnLoop(frame []byte, message bool) {
	if wc.phase() != phaseOpen {
		return
	}
	wc.mu.Lock()
	if wc.has(sClient) || message && wc.holdOpenLocked() {
		// A client masks the shared frame into its own buffer; an open
		// message holds it.
		wc.mu.Unlock()
		if wc.queueOnLoop(frame, message) {
			wc.flush()
		}
		return
	}
	o := wc.out
	wc.out = nil
	pending := 0
	if o != nil {
		pending = len(o.b)
	}
	err := wc.admitLocked(len(frame), message, wc.c.OutboundBuffered()+pending)
	wc.mu.Unlock()
	if err != nil {
		putOut(o) // dropped by the slow-consumer policy; the close frame is pending
		wc.flush()
		return
	}
	if o != nil {
		ok := len(o.b) == 0 || wc.write(o.b)
		putOut(o)
		if !ok {
			return
		}
	}
	wc.write(frame)
	wc.afterQueuedClose()
}

// outboundOpen reports whether the connection is not at a message boundary
// outbound: a fragmented message is open, or writes wait behind
// broadcasts. Loop only (handoff.go).
func (wc *wsConn) outboundOpen() bool {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	return wc.outboundOpenLocked()
}

// outboundOpenLocked is outboundOpen under mu.
func (wc *wsConn) outboundOpenLocked() bool {
	x := wc.x.Load()
	return wc.holdOpenLocked() || x != nil && x.deferred != 0
}

// holdOpenLocked reports whether a message is open, so that data must be
// held. Under mu.
func (wc *wsConn) holdOpenLocked() bool {
	h := wc.holdLocked()
	return h != nil && h.open != nil
}

// queueOnLoop appends an encoded frame, whole, to the pending buffer (or
// the held one) without flushing, for a batch of broadcasts that is flushed
// once per connection. The cap applies to what the socket has not taken
// yet, and what is held: frames of the same batch do not count against
// each other, or a burst would drop a reader that keeps up. It reports
// whether a flush has anything to do. Loop only.
func (wc *wsConn) queueOnLoop(frame []byte, message bool) bool {
	wc.mu.Lock()
	if err := wc.admitLocked(len(frame), message, wc.c.OutboundBuffered()+wc.holdLocked().heldLen()); err != nil {
		wc.mu.Unlock()
		return errors.Is(err, handler.ErrSlowConsumer) // the close frame is pending
	}
	wc.appendWholeLocked(frame, message)
	wc.mu.Unlock()
	return true
}

// newMask returns a fresh masking key for a client frame. RFC 6455 §5.3
// asks for keys an attacker cannot predict, from a strong source of
// entropy, one per frame. math/rand/v2's top-level functions read the
// runtime's ChaCha8 generator, which each thread keeps on its own and which
// is seeded from the operating system's entropy (the source crypto/rand
// reads): cryptographically strong output at a few nanoseconds, with no
// lock and no state per loop or per connection. (crypto/rand itself would
// cost a system call's worth per frame.)
func newMask() (m [4]byte) {
	binary.LittleEndian.PutUint32(m[:], rand.Uint32())
	return m
}
