package engine

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Connection phases. Only the loop changes phase; other goroutines read it
// under mu.
const (
	phaseHandshake uint8 = iota
	phaseOpen            // frames flow both ways
	phaseClosing         // we sent a close frame and wait for the peer's
	phaseFailing         // we failed the connection: input is discarded until EOF or timeout
	phaseClosed          // gnet's OnClose ran: nothing may touch the socket
)

// wsConn is the per-connection state. It is allocated at accept and is kept
// small because a million of them are the point: the decoder holds no
// buffer, the assembly and outbound buffers are taken from pools only while
// a message is in flight, and timers are one entry in the loop's wheel.
type wsConn struct {
	c   gnet.Conn
	lp  *loop
	dec codec.Decoder
	hs  codec.HeaderScanner

	// Loop-only fields.
	asm        []byte // assembly buffer of a fragmented or split message
	lnext      *wsConn
	lprev      *wsConn
	tnext      *wsConn
	tprev      *wsConn
	deadline   uint32 // tick of the wheel entry
	opened     uint32 // tick of accept
	lastRead   uint32 // tick of the last bytes received
	msgStart   uint32 // tick a message or partial frame started; 0 if none
	closeAt    uint32 // tick our close frame was sent
	pingAt     uint32 // tick of the last server ping
	stallSince uint32 // tick the outbound buffer stopped draining; 0 if it drains
	stallBytes int    // outbound bytes seen at stallSince
	timerArmed bool
	probeSent  bool // idle probe ping sent since the last read
	pongWait   bool // a PingInterval ping is unanswered
	handlerRan bool // the handler's OnOpen ran, so OnClose must run
	closeErr   error
	defl       *connDeflate // permessage-deflate, nil when not negotiated; set before OnOpen, then read-only (deflate.go)

	// Fields shared with other goroutines, guarded by mu.
	mu          sync.Mutex
	phase       uint8
	inLoop      bool // the loop is inside a callback and will flush after it
	flushQueued bool // a flush task is queued on the loop
	pending     []byte
	ctx         any
	sentClose   *handler.CloseError // what Conn.Close sent, reported to OnClose
	info        *connInfo           // nil when the request was "/" with no query or subprotocol
	queued      atomic.Int64        // gnet's outbound bytes as of the last flush
}

// connInfo holds the request details most connections do not need, behind
// one pointer, so that the common case costs 8 bytes instead of 48.
type connInfo struct {
	subprotocol, path, rawQuery string
}

var _ handler.Conn = (*wsConn)(nil)

// --- handler.Conn ---------------------------------------------------------

var errBadOp = errors.New("wsloop: WriteMessage and NextWriter take handler.Text or handler.Binary")

func (wc *wsConn) WriteMessage(op handler.Op, data []byte) error {
	if op != codec.OpText && op != codec.OpBinary {
		return errBadOp
	}
	err := wc.writeFrame(true, op, data)
	if err == nil {
		wc.lp.stats.messagesOut.Add(1)
	}
	return err
}

func (wc *wsConn) WritePrepared(f *codec.PreparedFrame) error {
	if wc.defl != nil { // permessage-deflate (deflate.go)
		err := wc.writePreparedDeflate(f)
		if err == nil && f.Op().IsData() {
			wc.lp.stats.messagesOut.Add(1)
		}
		return err
	}
	err := wc.enqueue(f.Bytes(), 0, nil)
	if err == nil && f.Op().IsData() {
		wc.lp.stats.messagesOut.Add(1)
	}
	return err
}

func (wc *wsConn) Ping(data []byte) error {
	if len(data) > 125 {
		return handler.ErrTooLarge
	}
	return wc.writeFrame(true, codec.OpPing, data)
}

func (wc *wsConn) Pong(data []byte) error {
	if len(data) > 125 {
		return handler.ErrTooLarge
	}
	return wc.writeFrame(true, codec.OpPong, data)
}

func (wc *wsConn) Close(code uint16, reason string) error {
	if !codec.ValidCloseCode(code) {
		code = codec.CloseNormal
	}
	var p [125]byte
	payload := codec.AppendClosePayload(p[:0], code, reason)
	sent := &handler.CloseError{Code: code, Reason: string(payload[min(2, len(payload)):])}
	err := wc.enqueue(nil, codec.OpClose, payload)
	if err == nil {
		wc.mu.Lock()
		wc.sentClose = sent
		wc.mu.Unlock()
		wc.lp.srv.countClose(code)
	}
	return err
}

func (wc *wsConn) NextWriter(op handler.Op) (io.WriteCloser, error) {
	if op != codec.OpText && op != codec.OpBinary {
		return nil, errBadOp
	}
	return &fragmentWriter{wc: wc, op: op}, nil
}

func (wc *wsConn) Context() any {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	return wc.ctx
}

