//go:build !windows

package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine/internal/handoff"
	"github.com/wsloop/wsloop/handler"
)

// Deploying without disconnecting: the old process hands its listeners and
// its live connections to its successor (HandOff), which takes them over
// (TakeOver, then Takeover.Restore). The transfer layer, with its rules on
// who may take over and on what happens when either process fails, is in
// internal/handoff; this file decides what moves and when.
//
// A connection moves whole, at a message boundary in both directions:
//
//  1. Mark (every loop at once). Every open connection that can move
//     (plain TCP or Unix, its handler a handler.Mover) is marked: its
//     decoding stops at the next message boundary, and what follows stays
//     raw in the input. Every loop finishes marking before any connection
//     leaves, so a broadcast that a message delivered just before the mark
//     queued on another loop reaches that loop's connections before they
//     go.
//  2. Detach (every loop, again and again until all are gone or
//     MoveTimeout). A marked connection is taken when no message is half
//     received, no NextWriter is open and gnet's outbound buffer is empty
//     (gnet keeps no copy of it anyone could move). In that one loop task
//     the application's state is asked for (OnMove), the unparsed input
//     (gnet's buffer and wsloop's pending bytes) and the queued output are
//     copied, the socket is duplicated and gnet lets go of its own
//     descriptor: no shutdown(2), no close frame, no OnClose. From then on
//     no read can slip in, and writes return ErrClosed.
//  3. Send. Records and duplicates go to the successor in batches; the
//     application's global state follows, then the commit. Only once the
//     successor acknowledges the commit are the duplicates closed and
//     OnMoved called. If anything fails before, the transfer is called
//     off: each connection is put back on its own loop, with its input
//     and output, and served as if nothing happened.
//
// What stays: wss connections terminated here (crypto/tls cannot export a
// live session's keys), connections bridged from a net/http TLS server,
// connections in their handshake or closing, and those past the bounds.
// They are served until they close, or DrainTimeout sends them 1001.

// HandOff hands the server's listener, the listeners in opts and every
// connection that can move to a successor process, then serves what
// stayed until it closes (or DrainTimeout) and shuts down. It returns once
// this server holds nothing, with what it did.
//
// dir is a directory only this user can enter (created with mode 0700 if
// missing); HandOff binds a Unix socket in it and waits, until ctx is done,
// for the successor to connect there (TakeOver with the same dir). Both
// check the other's credentials first, then that they speak the same state
// format: if they do not, nothing moves and the server goes on serving.
//
// If the transfer fails (the successor dies, refuses a batch, gives up, or
// ctx ends before the commit), HandOff takes everything back and returns
// the error; the server goes on serving as before, listener included.
//
// HandOff waits for the event loops: it must not be called from a handler
// callback. Windows has no way to pass sockets between processes: there
// HandOff returns ErrHandOffUnsupported.
func (s *Server) HandOff(ctx context.Context, dir string, opts *HandOffOptions) (*HandOffResult, error) {
	if opts == nil {
		opts = &HandOffOptions{}
	}
	o := opts.withDefaults()
	if !s.serving() {
		return nil, ErrNotServing
	}
	if s.draining.Load() {
		return nil, errors.New("wsloop: HandOff: the server is shutting down")
	}
	if !s.handingOff.CompareAndSwap(false, true) {
		return nil, errors.New("wsloop: HandOff: a handoff is running already")
	}
	ls, err := s.handOffListeners(o.Listeners)
	if err != nil {
		s.handingOff.Store(false)
		return nil, err
	}
	g, err := handoff.Offer(ctx, dir, handoff.Config{Version: handoffStateVersion, AllowUIDs: o.AllowUIDs, Logger: s.log})
	if err != nil {
		s.handingOff.Store(false)
		return nil, err
	}
	start := time.Now()
	res := &HandOffResult{Successor: g.Peer().PID, Stayed: map[string]int{}}
	s.log.Info("wsloop: handing off", "successor_pid", res.Successor, "listeners", len(ls), "conns", s.stats.conns.Load())

	// The listeners first. This process stops accepting before the
	// successor has them, so that no connection is accepted here after
	// that (it would stay, and be drained); the listen queues stay open
	// throughout, and a connection attempt waits in them.
	s.pauseListeners(ls)
	payload := appendListeners(nil, listenerRecords(ls))
	if err := g.SendListeners(ctx, payload, listenerFDs(ls)); err != nil {
		g.TakeBack()
		s.resumeListeners(ls)
		s.handingOff.Store(false)
		s.log.Warn("wsloop: handoff called off before anything moved", "err", err)
		return nil, fmt.Errorf("wsloop: HandOff: listeners: %w", err)
	}
	res.Listeners = len(ls)

	moved, pauseStart, err := s.moveConns(ctx, g, &o, res)
	if err == nil && o.State != nil {
		var st []byte
		if st, err = s.callState(o.State); err == nil {
			err = g.SendState(ctx, st)
		}
	}
	if err == nil {
		err = g.Commit(ctx)
		if errors.Is(err, handoff.ErrCommitUnknown) {
			// The successor is alive and has everything; it may serve
			// it. Taking it back could make two readers.
			s.log.Warn("wsloop: the successor did not acknowledge the commit; its connections are its own", "err", err)
			err = nil
		}
	}
	if err != nil {
		g.TakeBack()
		s.takeBack(moved)
		s.resumeListeners(ls)
		s.handingOff.Store(false)
		s.log.Warn("wsloop: handoff called off; serving everything again", "err", err, "taken_back", len(moved))
		return nil, fmt.Errorf("wsloop: HandOff: %w", err)
	}
	g.Close()
	end := time.Now()
	res.Moved = len(moved)
	res.Duration = end.Sub(start)
	if !pauseStart.IsZero() {
		res.Pause = end.Sub(pauseStart)
	}
	s.releaseListeners(ls)
	s.releaseMoved(moved)
	s.log.Info("wsloop: handed off", "moved", res.Moved, "stayed", res.Stayed, "pause", res.Pause, "duration", res.Duration)

	// What stayed is served until it closes, or the drain timeout.
	res.Drained = s.drainStayed(ctx, o.DrainTimeout)
	return res, nil
}

