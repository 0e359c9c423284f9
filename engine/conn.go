package engine

import (
	"net"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Connection phases, in the low bits of wsConn.st.
const (
	phaseHandshake uint8 = iota
	phaseOpen            // frames flow both ways
	phaseClosing         // we sent a close frame and wait for the peer's
	phaseFailing         // we failed the connection: input is discarded until EOF or timeout
	phaseClosed          // gnet's OnClose ran: nothing may touch the socket
	phaseTLS             // wss: the TLS handshake runs; phaseHandshake follows (tls.go)
	phaseProxy           // the PROXY protocol header from a trusted balancer is read; phaseTLS or phaseHandshake follows (proxyproto.go)
	phaseMoved           // detached for a handoff: the socket is off the loop, in transit to a successor (handoff.go)
)

// wsConn is the per-connection state. It is allocated at accept and is kept
// small because a million of them are the point: 128 bytes (a Go size
// class), checked by TestConnSize. The decoder holds no buffer and not the
// message size limit (that is the server's). The handler's context is boxed
// once set, so a connection without one pays a pointer. Outbound and
// assembly buffers come from pools only while something is in flight,
// timers are one entry in the loop's wheel, and state that most connections
// never need (a request header that arrived in pieces, a fragmented message,
// a close in progress, a stalled writer, permessage-deflate) lives in a
// connExtra allocated on first use. The Context and the request's path,
// query and subprotocol share a small connAux, and connections that asked
// for the same path share one connInfo (info.go).
type wsConn struct {
	c  gnet.Conn
	lp *loop
	x  atomic.Pointer[connExtra] // nil until first needed; never reset once set

	// Loop only: the wheel's intrusive list links. Every connection is on
	// one of the loop's lists from accept to close (see wheel).
	tnext, tprev *wsConn

	dec codec.DecoderState // loop only; the limit is the server's (Options.MaxMessageSize)

	// mu guards out and aux, and orders the phase changes made together
	// with them (a close frame queued and the phase that follows it).
	mu  connMutex
	aux *connAux // the Context and the request details: nil until either is set, so a connection with neither pays 8 bytes
	out *outBuf  // frames queued and not yet handed to gnet; nil when none

	// st holds the phase and every flag in one word, so that the loop reads
	// them without taking mu: the phase in the low bits, then the s* bits.
	// Other goroutines change only the phase, sFlushQueued and sPauseWanted;
	// every change is an atomic read-modify-write, so none is lost.
	st atomic.Uint32

	queued atomic.Uint32 // gnet's outbound bytes as of the last flush, saturated

	// Loop only.
	deadline uint32 // tick of the wheel entry, when sArmed
	lastRead uint32 // tick of the last bytes received
	// acceptOrMsgAt is, in the handshake phases, the tick of accept;
	// when open, the tick a message or a partial frame started, 0 if
	// none. One field for two meanings, never needed at once, keeps
	// wsConn at 128 bytes.
	acceptOrMsgAt uint32
	// pingOrCloseAt is, when open, the tick of the last PingInterval
	// ping; once our close frame went out (sCloseTimed), the tick it
	// did. The same economy.
	pingOrCloseAt uint32
}

// Bits of wsConn.st above the phase.
const (
	phaseMask     uint32 = 7
	sInLoop       uint32 = 1 << 3  // the loop runs callbacks of this connection and flushes after them
	sFlushQueued  uint32 = 1 << 4  // a flush task is queued on the loop
	sArmed        uint32 = 1 << 5  // loop only: in a wheel slot for tick deadline (else on the parked list)
	sProbeSent    uint32 = 1 << 6  // loop only: idle probe ping sent since the last read
	sPongWait     uint32 = 1 << 7  // loop only: a PingInterval ping is unanswered
	sHandlerRan   uint32 = 1 << 8  // loop only: the handler's OnOpen ran, so OnClose must run
	sCloseTimed   uint32 = 1 << 9  // loop only: our close frame went out at tick pingOrCloseAt
	sTouched      uint32 = 1 << 10 // loop only: on the broadcast batch's flush list (broadcast.go)
	sAbort        uint32 = 1 << 11 // the pending close frame is the slow-consumer policy's: close the TCP connection once it is written
	sClient       uint32 = 1 << 12 // set before OnOpen, never cleared: a connection this side dialed (dial.go): frames are masked, the server's are not, and the server closes TCP first
	sPauseWanted  uint32 = 1 << 13 // the application asked to pause reads (PauseReading), set and cleared from any goroutine (readpause.go)
	sPaused       uint32 = 1 << 14 // loop only: reads are paused at the poller
	sDrainWatched uint32 = 1 << 15 // loop only: on the loop's backlog watch list (readpause.go)
	sTracked      uint32 = 1 << 16 // loop only: counted in the per-client table under its peer's address, released when it closes (clients.go)
	sReadHalted   uint32 = 1 << 19 // loop only: frames() stopped at a wanted pause, so what it left raises no event of its own until a resume wakes it (readpause.go)
	sMoving       uint32 = 1 << 20 // loop only: a handoff takes it at its next message boundary; decoding stops there (handoff.go)
	sHeld         uint32 = 1 << 21 // loop only: moved here and not resumed yet; nothing is decoded (handoff.go)
	sCloseFlush   uint32 = 1 << 17 // loop only: close the TCP connection once gnet's outbound buffer is empty (closeWhenFlushed)
	sBridged      uint32 = 1 << 18 // set before OnOpen, never cleared: the socket is the loop's end of a TLS bridge (upgrade.go)
)

func (wc *wsConn) phase() uint8 { return uint8(wc.st.Load() & phaseMask) }

// gone reports whether the socket is no longer the connection's to touch:
// closed, or detached for a handoff.
func (wc *wsConn) gone() bool {
	p := wc.phase()
	return p == phaseClosed || p == phaseMoved
}

// setPhase moves the connection to phase p. Nothing leaves phaseClosed: a
// late change from another goroutine cannot revive a closed connection.
func (wc *wsConn) setPhase(p uint8) {
	for {
		old := wc.st.Load()
		if uint8(old&phaseMask) == phaseClosed {
			return
		}
		if wc.st.CompareAndSwap(old, old&^phaseMask|uint32(p)) {
			return
		}
	}
}

func (wc *wsConn) has(f uint32) bool { return wc.st.Load()&f != 0 }

func (wc *wsConn) set(f uint32, on bool) {
	if on {
		wc.st.Or(f)
	} else {
		wc.st.And(^f)
	}
}

// connExtra is the state few connections need, behind one pointer so that
// an idle connection pays 8 bytes for it.
type connExtra struct {
	// Loop only.
	hs         codec.HeaderScanner // a request header not complete after the first read
	hsSaved    bool                // hs holds the scan position
	hsCharged  int                 // header bytes charged to the inbound budget while the header is incomplete
	asm        []byte              // assembly buffer of a fragmented or split message, charged to the inbound budget
	closeErr   error               // what OnClose reports, when the server knows better than gnet
	stallSince uint32              // tick the outbound buffer stopped draining; 0 if it drains
	stallBytes int                 // outbound bytes seen at stallSince
	defl       *connDeflate        // permessage-deflate; set before OnOpen, then read-only (deflate.go)
	pending    []byte              // bytes read before the socket reached the loop (net/http's reader) or decrypted by TLS, not decoded yet
	tls        *tlsState           // wss: crypto/tls and its transport (tls.go)
	deciding   bool                // an AsyncUpgrader is deciding on the request

	// Set before OnOpen, then read-only: the choices of a net/http Upgrade.
	h      handler.Handler       // the connection's handler, nil for the server's
	stream handler.StreamHandler // h, when it is one
	maxMsg int64                 // the connection's MaxMessageSize, 0 for the server's

	// Guarded by mu.
	sentClose *handler.CloseError // what Conn.Close sent, reported to OnClose
	hold      *heldOut            // a fragmented message's state and the data held behind it (write.go); nil until a NextWriter sends a fragment
	deferred  int                 // bytes of writes deferred behind broadcasts, not yet applied (write.go)
	drainMark int                 // NotifyBacklog's mark (readpause.go)
	drainFn   func()              // NotifyBacklog's function, nil when none waits

	id uint64 // ConnID, 0 until first asked for or moved here (handoff_api.go)
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

// setCloseErr records the close cause OnClose will report, unless one is
// recorded already: the first cause is the true one. Loop only.
func (wc *wsConn) setCloseErr(err error) {
	if x := wc.extra(); x.closeErr == nil {
		x.closeErr = err
	}
}

// deflate returns the connection's permessage-deflate state, nil when the
// extension was not negotiated.
func (wc *wsConn) deflate() *connDeflate {
	if x := wc.x.Load(); x != nil {
		return x.defl
	}
	return nil
}

// connAux is what a connection keeps of its Context and its request, behind
// one pointer (wsConn.aux), guarded by the connection's mu.
type connAux struct {
	ctx  any       // SetContext's value
	info *connInfo // nil when the request was "/" with no query or subprotocol; often shared (info.go)
}

// connInfo holds the request details most connections do not need. Once a
// connection is open its connInfo is read-only, and connections on one
// loop that asked for the same path share one (loop.internInfo).
type connInfo struct {
	subprotocol, path, rawQuery string
	// remote and local, when set, are the addresses of a connection that
	// reaches its loop through a bridge (a hijacked TLS connection), whose
	// own socket is local, or those of the client a PROXY protocol header
	// announced when they could not be given to gnet's connection
	// (proxyproto.go).
	remote, local net.Addr
}

// handler returns the connection's handler.
func (wc *wsConn) handler() handler.Handler {
	if x := wc.x.Load(); x != nil && x.h != nil {
		return x.h
	}
	return wc.lp.srv.h
}

// streamer returns the connection's StreamHandler, nil if it has none.
func (wc *wsConn) streamer() handler.StreamHandler {
	if x := wc.x.Load(); x != nil && x.h != nil {
		return x.stream
	}
	return wc.lp.srv.stream
}

// maxMessageSize returns the message size limit of the connection.
func (wc *wsConn) maxMessageSize() int64 {
	if x := wc.x.Load(); x != nil && x.maxMsg != 0 {
		return x.maxMsg
	}
	return wc.lp.srv.opts.MaxMessageSize
}

var _ handler.Conn = (*wsConn)(nil)

// Context returns the value set by SetContext or by the upgrade hook.
func (wc *wsConn) Context() any {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.aux == nil {
		return nil
	}
	return wc.aux.ctx
}

// SetContext attaches v to the connection.
func (wc *wsConn) SetContext(v any) {
	wc.mu.Lock()
	wc.setContextLocked(v)
	wc.mu.Unlock()
}

// setContextLocked stores v, under mu. The connAux is allocated on the
// first non-nil value (or request detail) and then reused.
func (wc *wsConn) setContextLocked(v any) {
	if wc.aux == nil {
		if v == nil {
			return
		}
		wc.aux = new(connAux)
	}
	wc.aux.ctx = v
}

// setInfoLocked records the request details, under mu; nil means "/" with
// no query or subprotocol.
func (wc *wsConn) setInfoLocked(info *connInfo) {
	if info == nil {
		return
	}
	if wc.aux == nil {
		wc.aux = new(connAux)
	}
	wc.aux.info = info
}

// RemoteAddr returns gnet's copy of the peer's address while the connection
// is open, nil after (and once it moved to a successor): gnet clears it when
// it recycles the connection after OnClose. The phase is read under mu,
// which OnClose takes to set phaseClosed (and a handoff phaseMoved), so
// the address cannot be cleared while it is being read.
func (wc *wsConn) RemoteAddr() net.Addr {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.gone() {
		return nil
	}
	if wc.aux != nil && wc.aux.info != nil && wc.aux.info.remote != nil {
		return wc.aux.info.remote
	}
	return wc.c.RemoteAddr()
}

// LocalAddr is RemoteAddr's counterpart for the local address.
func (wc *wsConn) LocalAddr() net.Addr {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.gone() {
		return nil
	}
	if wc.aux != nil && wc.aux.info != nil && wc.aux.info.local != nil {
		return wc.aux.info.local
	}
	return wc.c.LocalAddr()
}

// peerAddr is RemoteAddr for the loop, also in the phases before the
// connection opens and while it closes (gnet's address stays valid on the
// loop until its OnClose returns). Loop only.
func (wc *wsConn) peerAddr() net.Addr {
	if in := wc.infoOrNil(); in != nil && in.remote != nil {
		return in.remote
	}
	return wc.c.RemoteAddr()
}

// localAddr is LocalAddr for the loop. Loop only.
func (wc *wsConn) localAddr() net.Addr {
	if in := wc.infoOrNil(); in != nil && in.local != nil {
		return in.local
	}
	return wc.c.LocalAddr()
}

// infoOrNil returns the connection's request details, nil when it has
// none.
func (wc *wsConn) infoOrNil() *connInfo {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.aux == nil {
		return nil
	}
	return wc.aux.info
}

func (wc *wsConn) getInfo() *connInfo {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.aux != nil && wc.aux.info != nil {
		return wc.aux.info
	}
	return &rootInfo
}

var rootInfo = connInfo{path: "/"}

// Subprotocol returns the subprotocol chosen in the handshake, or "".
func (wc *wsConn) Subprotocol() string { return wc.getInfo().subprotocol }

// Path returns the path of the upgrade request.
func (wc *wsConn) Path() string { return wc.getInfo().path }

// RawQuery returns the query of the upgrade request, without the '?'.
func (wc *wsConn) RawQuery() string { return wc.getInfo().rawQuery }