func (wc *wsConn) SetContext(v any) {
	wc.mu.Lock()
	wc.ctx = v
	wc.mu.Unlock()
}

// RemoteAddr and LocalAddr read gnet's copy under mu while the connection is
// open: gnet clears it when it recycles the connection after OnClose.
func (wc *wsConn) RemoteAddr() net.Addr {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.phase == phaseClosed {
		return nil
	}
	return wc.c.RemoteAddr()
}

func (wc *wsConn) LocalAddr() net.Addr {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.phase == phaseClosed {
		return nil
	}
	return wc.c.LocalAddr()
}

func (wc *wsConn) getInfo() *connInfo {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.info == nil {
		return &rootInfo
	}
	return wc.info
}

var rootInfo = connInfo{path: "/"}

func (wc *wsConn) Subprotocol() string { return wc.getInfo().subprotocol }
func (wc *wsConn) Path() string        { return wc.getInfo().path }
func (wc *wsConn) RawQuery() string    { return wc.getInfo().rawQuery }

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
	if err := w.wc.writeFrame(false, op, p); err != nil {
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
	err := w.wc.writeFrame(true, op, nil)
	if err == nil {
		w.wc.lp.stats.messagesOut.Add(1)
	}
	return err
}

// --- write path -----------------------------------------------------------
//
// Every write, from a callback or from any other goroutine, encodes its frame
// into the connection's pending buffer under mu. Inside a callback the loop
// flushes the buffer when the callback batch ends (one write system call for
// all the frames it produced); from elsewhere the first write queues one
// flush task on the loop. So ordering is the order of the calls, a write
// never touches the socket off the loop, and no goroutine can tell whether
// it is the loop's: none needs to.

func (wc *wsConn) writeFrame(fin bool, op codec.OpCode, payload []byte) error {
	if wc.defl != nil && fin && (op == codec.OpText || op == codec.OpBinary) { // permessage-deflate: whole messages only (deflate.go)
		return wc.writeDeflate(op, payload)
	}
	return wc.enqueueFrame(fin, op, payload)
}

func (wc *wsConn) enqueueFrame(fin bool, op codec.OpCode, payload []byte) error {
	n := codec.MaxHeaderSize + len(payload)
	wc.mu.Lock()
	if err := wc.admit(n); err != nil {
		return wc.refused(err)
	}
	wc.pending = growBuf(wc.pending, n)
	wc.pending = codec.AppendFrame(wc.pending, fin, op, 0, payload)
	schedule := wc.markDirty()
	wc.mu.Unlock()
	if schedule {
		wc.scheduleFlush()
	}
	return nil
}

// enqueue appends a pre-encoded frame (raw) or, when raw is nil, a close
// frame with payload, and moves the connection to the closing phase.
func (wc *wsConn) enqueue(raw []byte, op codec.OpCode, payload []byte) error {
	wc.mu.Lock()
	n := len(raw) + len(payload) + codec.MaxHeaderSize
	if err := wc.admit(n); err != nil {
		return wc.refused(err)
	}
	wc.pending = growBuf(wc.pending, n)
	if raw != nil {
		wc.pending = append(wc.pending, raw...)
	} else {
		wc.pending = codec.AppendFrame(wc.pending, true, op, 0, payload)
		wc.phase = phaseClosing
	}
	schedule := wc.markDirty()
	wc.mu.Unlock()
	if schedule {
		wc.scheduleFlush()
	}
	return nil
}

// admit checks, under mu, that a frame of n bytes may be queued: the
// connection is open and its outbound bytes stay under the cap. Past the cap
// the slow-consumer policy applies: refuse and drop the connection.
func (wc *wsConn) admit(n int) error {
	if wc.phase != phaseOpen {
		return handler.ErrClosed
	}
	// The cap bounds the backlog: a message larger than the cap may still
	// go to a connection that has nothing queued.
	max := wc.lp.srv.opts.MaxOutboundBytes
	if backlog := int(wc.queued.Load()) + len(wc.pending); max > 0 && backlog > 0 && backlog+n > max {
		wc.phase = phaseFailing
		wc.pending = append(wc.pending[:0], slowConsumerClose...)
		wc.lp.stats.slowConsumers.Add(1)
		return handler.ErrSlowConsumer
	}
	return nil
}

// refused unlocks mu after admit refused a write and, when the refusal
// queued the slow-consumer close, makes sure the loop acts on it.
func (wc *wsConn) refused(err error) error {
	schedule := errors.Is(err, handler.ErrSlowConsumer) && wc.markDirty()
	wc.mu.Unlock()
	if schedule {
		wc.scheduleFlush()
	}
	return err
}

var slowConsumerClose = codec.AppendCloseFrame(nil, codec.ClosePolicyViolation, "slow consumer")

// markDirty reports, under mu, whether a flush task must be queued.
func (wc *wsConn) markDirty() bool {
	if wc.inLoop || wc.flushQueued {
		return false
	}
	wc.flushQueued = true
	return true
}

