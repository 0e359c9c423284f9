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
// small because a million of them are the point: 128 bytes (a Go size
// class), checked by TestConnSize. The decoder holds no buffer and not the
// message size limit (that is the server's). The handler's context is boxed
// once set, so a connection without one pays a pointer. Outbound and
// assembly buffers come from pools only while something is in flight,
// timers are one entry in the loop's wheel, and state that most connections
// never need (a request header that arrived in pieces, a fragmented message,
// a close in progress, a stalled writer, permessage-deflate, a non-root
// path) lives in a connExtra allocated on first use.
type wsConn struct {
	c  gnet.Conn
	lp *loop
	x  atomic.Pointer[connExtra] // nil until first needed; never reset once set

	// Loop only: the wheel's intrusive list links. Every connection is on
	// one of the loop's lists from accept to close (see wheel).
	tnext, tprev *wsConn

	dec codec.DecoderState // loop only; the limit is the server's (Options.MaxMessageSize)

	// Fields shared with other goroutines, guarded by mu.
	mu     sync.Mutex
	ctx    *any    // SetContext's value, boxed: nil until set, so a connection without one pays 8 bytes, not 16
	out    *outBuf // frames queued and not yet handed to gnet; nil when none
	phase  uint8
	mflags uint8 // mInLoop, mFlushQueued

	// Loop only.
	lflags   uint8  // lArmed, lProbeSent, lPongWait, lHandlerRan, lCloseTimed, lTouched
	deadline uint32 // tick of the wheel entry, when lArmed
	lastRead uint32 // tick of the last bytes received
	// msgStart is, in the handshake phase, the tick of accept; when open,
	// the tick a message or a partial frame started, 0 if none.
	msgStart uint32
	// pingAt is, when open, the tick of the last server ping; once our
	// close frame went out (lCloseTimed), the tick it did.
	pingAt uint32

	queued atomic.Uint32 // gnet's outbound bytes as of the last flush, saturated
}

// Bits of wsConn.mflags, guarded by mu.
const (
	mInLoop      uint8 = 1 << iota // the loop is inside a callback and will flush after it
	mFlushQueued                   // a flush task is queued on the loop
)

// Bits of wsConn.lflags, loop only.
const (
	lArmed      uint8 = 1 << iota // in a wheel slot for tick deadline (else on the parked list)
	lProbeSent                    // idle probe ping sent since the last read
	lPongWait                     // a PingInterval ping is unanswered
	lHandlerRan                   // the handler's OnOpen ran, so OnClose must run
	lCloseTimed                   // our close frame went out at tick pingAt
	lTouched                      // on the broadcast batch's flush list (broadcast.go)
)

func (wc *wsConn) has(f uint8) bool { return wc.lflags&f != 0 }

func (wc *wsConn) set(f uint8, on bool) {
	if on {
		wc.lflags |= f
	} else {
		wc.lflags &^= f
	}
}

// connExtra is the state few connections need, behind one pointer so that
// an idle connection pays 8 bytes for it.
type connExtra struct {
	// Loop only.
	hs         codec.HeaderScanner // a request header not complete after the first read
	hsSaved    bool                // hs holds the scan position
	asm        []byte              // assembly buffer of a fragmented or split message
	closeErr   error               // what OnClose reports, when the server knows better than gnet
	stallSince uint32              // tick the outbound buffer stopped draining; 0 if it drains
	stallBytes int                 // outbound bytes seen at stallSince
	defl       *connDeflate        // permessage-deflate; set before OnOpen, then read-only (deflate.go)

	// Guarded by mu.
	sentClose *handler.CloseError // what Conn.Close sent, reported to OnClose
	info      *connInfo           // nil when the request was "/" with no query or subprotocol
}

// extra returns the connection's connExtra, allocating it on first use.
// Safe from any goroutine: the pointer is published once with a CAS.
func (wc *wsConn) extra() *connExtra {
	if x := wc.x.Load(); x != nil {
		return x
	}
	x := new(connExtra)
	if wc.x.CompareAndSwap(nil, x) {
		return x
	}
	return wc.x.Load()
}

// closeErr returns the close cause recorded by the server, if any. Loop only.
func (wc *wsConn) closeErr() error {
	if x := wc.x.Load(); x != nil {
		return x.closeErr
	}
	return nil
}

// setCloseErr records the close cause OnClose will report. Loop only.
func (wc *wsConn) setCloseErr(err error) { wc.extra().closeErr = err }

// deflate returns the connection's permessage-deflate state, nil when the
// extension was not negotiated.
func (wc *wsConn) deflate() *connDeflate {
	if x := wc.x.Load(); x != nil {
		return x.defl
	}
	return nil
}

// connInfo holds the request details most connections do not need.
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
	if wc.deflate() != nil { // permessage-deflate (deflate.go)
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
		wc.extra().sentClose = sent
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
	if wc.ctx == nil {
		return nil
	}
	return *wc.ctx
}

func (wc *wsConn) SetContext(v any) {
	wc.mu.Lock()
	wc.setContextLocked(v)
	wc.mu.Unlock()
}