// handedListener is a listening socket on its way to the successor.
type handedListener struct {
	name string
	ln   net.Listener
	own  bool // the server's own
	fd   int
}

// handOffListeners lists the listeners to hand over and checks that each
// can go.
func (s *Server) handOffListeners(extra map[string]net.Listener) ([]handedListener, error) {
	var ls []handedListener
	s.mu.Lock()
	own := s.ln
	s.mu.Unlock()
	if own != nil {
		ls = append(ls, handedListener{ln: own, own: true})
	}
	for name, ln := range extra {
		if name == "" {
			return nil, errors.New(`wsloop: HandOff: the listener name "" is the server's own`)
		}
		ls = append(ls, handedListener{name: name, ln: ln})
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].name < ls[j].name })
	if len(ls) > handoff.MaxFDs {
		return nil, fmt.Errorf("wsloop: HandOff: %d listeners, at most %d", len(ls), handoff.MaxFDs)
	}
	for i := range ls {
		l := &ls[i]
		inner := unwrapListener(l.ln)
		sc, ok := inner.(syscall.Conn)
		switch inner.(type) {
		case *net.TCPListener, *net.UnixListener:
		default:
			ok = false
		}
		if _, dl := l.ln.(deadlineListener); !ok || !dl {
			return nil, fmt.Errorf("wsloop: HandOff: listener %q is a %T: only *net.TCPListener and *net.UnixListener can be handed over", l.name, l.ln)
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return nil, fmt.Errorf("wsloop: HandOff: listener %q: %w", l.name, err)
		}
		// The descriptor stays valid while the listener is open, which
		// it is until the commit.
		if err := rc.Control(func(fd uintptr) { l.fd = int(fd) }); err != nil {
			return nil, fmt.Errorf("wsloop: HandOff: listener %q: %w", l.name, err)
		}
	}
	return ls, nil
}

func listenerRecords(ls []handedListener) []listenerRecord {
	out := make([]listenerRecord, len(ls))
	for i, l := range ls {
		out[i] = listenerRecord{name: l.name, network: l.ln.Addr().Network(), addr: l.ln.Addr().String()}
	}
	return out
}

func listenerFDs(ls []handedListener) []int {
	out := make([]int, len(ls))
	for i, l := range ls {
		out[i] = l.fd
	}
	return out
}

// deadlineListener is what both listener types offer to unblock an Accept.
type deadlineListener interface{ SetDeadline(time.Time) error }

// pauseListeners stops accepting on every handed listener without closing
// it: the successor accepts from the same queue now, and this process
// keeps its copy until the commit, in case the transfer is called off.
func (s *Server) pauseListeners(ls []handedListener) {
	for _, l := range ls {
		if l.own {
			s.gate.hold()
		}
		_ = l.ln.(deadlineListener).SetDeadline(time.Unix(1, 0)) // a blocked Accept returns now
	}
}

// resumeListeners accepts again after a transfer was called off.
func (s *Server) resumeListeners(ls []handedListener) {
	for _, l := range ls {
		_ = l.ln.(deadlineListener).SetDeadline(time.Time{})
		if l.own {
			s.gate.release(false)
		}
	}
}

// releaseListeners lets the listeners go after the commit. The server's
// accept loops end and its listener is closed; the application's stay
// paused until it closes them. A Unix listener's socket file is the
// successor's: nobody here unlinks it.
func (s *Server) releaseListeners(ls []handedListener) {
	for _, l := range ls {
		if ul, ok := unwrapListener(l.ln).(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false)
		}
		if l.own {
			s.gate.release(true)
			l.ln.Close()
		}
	}
}

// callState runs HandOffOptions.State; a panic is an error.
func (s *Server) callState(f func() ([]byte, error)) (st []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			if s.opts.CrashOnPanic {
				panic(r)
			}
			err = fmt.Errorf("wsloop: HandOffOptions.State panicked: %v", r)
		}
	}()
	return f()
}

// onLoops runs fn on every loop in loops, all at once, and waits until
// each has.
func onLoops(loops []*loop, fn func(lp *loop)) {
	var wg sync.WaitGroup
	for _, lp := range loops {
		wg.Add(1)
		err := lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			defer wg.Done()
			fn(lp)
			return nil
		}))
		if err != nil {
			wg.Done() // the engine is stopping: that loop has nothing left
		}
	}
	wg.Wait()
}