func (wc *wsConn) scheduleFlush() {
	if err := wc.lp.el.Execute(context.Background(), wc); err != nil {
		// The engine is stopping; the connection goes with it.
		wc.mu.Lock()
		wc.flushQueued = false
		wc.mu.Unlock()
	}
}

// Run is the flush task queued by writes from outside the loop.
func (wc *wsConn) Run(context.Context) error {
	wc.mu.Lock()
	wc.flushQueued = false
	wc.mu.Unlock()
	wc.flush()
	return nil
}

// beginCallbacks marks the start of a batch of callbacks on the loop: writes
// made meanwhile are flushed by endCallbacks.
func (wc *wsConn) beginCallbacks() {
	wc.mu.Lock()
	wc.inLoop = true
	wc.mu.Unlock()
}

func (wc *wsConn) endCallbacks() {
	wc.mu.Lock()
	wc.inLoop = false
	wc.mu.Unlock()
	wc.flush()
}

// flush writes the pending frames with one system call. Loop only.
func (wc *wsConn) flush() {
	wc.mu.Lock()
	p := wc.pending
	wc.pending = nil
	phase := wc.phase
	wc.mu.Unlock()
	if len(p) == 0 || phase == phaseClosed {
		if p != nil {
			putBuf(p)
		}
		return
	}
	c := wc.c
	s := wc.lp.srv
	if phase == phaseFailing && wc.closeErr == nil {
		// The slow-consumer policy switched the phase off the loop.
		wc.closeErr = handler.ErrSlowConsumer
		_, _ = c.Write(p)
		putBuf(p)
		wc.closeNow()
		return
	}
	_, _ = c.Write(p) // a failed write runs OnClose, which sets phaseClosed
	wc.lp.stats.bytesOut.Add(int64(len(p)))
	putBuf(p)
	if wc.getPhase() == phaseClosed {
		return
	}
	wc.afterWrite()
	if phase == phaseClosing && wc.closeAt == 0 {
		// Our close frame just went out: wait for the answer, bounded.
		wc.closeAt = wc.lp.now
		wc.lp.wheel.schedule(wc, wc.lp.now+s.ticks(s.opts.CloseTimeout))
	}
}

// queueCloseLocked appends a close frame to the pending frames, after
// whatever the application queued before it. The caller holds mu and sets
// the phase that follows.
func (wc *wsConn) queueCloseLocked(code uint16, reason string) {
	var p [125]byte
	payload := codec.AppendClosePayload(p[:0], code, reason)
	wc.pending = growBuf(wc.pending, len(payload)+codec.MaxHeaderSize)
	wc.pending = codec.AppendFrame(wc.pending, true, codec.OpClose, 0, payload)
}

func (wc *wsConn) getPhase() uint8 {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	return wc.phase
}

func (wc *wsConn) setPhase(p uint8) {
	wc.mu.Lock()
	wc.phase = p
	wc.mu.Unlock()
}

// closeNow closes the TCP connection from the loop. gnet flushes what is
// still in its outbound buffer first.
func (wc *wsConn) closeNow() {
	if wc.getPhase() == phaseClosed {
		return
	}
	_ = wc.lp.el.Close(wc.c)
}

// fail sends a close frame with code and reason, then closes the TCP
// connection once the frame is on its way. It is how the server ends a
// connection for a protocol error, a limit, a timeout or a shutdown.
// Loop only.
func (wc *wsConn) fail(code uint16, reason string, cause error) {
	if wc.closeErr == nil {
		wc.closeErr = cause
	}
	wc.mu.Lock()
	if wc.phase == phaseClosed {
		wc.mu.Unlock()
		return
	}
	if wc.phase == phaseOpen {
		wc.queueCloseLocked(code, reason)
	}
	wc.phase = phaseFailing
	wc.mu.Unlock()
	wc.lp.srv.countClose(code)
	wc.flushFailing()
}

// flushFailing writes what is pending and half-closes: the peer sees our
// close frame followed by FIN, and whatever it still sends is read and
// discarded until it closes too (or CloseTimeout passes). Closing at once
// instead could turn into a reset that destroys the close frame in flight.
func (wc *wsConn) flushFailing() {
	wc.mu.Lock()
	p := wc.pending
	wc.pending = nil
	wc.mu.Unlock()
	if len(p) > 0 {
		_, _ = wc.c.Write(p)
		putBuf(p)
	}
	if wc.getPhase() == phaseClosed {
		return
	}
	s := wc.lp.srv
	if wc.c.OutboundBuffered() == 0 {
		_ = syscall.Shutdown(wc.c.Fd(), syscall.SHUT_WR)
	}
	wc.closeAt = wc.lp.now
	wc.lp.wheel.schedule(wc, wc.lp.now+s.ticks(s.opts.CloseTimeout))
}