// setContextLocked stores v, under mu. The box is allocated on the first
// non-nil value and then reused.
func (wc *wsConn) setContextLocked(v any) {
	if wc.ctx == nil {
		if v == nil {
			return
		}
		wc.ctx = new(any)
	}
	*wc.ctx = v
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
	if x := wc.x.Load(); x != nil && x.info != nil {
		return x.info
	}
	return &rootInfo
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
	if fin && wc.deflate() != nil && (op == codec.OpText || op == codec.OpBinary) { // permessage-deflate: whole messages only (deflate.go)
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
	wc.out = growOut(wc.out, n)
	wc.out.b = codec.AppendFrame(wc.out.b, fin, op, 0, payload)
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
	wc.out = growOut(wc.out, n)
	if raw != nil {
		wc.out.b = append(wc.out.b, raw...)
	} else {
		wc.out.b = codec.AppendFrame(wc.out.b, true, op, 0, payload)
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
	if backlog := int(wc.queued.Load()) + wc.outLen(); max > 0 && backlog > 0 && backlog+n > max {
		wc.dropSlowLocked()
		return handler.ErrSlowConsumer
	}
	return nil
}

// dropSlowLocked applies the slow-consumer policy, under mu: what is queued
// is replaced by a 1008 close frame and the connection fails once the loop
// flushes it.
func (wc *wsConn) dropSlowLocked() {
	wc.phase = phaseFailing
	wc.out = growOut(wc.out, len(slowConsumerClose))
	wc.out.b = append(wc.out.b[:0], slowConsumerClose...)
	wc.lp.stats.slowConsumers.Add(1)
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
	if wc.mflags&(mInLoop|mFlushQueued) != 0 {
		return false
	}
	wc.mflags |= mFlushQueued
	return true
}

// outLen is the number of queued bytes, under mu.
func (wc *wsConn) outLen() int {
	if wc.out == nil {
		return 0
	}
	return len(wc.out.b)
}

func (wc *wsConn) scheduleFlush() {
	if err := wc.lp.el.Execute(context.Background(), wc); err != nil {
		// The engine is stopping; the connection goes with it.
		wc.mu.Lock()
		wc.mflags &^= mFlushQueued
		wc.mu.Unlock()
	}
}

// Run is the flush task queued by writes from outside the loop.
func (wc *wsConn) Run(context.Context) error {
	wc.mu.Lock()
	wc.mflags &^= mFlushQueued
	wc.mu.Unlock()
	wc.flush()
	return nil
}

// beginCallbacks marks the start of a batch of callbacks on the loop: writes
// made meanwhile are flushed by endCallbacks.
func (wc *wsConn) beginCallbacks() {
	wc.mu.Lock()
	wc.mflags |= mInLoop
	wc.mu.Unlock()
}

func (wc *wsConn) endCallbacks() {
	wc.mu.Lock()
	wc.mflags &^= mInLoop
	wc.mu.Unlock()
	wc.flush()
}

// flush writes the pending frames with one system call. Loop only.
func (wc *wsConn) flush() {
	wc.mu.Lock()
	o := wc.out
	wc.out = nil
	phase := wc.phase
	wc.mu.Unlock()
	if o == nil {
		return
	}
	if len(o.b) == 0 || phase == phaseClosed {
		putOut(o)
		return
	}
	c := wc.c
	if phase == phaseFailing && wc.closeErr() == nil {
		// The slow-consumer policy switched the phase off the loop.
		wc.setCloseErr(handler.ErrSlowConsumer)
		_, _ = c.Write(o.b)
		putOut(o)
		wc.closeNow()
		return
	}
	_, _ = c.Write(o.b) // a failed write runs OnClose, which sets phaseClosed
	wc.lp.stats.bytesOut.Add(int64(len(o.b)))
	putOut(o)
	if wc.getPhase() == phaseClosed {
		return
	}
	wc.afterWrite()
	if phase == phaseClosing && !wc.has(lCloseTimed) {
		// Our close frame just went out: wait for the answer, bounded.
		wc.startCloseTimer()
	}
}

// startCloseTimer bounds the wait for the peer's close frame or FIN from
// now. Loop only.
func (wc *wsConn) startCloseTimer() {
	s := wc.lp.srv
	wc.pingAt = wc.lp.now
	wc.set(lCloseTimed, true)
	wc.lp.wheel.schedule(wc, wc.lp.now+s.ticks(s.opts.CloseTimeout))
}

// queueCloseLocked appends a close frame to the pending frames, after
// whatever the application queued before it. The caller holds mu and sets
// the phase that follows.
func (wc *wsConn) queueCloseLocked(code uint16, reason string) {
	var p [125]byte
	payload := codec.AppendClosePayload(p[:0], code, reason)
	wc.out = growOut(wc.out, len(payload)+codec.MaxHeaderSize)
	wc.out.b = codec.AppendFrame(wc.out.b, true, codec.OpClose, 0, payload)
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
	if wc.closeErr() == nil {
		wc.setCloseErr(cause)
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
	o := wc.out
	wc.out = nil
	wc.mu.Unlock()
	if o != nil {
		if len(o.b) > 0 {
			_, _ = wc.c.Write(o.b)
		}
		putOut(o)
	}
	if wc.getPhase() == phaseClosed {
		return
	}
	if wc.c.OutboundBuffered() == 0 {
		_ = syscall.Shutdown(wc.c.Fd(), syscall.SHUT_WR)
	}
	wc.startCloseTimer()
}