// moveConns takes every connection that can move off its loop and sends
// it to the successor. It returns the connections taken (all of them,
// sent or not: on an error the caller takes them back) and when the first
// was taken.
func (s *Server) moveConns(ctx context.Context, g *handoff.Giver, o *HandOffOptions, res *HandOffResult) ([]*moveRec, time.Time, error) {
	loops := s.loopList()
	stays := make([]map[string]int, len(loops))
	for i := range stays {
		stays[i] = map[string]int{}
	}
	defer func() {
		for _, st := range stays {
			for k, v := range st {
				res.Stayed[k] += v
			}
		}
	}()
	// 1. Mark, everywhere, before anything leaves.
	onLoops(loops, func(lp *loop) { lp.markMoving(stays[lp.idx]) })
	if s.testHookMarked != nil {
		s.testHookMarked()
	}

	deadline := s.clock.Now().Add(o.MoveTimeout)
	// 2. Wait until every marked connection has finished the message it
	// was receiving, on every loop, before any leaves: the handler's
	// answer to such a message (a broadcast to the room) may go to a
	// connection of another loop, and must reach it here, before it
	// leaves with what it has queued, not after. Marked connections start
	// no new message, so once all are at a boundary, they stay there.
	for {
		var busy atomic.Bool
		onLoops(loops, func(lp *loop) {
			for _, wc := range lp.moving {
				if wc.has(sMoving) && wc.phase() == phaseOpen && wc.dec.InMessage() {
					busy.Store(true)
					return
				}
			}
		})
		if !busy.Load() || !s.clock.Now().Before(deadline) || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(2 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}

	// 3. Detach, again and again, and send as they come. A loop whose
	// broadcast queue holds a write for a connection keeps it until the
	// write is applied (detachForMove).
	var all, batch []*moveRec
	var first time.Time
	size, batches, passes := 0, 0, 0
	send := func() error {
		if len(batch) == 0 {
			return nil
		}
		recs := make([]*connRecord, len(batch))
		fds := make([]int, len(batch))
		for i, m := range batch {
			recs[i], fds[i] = m.rec, m.fd
		}
		payload := appendBatch(make([]byte, 0, size), recs)
		batch, size = batch[:0], 0
		if err := g.SendBatch(ctx, payload, fds); err != nil {
			return err
		}
		batches++
		if s.testHookBatch != nil {
			s.testHookBatch(batches)
		}
		return nil
	}
	pending := loops
	var mu sync.Mutex
	for len(pending) > 0 {
		final := !s.clock.Now().Before(deadline) || ctx.Err() != nil
		var got []*moveRec
		var left []*loop
		onLoops(pending, func(lp *loop) {
			recs, n := lp.detachReady(o.MaxBuffered, stays[lp.idx], final)
			mu.Lock()
			got = append(got, recs...)
			if n > 0 {
				left = append(left, lp)
			}
			mu.Unlock()
		})
		if len(got) > 0 && first.IsZero() {
			first = time.Now()
		}
		passes++
		if s.testHookPass != nil {
			s.testHookPass(passes)
		}
		for _, m := range got {
			all = append(all, m)
			batch = append(batch, m)
			size += recordSize(m.rec)
			if len(batch) == handoff.MaxFDs || size > handoff.MaxPayload/2 {
				if err := send(); err != nil {
					s.stopMoving(loops)
					return all, first, err
				}
			}
		}
		pending = left
		if len(pending) > 0 {
			// Some connections are in the middle of a message or of
			// a write: look again shortly.
			if err := send(); err != nil {
				s.stopMoving(loops)
				return all, first, err
			}
			t := time.NewTimer(2 * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
	}
	if err := send(); err != nil {
		return all, first, err
	}
	if err := g.Flush(ctx); err != nil {
		return all, first, err
	}
	return all, first, ctx.Err()
}

// stopMoving unmarks every connection still waiting for its boundary.
func (s *Server) stopMoving(loops []*loop) {
	onLoops(loops, func(lp *loop) {
		for i, wc := range lp.moving {
			wc.stopMoving()
			lp.moving[i] = nil
		}
		lp.moving = lp.moving[:0]
	})
}

// markMoving marks the loop's connections that can move, and counts the
// others by reason. Loop only.
func (lp *loop) markMoving(stayed map[string]int) {
	lp.moving = lp.moving[:0]
	lp.wheel.each(func(wc *wsConn) {
		if why := wc.immovable(); why != "" {
			stayed[why]++
			return
		}
		wc.set(sMoving, true)
		lp.moving = append(lp.moving, wc)
	})
}

// immovable says why a connection cannot move, or "" if it can.
func (wc *wsConn) immovable() string {
	switch wc.phase() {
	case phaseOpen:
	case phaseHandshake, phaseTLS:
		return "handshake"
	default:
		return "closing"
	}
	if x := wc.x.Load(); x != nil && x.tls != nil {
		return "tls"
	}
	if wc.has(sBridged) {
		return "bridged"
	}
	if _, ok := wc.handler().(handler.Mover); !ok {
		return "not a mover"
	}
	return ""
}

// detachReady takes the loop's marked connections that are at a message
// boundary off the loop. It returns them and how many still wait; with
// final set none waits: those not ready stay here. Loop only.
func (lp *loop) detachReady(maxBuffered int, stayed map[string]int, final bool) ([]*moveRec, int) {
	var out []*moveRec
	keep := lp.moving[:0]
	for _, wc := range lp.moving {
		if !wc.has(sMoving) {
			continue
		}
		if wc.phase() != phaseOpen {
			wc.set(sMoving, false)
			stayed["closing"]++
			continue
		}
		m, why := wc.detachForMove(maxBuffered)
		switch {
		case m != nil:
			out = append(out, m)
		case why != "":
			stayed[why]++
			wc.stopMoving()
		case final:
			stayed["bounds"]++
			wc.stopMoving()
		default:
			keep = append(keep, wc)
		}
	}
	clear(lp.moving[len(keep):])
	lp.moving = keep
	return out, len(keep)
}

// stopMoving lets a marked connection stay: decoding resumes with what
// waited behind the boundary. Loop only.
func (wc *wsConn) stopMoving() {
	if !wc.has(sMoving) {
		return
	}
	wc.set(sMoving, false)
	if wc.phase() == phaseOpen && wc.inputLeft() {
		if wc.dispatch() == gnet.Close {
			wc.closeNow()
		}
	}
}

// detachForMove takes the connection off its loop if it is at a message
// boundary both ways. It returns nil and "" when it is not yet, nil and a
// reason when it cannot move at all. Loop only.
func (wc *wsConn) detachForMove(maxBuffered int) (*moveRec, string) {
	lp := wc.lp
	s := lp.srv
	if wc.dec.InMessage() || wc.c.OutboundBuffered() > 0 || lp.fence.Load() != 0 || wc.outboundOpen() {
		// Not at a boundary yet: a message arrives or leaves, gnet still
		// writes, or broadcasts and the writes behind them wait on the
		// loop (they would be lost with the connection).
		return nil, ""
	}
	if n := wc.bufferedForMove(); n > maxBuffered {
		return nil, "too large"
	}
	fd, err := unix.FcntlInt(uintptr(wc.c.Fd()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, "descriptor"
	}
	app, err := s.callMove(wc)
	switch {
	case err != nil:
		unix.Close(fd)
		return nil, "application"
	case wc.phase() != phaseOpen:
		unix.Close(fd)
		return nil, "closing"
	case len(app)+wc.bufferedForMove() > maxRecordBytes:
		unix.Close(fd)
		return nil, "too large"
	}
	r := &connRecord{id: wc.id(), app: app, path: "/"}
	buf, _ := wc.in()
	if len(buf) > 0 {
		r.in = append([]byte(nil), buf...)
	}
	x := wc.x.Load() // wc.id allocated it
	in := wc.getInfo()
	r.path, r.query, r.sub = in.path, in.rawQuery, in.subprotocol
	r.maxMsg = x.maxMsg
	// Writers stop here: a compressing writer holds cd.mu from
	// compression to queueing, so the window and the queue agree.
	cd := x.defl
	takeover := cd != nil && (cd.serverTakeover || cd.clientTakeover)
	if takeover {
		cd.mu.Lock()
		cd.closed = true
	}
	wc.mu.Lock()
	// stay undoes the above: the connection is not taken, now (why "") or
	// for good.
	stay := func(why string) (*moveRec, string) {
		wc.mu.Unlock()
		if takeover {
			cd.closed = false
			cd.mu.Unlock()
		}
		unix.Close(fd)
		return nil, why
	}
	if wc.outboundOpenLocked() || lp.fence.Load() != 0 {
		// A NextWriter began, or a write was deferred behind a
		// broadcast, since the check above: its message would leave
		// half in the moved output, or not at all. Not yet, then.
		return stay("")
	}
	// With no message open nothing is held (write.go's invariant), so the
	// pending buffer is all of wsloop's output; should that ever not hold,
	// the connection stays rather than lose what is held.
	if h := wc.holdLocked(); h != nil && (h.buf != nil || len(h.segs) > 0) {
		return stay("held output")
	}
	wc.setPhase(phaseMoved)
	if wc.out != nil && len(wc.out.b) > 0 {
		r.out = append([]byte(nil), wc.out.b...)
	}
	wc.mu.Unlock()
	if cd != nil {
		r.flags |= recDeflate
		if takeover {
			if cd.serverTakeover {
				r.flags |= recServerTakeover
				r.sent = append([]byte(nil), cd.sent.Bytes()...)
			}
			cd.mu.Unlock()
			if cd.clientTakeover {
				r.flags |= recClientTakeover
				r.hist = append([]byte(nil), cd.hist.Bytes()...)
			}
			r.deflLimit = uint32(cd.limit)
		} else {
			for i := range sharedDeflate {
				if &sharedDeflate[i] == cd {
					r.deflBits = uint8(i)
				}
			}
		}
	}
	st := wc.st.Load()
	if st&sClient != 0 {
		r.flags |= recClient
	}
	if st&sProbeSent != 0 {
		r.flags |= recProbeSent
	}
	if st&sPongWait != 0 {
		r.flags |= recPongWait
	}
	if st&sPauseWanted != 0 {
		r.flags |= recPaused // the new side pauses it before reading anything
	}
	// The addresses the application saw: a client's that a PROXY
	// protocol header named may not be the socket's, which is all the
	// new process would see.
	r.remote, r.local = tcpAddrString(wc.peerAddr()), tcpAddrString(wc.localAddr())
	r.sinceRead = s.ticksToMillis(lp.now - wc.lastRead)
	r.sincePing = s.ticksToMillis(lp.now - wc.pingOrCloseAt)
	if wc.acceptOrMsgAt != 0 {
		r.msgAge = max(1, s.ticksToMillis(lp.now-wc.acceptOrMsgAt))
	}
	// gnet lets go of its descriptor: no shutdown(2), no close frame;
	// closed sees phaseMoved and runs detached, not OnClose. Our
	// duplicate keeps the socket open.
	_ = lp.el.Close(wc.c)
	return &moveRec{wc: wc, fd: fd, rec: r}, ""
}

// bufferedForMove is the input and output the connection would carry.
func (wc *wsConn) bufferedForMove() int {
	n := wc.c.InboundBuffered()
	if x := wc.x.Load(); x != nil {
		n += len(x.pending)
	}
	wc.mu.Lock()
	n += wc.outLen()
	wc.mu.Unlock()
	return n
}

// ticksToMillis converts a number of wheel ticks to milliseconds.
func (s *Server) ticksToMillis(t uint32) uint32 {
	return uint32(min(time.Duration(t)*s.tick/time.Millisecond, 1<<32-1))
}

// millisToTicks converts milliseconds to wheel ticks, rounding down.
func (s *Server) millisToTicks(ms uint32) uint32 {
	return uint32(time.Duration(ms) * time.Millisecond / s.tick)
}

// detached runs when gnet has let go of a connection a handoff took: the
// connection is off the wheel and its input is in its record. Loop only.
func (wc *wsConn) detached() {
	wc.lp.wheel.drop(wc)
	if x := wc.x.Load(); x != nil {
		x.pending = nil
	}
}

// callMove asks the connection's Mover for its state; a panic is an error.
func (s *Server) callMove(wc *wsConn) (state []byte, err error) {
	err = errPanicked // unless it returns
	defer s.catch(wc, "OnMove", false)
	return wc.handler().(handler.Mover).OnMove(wc)
}

func (s *Server) callMoved(wc *wsConn) {
	defer s.catch(wc, "OnMoved", false)
	if m, ok := wc.handler().(handler.Mover); ok {
		m.OnMoved(wc)
	}
}

// takeBack puts every connection taken for a called-off transfer back on
// its own loop, with its input and output, as it was.
func (s *Server) takeBack(moved []*moveRec) {
	s.stopMoving(s.loopList())
	work := make(chan *moveRec)
	var wg sync.WaitGroup
	for i := 0; i < min(8, len(moved)); i++ {
		wg.Add(1)
		go func() { // a few goroutines for the whole take-back, never one per connection
			defer wg.Done()
			for m := range work {
				if err := s.retake(m); err != nil {
					s.log.Warn("wsloop: a connection could not be taken back after a called-off handoff; it is closed", "err", err)
				}
			}
		}()
	}
	for _, m := range moved {
		work <- m
	}
	close(work)
	wg.Wait()
}

// retake registers a taken-back socket with the connection's own loop
// (so that the connection keeps its loop, which other goroutines read
// without a lock); the loop runs retaken.
func (s *Server) retake(m *moveRec) error {
	c, err := fileConn(m.fd) // takes m.fd over
	m.fd = -1
	if err == nil {
		var ch <-chan gnet.RegisteredResult
		ch, err = m.wc.lp.el.Enroll(gnet.NewContext(context.Background(), &adoption{retake: m}), c)
		if err == nil {
			r := <-ch
			err = r.Err
		} else {
			c.Close()
		}
	}
	if err != nil {
		// The socket is gone for good: end the connection as a
		// close does, on its loop.
		_ = m.wc.lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			m.wc.lostInMove(err)
			return nil
		}))
	}
	return err
}

// retaken runs on the loop when a taken-back socket is registered again:
// the connection is as it was when it was taken, input and output
// included. Loop only.
func (m *moveRec) retaken(c gnet.Conn) {
	wc := m.wc
	lp := wc.lp
	wc.mu.Lock()
	wc.c = c
	wc.mu.Unlock()
	c.SetContext(wc)
	if !lp.trimGnetConn(c, wc.has(sClient)) {
		c.SetSafeContext(nil)
	}
	lp.wheel.add(wc)
	if len(m.rec.in) > 0 {
		wc.extra().pending = m.rec.in
	}
	if cd := wc.deflate(); cd != nil && (cd.serverTakeover || cd.clientTakeover) {
		cd.mu.Lock()
		cd.closed = false
		cd.mu.Unlock()
	}
	wc.set(sMoving, false)
	wc.mu.Lock()
	wc.setPhase(phaseOpen)
	wc.mu.Unlock()
	wc.armTimer()
	wc.flush() // what was queued before the move, and meanwhile
	if wc.phase() == phaseOpen && wc.inputLeft() {
		if wc.dispatch() == gnet.Close {
			wc.closeNow()
		}
	}
}

// lostInMove ends a connection whose socket could not be taken back: as a
// close would, OnClose included. Loop only.
func (wc *wsConn) lostInMove(err error) {
	wc.mu.Lock()
	wc.setPhase(phaseClosed)
	wc.mu.Unlock()
	wc.setCloseErr(err)
	wc.lp.wheel.add(wc) // closed drops it
	wc.onClosed(err)
}

// releaseMoved lets go of the connections the successor has now: their
// duplicates are closed, and on each one's loop OnMoved runs in place of
// OnClose.
func (s *Server) releaseMoved(moved []*moveRec) {
	byLoop := map[*loop][]*wsConn{}
	for _, m := range moved {
		unix.Close(m.fd)
		m.fd = -1
		byLoop[m.wc.lp] = append(byLoop[m.wc.lp], m.wc)
	}
	loops := make([]*loop, 0, len(byLoop))
	for lp := range byLoop {
		loops = append(loops, lp)
	}
	onLoops(loops, func(lp *loop) {
		for _, wc := range byLoop[lp] {
			wc.movedAway()
		}
	})
}

// movedAway ends a connection that the successor serves now. Loop only.
func (wc *wsConn) movedAway() {
	s := wc.lp.srv
	wc.mu.Lock()
	if wc.out != nil {
		putOut(wc.out)
		wc.out = nil
	}
	wc.setPhase(phaseClosed)
	wc.mu.Unlock()
	if x := wc.x.Load(); x != nil {
		s.releaseAssembly(x)
		s.releaseHeader(x)
		x.pending = nil
	}
	s.closeDeflate(wc)
	s.stats.open.Add(-1)
	s.stats.movedOut.Add(1)
	s.callMoved(wc)
	s.connGone()
}

// drainStayed serves what stayed until it closes or timeout passes, then
// shuts the server down (1001 to whoever is left). It returns how many
// connections got the 1001.
func (s *Server) drainStayed(ctx context.Context, timeout time.Duration) int64 {
	if timeout > 0 && s.stats.conns.Load() > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
	wait:
		for s.stats.conns.Load() > 0 {
			select {
			case <-s.emptied:
			case <-t.C:
				break wait
			case <-ctx.Done():
				break wait
			case <-s.stopReq:
				break wait
			}
		}
	}
	left := s.stats.conns.Load()
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.CloseTimeout)
	defer cancel()
	_ = s.Shutdown(sctx)
	return left
}

