package engine

import (
	"context"
	"net"
	"sync"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// loop is the state wsloop keeps per gnet event loop: scratch buffers for
// handshake responses, the timer wheel (which also lists the loop's
// connections, for shutdown and BroadcastAll), the compressor and
// decompressor. Most of it is touched only on the loop's goroutine and
// needs no lock. The exceptions: the broadcast queue (bmu), its fence and
// the tick flags (atomics), the counters (atomics, read by Stats), and the
// compressor (defl.mu), which goroutines writing to this loop's
// connections share (a writer that finds it busy takes one of the
// server's spares: deflate.go, takeDeflater).
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

	tlsPlain []byte // plaintext decrypted for one wss connection at a time (tls.go)

	locals []*net.TCPAddr // local addresses shared by this loop's connections (gnetconn.go)
	infos  []*connInfo    // request details shared by this loop's connections (info.go)

	proxyHdrs map[*wsConn]*codec.ProxyHeader // PROXY protocol headers waiting for OnUpgrade (proxyproto.go); nil until one does

	bmu   sync.Mutex     // guards bq.q, bq.spare and bq.running
	bq    broadcastQueue // broadcasts waiting for the loop (broadcast.go)
	fence atomic.Int64   // entries of bq not yet written: writes wait behind them (broadcast.go)

	// Flow control (readpause.go), loop only but for drainQueued.
	pollFD         int           // the poller's descriptor + 1; 0: not looked up, <= 0: none
	drainWatch     []*wsConn     // connections whose backlog notification waits
	stopDrainPoll  func()        // stops the checks of drainWatch; nil when none run
	drainQueued    atomic.Bool   // a drainCheckTask is queued
	drainCheckTask gnet.Runnable // checkDrains, made once

	moving []*wsConn // a handoff's connections waiting for their message boundary (handoff.go)
	held   []*wsConn // connections moved here and not resumed yet (handoff.go)

	bcastTask gnet.Runnable // runBroadcasts, made once
	tickTask  gnet.Runnable // advance, made once
	ticked    chan struct{} // advance signals it ran, when the clock is not the system's
	ticking   atomic.Bool   // a tickTask is queued
}

func newLoop(s *Server, el gnet.EventLoop) *loop {
	lp := &loop{srv: s, el: el, ticked: make(chan struct{}, 1)}
	lp.bcastTask = gnet.RunnableFunc(lp.runBroadcasts)
	lp.drainCheckTask = gnet.RunnableFunc(lp.checkDrains)
	lp.tickTask = gnet.RunnableFunc(lp.advance)
	lp.now = s.ticksSince(s.clock.Now())
	return lp
}

// advance moves the loop's wheel to the clock's current tick, firing every
// entry that fell due on the way.
func (lp *loop) advance(context.Context) error {
	lp.ticking.Store(false)
	now := lp.srv.ticksSince(lp.srv.clock.Now())
	for int32(now-lp.now) > 0 {
		lp.now++
		lp.wheel.advance(lp.now, func(wc *wsConn) { wc.onTimer() })
	}
	select {
	case lp.ticked <- struct{}{}:
	default:
	}
	return nil
}
