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
// the first write queues one flush task on the loop. So the order of frames
// is the order of the calls, a write never touches the socket off the loop,
// and no goroutine needs to know whether it is the loop's.
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
	return wc.writeFrame(true, op, data, true)
}

// WritePrepared sends a frame encoded once for many connections.
func (wc *wsConn) WritePrepared(f *codec.PreparedFrame) error {
	if wc.deflate() != nil { // permessage-deflate (deflate.go)
		return wc.writePreparedDeflate(f)
	}
	return wc.enqueueRaw(f.Bytes(), f.Op().IsData())
}

// Ping sends a ping with up to 125 bytes of application data.
func (wc *wsConn) Ping(data []byte) error {
	if len(data) > 125 {
		return handler.ErrTooLarge
	}
	return wc.enqueueFrame(true, codec.OpPing, data, false)
}

// Pong sends a pong with up to 125 bytes of application data.
func (wc *wsConn) Pong(data []byte) error {
	if len(data) > 125 {
		return handler.ErrTooLarge
	}
	return wc.enqueueFrame(true, codec.OpPong, data, false)
}

// NextWriter returns a writer that sends one message as fragments.
func (wc *wsConn) NextWriter(op handler.Op) (io.WriteCloser, error) {
	if op != codec.OpText && op != codec.OpBinary {
		return nil, errBadOp
	}
	return &fragmentWriter{wc: wc, op: op}, nil
}

// fragmentWriter sends one message as a sequence of frames.
type fragmentWriter struct {
	wc     *wsConn
	op     handler.Op
	sent   bool
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
	w.wc.set(sWriterOpen, true) // no outbound message boundary until Close (handoff.go)
	if err := w.wc.writeFrame(false, op, p, false); err != nil {
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
	op := w.op
	if w.sent {
		op = codec.OpContinuation
	}
	err := w.wc.writeFrame(true, op, nil, true)
	w.wc.set(sWriterOpen, false)
	return err
}

// writeFrame queues one frame; message marks the last frame of a data
// message, which is what Stats.MessagesOut counts.
func (wc *wsConn) writeFrame(fin bool, op codec.OpCode, payload []byte, message bool) error {
	if fin && op != codec.OpContinuation && wc.deflate() != nil && (op == codec.OpText || op == codec.OpBinary) {
		return wc.writeDeflate(op, payload) // permessage-deflate: whole messages only (deflate.go)
	}
	return wc.enqueueFrame(fin, op, payload, message)
}

// enqueueFrame encodes a frame into the pending buffer.
func (wc *wsConn) enqueueFrame(fin bool, op codec.OpCode, payload []byte, message bool) error {
	n := codec.MaxHeaderSize + len(payload)
	wc.mu.Lock()
	if err := wc.admitLocked(n, message, wc.backlogLocked()); err != nil {
		return wc.refused(err)
	}
	wc.out = growOut(wc.out, n)
	if wc.st.Load()&sClient != 0 {
		// RFC 6455 §5.3: every client frame is masked, with a fresh key.
		wc.out.b = codec.AppendMaskedFrame(wc.out.b, fin, op, 0, newMask(), payload)
	} else {
		wc.out.b = codec.AppendFrame(wc.out.b, fin, op, 0, payload)
	}
	return wc.queuedLocked()
}

// appendEncoded appends an encoded (unmasked) frame to the pending buffer
// as this connection sends it: unchanged from a server, masked into the
// buffer by a client. Under mu.
func (wc *wsConn) appendEncodedLocked(frame []byte) {
	if wc.st.Load()&sClient != 0 {
		wc.out = growOut(wc.out, len(frame)+4)
		wc.out.b = codec.MaskFrame(wc.out.b, frame, newMask())
		return
	}
	wc.out = growOut(wc.out, len(frame))
	wc.out.b = append(wc.out.b, frame...)
}

// enqueueRaw appends an encoded frame to the pending buffer.
func (wc *wsConn) enqueueRaw(frame []byte, message bool) error {
	wc.mu.Lock()
	if err := wc.admitLocked(len(frame), message, wc.backlogLocked()); err != nil {
		return wc.refused(err)
	}
	wc.appendEncodedLocked(frame)
	return wc.queuedLocked()
}

// backlogLocked is what the connection holds for the socket as far as a
// goroutine off the loop can tell: gnet's outbound bytes as of the last
// flush, and the frames pending since. Under mu.
func (wc *wsConn) backlogLocked() int { return int(wc.queued.Load()) + wc.outLen() }

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
		if err := wc.lp.el.Execute(context.Background(), wc); err != nil {
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

// Run is the flush task queued by writes from outside the loop.
func (wc *wsConn) Run(context.Context) error {
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
	wc.mu.Unlock()
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
	wc.mu.Unlock()
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
// copy into the pending buffer. Loop only.
func (wc *wsConn) writeOnLoop(frame []byte, message bool) {
	if wc.phase() != phaseOpen {
		return
	}
	if wc.has(sClient) {
		// A client masks the shared frame into its own buffer.
		if wc.queueOnLoop(frame, message) {
			wc.flush()
		}
		return
	}
	wc.mu.Lock()
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

// queueOnLoop appends an encoded frame to the pending buffer without
// flushing, for a batch of broadcasts that is flushed once per connection.
// The cap applies to what the socket has not taken yet: frames of the same
// batch do not count against each other, or a burst would drop a reader
// that keeps up. It reports whether a flush has anything to do. Loop only.
func (wc *wsConn) queueOnLoop(frame []byte, message bool) bool {
	wc.mu.Lock()
	if err := wc.admitLocked(len(frame), message, wc.c.OutboundBuffered()); err != nil {
		wc.mu.Unlock()
		return errors.Is(err, handler.ErrSlowConsumer) // the close frame is pending
	}
	wc.appendEncodedLocked(frame)
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