// --- the new process ------------------------------------------------------

// Takeover is the new process's side of a deploy: the listeners and
// connections of the process it replaces. [TakeOver] returns it once the
// listeners are here; [Takeover.Restore] brings the connections onto a
// running server.
type Takeover struct {
	t         *handoff.Taker
	opts      TakeOverOptions
	log       *slog.Logger
	listeners map[string]net.Listener
	peer      int
	done      bool
	ready     chan struct{} // closed once Restore is over: the listeners accept
	readyOnce sync.Once
}

// release lets the listeners accept.
func (tk *Takeover) release() { tk.readyOnce.Do(func() { close(tk.ready) }) }

// heldListener is a listener taken over. Its Accept waits until Restore
// is over, so that a client who connects during the deploy finds the
// application's state and the moved connections in place; meanwhile its
// connection waits in the listen queue, which was never closed.
type heldListener struct {
	net.Listener
	ready     <-chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

// Accept waits until the takeover is over, then accepts.
func (l *heldListener) Accept() (net.Conn, error) {
	select {
	case <-l.ready:
	case <-l.closed:
		return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
	}
	return l.Listener.Accept()
}

// Close closes the listener; a waiting Accept returns.
func (l *heldListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// SyscallConn returns the listening socket's raw connection.
func (l *heldListener) SyscallConn() (syscall.RawConn, error) {
	return l.Listener.(syscall.Conn).SyscallConn()
}

// SetDeadline sets the listening socket's accept deadline.
func (l *heldListener) SetDeadline(t time.Time) error {
	return l.Listener.(deadlineListener).SetDeadline(t)
}

// Unwrap returns the *net.TCPListener or *net.UnixListener: a later
// HandOff passes it on.
func (l *heldListener) Unwrap() net.Listener { return l.Listener }

// unwrapListener returns the listener under wrappers with an Unwrap method.
func unwrapListener(ln net.Listener) net.Listener {
	for {
		u, ok := ln.(interface{ Unwrap() net.Listener })
		if !ok {
			return ln
		}
		ln = u.Unwrap()
	}
}

// TakeOver connects to the handoff socket in dir (waiting, until ctx is
// done, for the old process to call HandOff), checks the old process's
// credentials and state format, and takes its listeners: from the moment
// TakeOver returns the old process accepts nothing more, and this one
// may accept on them (serve [Takeover.Listener] at once) while the
// connections follow with Restore. On an error nothing was taken and the
// old process goes on serving.
func TakeOver(ctx context.Context, dir string, opts *TakeOverOptions) (*Takeover, error) {
	if opts == nil {
		opts = &TakeOverOptions{}
	}
	tk := &Takeover{opts: *opts, log: opts.Logger, listeners: map[string]net.Listener{}, ready: make(chan struct{})}
	if tk.log == nil {
		tk.log = slog.Default()
	}
	t, err := handoff.Connect(ctx, dir, handoff.Config{Version: handoffStateVersion, AllowUIDs: opts.AllowUIDs, Logger: tk.log})
	if err != nil {
		return nil, fmt.Errorf("wsloop: TakeOver: %w", err)
	}
	tk.t, tk.peer = t, t.Peer().PID
	var recs []listenerRecord
	m, err := t.Next(ctx, func(m *handoff.Message) error {
		if m.Kind != handoff.Listeners {
			return fmt.Errorf("expected the listeners, got message kind %d", m.Kind)
		}
		var err error
		recs, err = decodeListeners(m.Payload, len(m.FDs))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("wsloop: TakeOver: %w", err)
	}
	for i, fd := range m.FDs {
		f := os.NewFile(uintptr(fd), "listener")
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			for _, ln := range tk.listeners {
				ln.Close()
			}
			for _, fd := range m.FDs[i+1:] {
				unix.Close(fd)
			}
			t.Abandon()
			return nil, fmt.Errorf("wsloop: TakeOver: listener %q: %w", recs[i].name, err)
		}
		if ul, ok := ln.(*net.UnixListener); ok {
			// The socket file is this process's now: its Close
			// removes it, as for a listener it bound itself.
			ul.SetUnlinkOnClose(true)
		}
		tk.listeners[recs[i].name] = &heldListener{Listener: ln, ready: tk.ready, closed: make(chan struct{})}
	}
	tk.log.Info("wsloop: taking over", "from_pid", tk.peer, "listeners", len(tk.listeners))
	return tk, nil
}

// Listener returns the listener the old process handed over under name
// ("" for its server's own), or nil if it sent none by that name. It is
// this process's to serve (as a Server's Options.Listener, or with an
// http.Server's Serve) and to close. Its Accept waits until Restore is over (or Close), so that a
// client who connects meanwhile finds the application's state and the
// moved connections in place: its connection waits in the listen queue,
// never refused.
func (tk *Takeover) Listener(name string) net.Listener {
	if ln, ok := tk.listeners[name]; ok {
		return ln
	}
	return nil
}

// Predecessor returns the process id of the old process, as the kernel
// reports it (0 where the platform does not say).
func (tk *Takeover) Predecessor() int { return tk.peer }

// Restore receives the old process's connections and serves them on srv,
// which must be started (with Takeover.Listener as Options.Listener, or
// not). It waits for the old process's commit, restores the application's global state
// (TakeOverOptions.State), then every connection: each gets its own
// handler and Context back from srv's handler.Restorer (OnOpen when it has
// none), and only once every one is in place, on every loop at once, are
// they read: the messages their peers sent meanwhile are delivered then.
//
// If the old process calls the transfer off, or ctx ends first, nothing is
// restored and the old process serves everything again. If the old
// process dies during the transfer, what it had given is restored
// (RestoreResult.Partial). Restore waits for the event loops: it must not
// be called from a handler callback.
func (tk *Takeover) Restore(ctx context.Context, srv *Server) (*RestoreResult, error) {
	if tk.done {
		return nil, errors.New("wsloop: Restore: called already")
	}
	defer tk.release()
	if !srv.serving() {
		tk.Close()
		return nil, fmt.Errorf("wsloop: Restore: %w", ErrNotServing)
	}
	tk.done = true
	var recs []*connRecord
	var global []byte
	haveGlobal, partial := false, false
	// Each socket becomes a net.Conn while the rest arrive: that reads
	// nothing from it (it is only registered with Go's poller), and it is
	// what gnet adopts after the commit.
	conv := newConverter()
recv:
	for {
		var batch []*connRecord
		m, err := tk.t.Next(ctx, func(m *handoff.Message) error {
			if m.Kind != handoff.Batch {
				return nil
			}
			var err error
			batch, err = decodeBatch(m.Payload, len(m.FDs))
			return err
		})
		switch {
		case errors.Is(err, handoff.ErrGiverGone):
			if m != nil && m.Kind == handoff.Batch {
				recs = append(recs, batch...) // it arrived whole
				conv.add(m.FDs)
			}
			partial = true
			tk.log.Warn("wsloop: the old process died during the transfer; restoring what it had given", "conns", len(recs), "err", err)
			break recv
		case err != nil:
			conv.closeAll()
			return nil, fmt.Errorf("wsloop: Restore: %w", err)
		}
		switch m.Kind {
		case handoff.Batch:
			recs = append(recs, batch...)
			conv.add(m.FDs)
		case handoff.State:
			global, haveGlobal = m.Payload, true
		case handoff.Commit:
			break recv
		default:
			for _, fd := range m.FDs {
				unix.Close(fd)
			}
		}
	}
	start := time.Now()
	if tk.opts.State != nil {
		if err := callGlobalRestore(tk.opts.State, global, haveGlobal); err != nil {
			srv.log.Warn("wsloop: TakeOverOptions.State failed; restoring the connections anyway", "err", err)
		}
	}
	res := srv.restoreConns(recs, conv.wait())
	res.Partial = partial
	res.Duration = time.Since(start)
	srv.log.Info("wsloop: took over", "from_pid", tk.peer, "restored", res.Restored, "refused", res.Refused, "partial", partial, "duration", res.Duration)
	return res, nil
}

// Close gives the transfer up before Restore: the old process takes its
// connections back and accepts again. The listeners stay open: close them
// (or shut down the server serving them) too when this process will not
// serve after all.
func (tk *Takeover) Close() {
	if tk.t != nil && !tk.done {
		tk.t.Abandon()
	}
	tk.done = true
	tk.release()
}

func callGlobalRestore(f func([]byte, bool) error, st []byte, ok bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f(st, ok)
}

// converter turns received sockets into net.Conns on a few goroutines.
type converter struct {
	work  chan convJob
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn // by index; nil where the conversion failed
	n     int
}

type convJob struct {
	i  int
	fd int
}

func newConverter() *converter {
	c := &converter{work: make(chan convJob, handoff.MaxFDs)}
	for i := 0; i < 4; i++ {
		c.wg.Add(1)
		go func() { // a few goroutines for the whole transfer, never one per connection
			defer c.wg.Done()
			for j := range c.work {
				nc, err := fileConn(j.fd)
				c.mu.Lock()
				if err == nil {
					c.conns[j.i] = nc
				}
				c.mu.Unlock()
			}
		}()
	}
	return c
}

// add converts the descriptors of one batch, in order after the others.
func (c *converter) add(fds []int) {
	c.mu.Lock()
	base := c.n
	c.n += len(fds)
	c.conns = append(c.conns, make([]net.Conn, len(fds))...)
	c.mu.Unlock()
	for i, fd := range fds {
		c.work <- convJob{i: base + i, fd: fd}
	}
}

// wait returns every connection once converted.
func (c *converter) wait() []net.Conn {
	close(c.work)
	c.wg.Wait()
	return c.conns
}

// closeAll closes every socket received, unread.
func (c *converter) closeAll() {
	for _, nc := range c.wait() {
		if nc != nil {
			nc.Close()
		}
	}
}

// restoreConns puts moved connections on the server's loops, held, then
// resumes them all at once.
func (s *Server) restoreConns(recs []*connRecord, conns []net.Conn) *RestoreResult {
	res := &RestoreResult{}
	var mu sync.Mutex
	work := make(chan int)
	var wg sync.WaitGroup
	// Each adoption waits for its loop to register the socket: many at
	// once let a loop register a batch per wake-up.
	for i := 0; i < min(32, len(recs)); i++ {
		wg.Add(1)
		go func() { // a few goroutines for the whole restore, never one per connection
			defer wg.Done()
			for i := range work {
				ok := s.restoreOne(recs[i], conns[i])
				mu.Lock()
				if ok {
					res.Restored++
				} else {
					res.Refused++
				}
				mu.Unlock()
			}
		}()
	}
	for i := range recs {
		work <- i
	}
	close(work)
	wg.Wait()
	// Every connection is in place: read them, everywhere at once.
	onLoops(s.loopList(), func(lp *loop) { lp.resumeHeld() })
	return res
}

// restoreOne registers one moved socket with a loop, which runs
// restored. It reports whether the connection was restored (not closed
// with 1012).
func (s *Server) restoreOne(r *connRecord, c net.Conn) bool {
	if c == nil {
		s.log.Warn("wsloop: a moved connection could not be adopted: no descriptor left to duplicate it")
		return false
	}
	s.stats.conns.Add(1)
	a := &adoption{restore: r}
	if err := s.adopt(c, a); err != nil {
		s.connGone()
		s.log.Warn("wsloop: a moved connection could not be handed to an event loop", "err", err)
		return false
	}
	return a.wc != nil && a.wc.has(sHandlerRan)
}

// restored opens a connection moved here, held: nothing is decoded until
// resumeHeld, which runs once every moved connection is in place. Loop
// only.
func (wc *wsConn) restored(a *adoption) {
	lp := wc.lp
	s := lp.srv
	r := a.restore
	a.wc = wc
	x := wc.extra()
	wc.mu.Lock()
	x.id = r.id
	wc.mu.Unlock()
	if r.flags&recClient != 0 {
		wc.set(sClient, true)
		wc.dec.Client = true // RFC 6455 §5.1: a masked server frame fails the connection
	}
	x.maxMsg = r.maxMsg
	if len(r.in) > 0 {
		x.pending = r.in
	}
	if len(r.out) > 0 {
		wc.out = growOut(nil, len(r.out))
		wc.out.b = append(wc.out.b, r.out...)
	}
	var info *connInfo
	if r.path != "/" || r.query != "" || r.sub != "" {
		info = &connInfo{path: r.path, rawQuery: r.query, subprotocol: r.sub}
	}
	wc.lastRead = lp.now - s.millisToTicks(r.sinceRead)
	wc.pingOrCloseAt = lp.now - s.millisToTicks(r.sincePing)
	if r.msgAge > 0 {
		wc.acceptOrMsgAt = lp.now - s.millisToTicks(r.msgAge)
		if wc.acceptOrMsgAt == 0 {
			wc.acceptOrMsgAt-- // 0 means none
		}
	}
	wc.set(sProbeSent, r.flags&recProbeSent != 0)
	wc.set(sPongWait, r.flags&recPongWait != 0)
	if r.flags&recPaused != 0 {
		wc.set(sPauseWanted, true) // applied before anything is read (readpause.go)
	}
	if ra, la := parseTCPAddr(r.remote), parseTCPAddr(r.local); ra != nil && !sameAddr(ra, wc.c.RemoteAddr()) {
		// Not the socket's peer: the client a PROXY header named.
		if info == nil {
			info = &connInfo{path: r.path, rawQuery: r.query, subprotocol: r.sub}
		}
		info.remote, info.local = ra, la
	}
	wc.set(sHeld, true)
	wc.mu.Lock()
	wc.setPhase(phaseOpen)
	wc.setInfoLocked(info)
	wc.mu.Unlock()
	lp.wheel.disarm(wc)
	s.countMoved(wc) // released when it closes, refused below included

	refused := func(why string) {
		s.log.Warn("wsloop: a moved connection could not be restored; closing it with 1012", "why", why)
		wc.set(sHeld, false)
		wc.fail(codec.CloseServiceRestart, "service restart", &handler.CloseError{Code: codec.CloseServiceRestart, Reason: "service restart"})
	}
	if r.flags&recDeflate != 0 {
		cd := s.restoreDeflate(r)
		if cd == nil {
			refused("no room in the deflate budget for its compression context")
			return
		}
		wc.applyDeflate(cd)
	}
	wc.beginCallbacks()
	ok := true
	if rs, isRestorer := s.h.(handler.Restorer); isRestorer {
		h, ctx, err := s.callRestore(wc, rs, r.app)
		if err != nil || wc.phase() != phaseOpen {
			ok = false
		} else {
			if h != nil {
				x.h = h
				x.stream, _ = h.(handler.StreamHandler)
			}
			wc.SetContext(ctx)
			wc.set(sHandlerRan, true)
			s.stats.open.Add(1)
		}
	} else {
		wc.set(sHandlerRan, true)
		s.stats.open.Add(1)
		s.callOpen(wc)
	}
	if !ok {
		wc.endCallbacks()
		refused("OnRestore failed")
		return
	}
	s.stats.movedIn.Add(1)
	wc.armTimer()
	wc.endCallbacks() // the moved output first, then what OnRestore wrote
	if wc.phase() == phaseOpen {
		lp.held = append(lp.held, wc)
	}
}

// callRestore runs the server's Restorer; a panic is an error.
func (s *Server) callRestore(wc *wsConn, rs handler.Restorer, state []byte) (h handler.Handler, ctx any, err error) {
	err = errPanicked // unless it returns
	defer s.catch(wc, "OnRestore", false)
	return rs.OnRestore(wc, state)
}

// restoreDeflate gives a moved connection its compression state back,
// reserving its context-takeover windows against this server's budget. It
// returns nil when the budget has no room.
func (s *Server) restoreDeflate(r *connRecord) *connDeflate {
	if r.flags&(recServerTakeover|recClientTakeover) == 0 {
		return &sharedDeflate[r.deflBits]
	}
	o := &s.opts.Deflate
	var cost int64
	if r.flags&recServerTakeover != 0 {
		cost += o.windowCost()
	}
	if r.flags&recClientTakeover != 0 {
		cost += deflateHistoryCost
	}
	if !s.defl.reserve(cost, o.ContextTakeoverBudget) {
		return nil
	}
	s.defl.takeover.Add(1)
	cd := &connDeflate{
		limit:          int(r.deflLimit),
		serverTakeover: r.flags&recServerTakeover != 0,
		clientTakeover: r.flags&recClientTakeover != 0,
		reserved:       cost,
		sent:           codec.DeflateHistory{Size: o.window()},
	}
	// The compressor may use any suffix of what the client holds (RFC
	// 7692 §7.1.2.1); the client's own window must be whole.
	if len(r.sent) > 0 {
		cd.sent.Add(r.sent)
	}
	if len(r.hist) > 0 {
		cd.hist.Add(r.hist)
	}
	return cd
}

// resumeHeld reads the loop's moved connections: what their peers sent
// during the move is delivered now. Loop only.
func (lp *loop) resumeHeld() {
	for i, wc := range lp.held {
		lp.held[i] = nil
		wc.set(sHeld, false)
		if wc.phase() == phaseOpen && wc.inputLeft() {
			if wc.dispatch() == gnet.Close {
				wc.closeNow()
			}
		}
	}
	lp.held = lp.held[:0]
}

// tcpAddrString returns a TCP address as "ip:port", "" for anything else.
func tcpAddrString(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	}
	return ""
}

// parseTCPAddr parses what tcpAddrString wrote, nil for "".
func parseTCPAddr(s string) *net.TCPAddr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil
	}
	return net.TCPAddrFromAddrPort(ap)
}

// sameAddr reports whether a is the TCP address b.
func sameAddr(a *net.TCPAddr, b net.Addr) bool {
	tb, ok := b.(*net.TCPAddr)
	return ok && tcpAddrString(a) == tcpAddrString(tb)
}
