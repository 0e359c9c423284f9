// Package engine serves WebSocket connections from gnet event loops.
//
// A [Server] owns a set of gnet event loops, each serving many connections
// without a goroutine per connection, and its own accept loop, which takes
// connections from the listener only while the process has descriptors to
// spare and hands each socket to a loop. The bytes a loop reads are handed to
// the codec, which turns them into the handshake, data messages and control
// frames; the application sees them through a [handler.Handler]. Writes from
// any goroutine are queued per connection and flushed by the connection's
// loop with one system call per batch.
//
// Handler callbacks run on the event loops and must not block (see package
// handler). Timeouts, limits and the slow-consumer policy are in [Options];
// their defaults are safe for production.
//
// Where things are: server.go (this file) is the lifecycle; accept.go takes
// connections and keeps the descriptor budget; gnet.go adapts gnet's
// callbacks; handshake.go, read.go, write.go and close.go are the life of a
// connection in that order; timers.go holds the timer wheel and every
// timeout; budget.go bounds the memory held for inbound messages;
// broadcast.go, deflate.go, stats.go and recover.go are what their names say;
// dial.go is the client: connections this side opens with [Server.Dial],
// served by the same loops and machinery. Behind a load balancer, proxyproto.go
// reads the PROXY protocol header on the loops, proxylistener.go does it for
// a net/http server, and clients.go holds the per-client limits; handoff.go deploys without
// disconnecting: [Server.HandOff] gives the listener and live connections to
// the next process, which takes them with [TakeOver] (docs/deploy.md).
package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/engine/internal/tlsbuf"
	"github.com/wsloop/wsloop/handler"
)

// Server is a WebSocket server. Create it with [New] and start it with
// [Server.Start]; it serves until the context given to Start ends or
// [Server.Shutdown] is called, and [Server.Wait] says when it has stopped
// and why. Its methods are safe for
// concurrent use.
type Server struct {
	h      handler.Handler
	up     handler.Upgrader
	async  handler.AsyncUpgrader
	stream handler.StreamHandler
	opts   Options
	log    *slog.Logger
	clock  Clock
	start  time.Time
	tick   time.Duration

	mu       sync.Mutex
	loopsBy  map[gnet.EventLoop]*loop
	loops    []*loop
	cli      *gnet.Client // the event loops; a client engine, because wsloop accepts itself
	ln       net.Listener
	addr     net.Addr
	maxConns int

	stopReq   chan struct{} // closed to stop the event loops
	stopOnce  sync.Once
	done      chan struct{} // closed when the server has stopped; err is set before
	err       error         // why the server stopped: nil, or the listener's failure
	drained   chan struct{}
	drainOnce sync.Once
	draining  atomic.Bool
	started   atomic.Bool // Start ran (or Shutdown ran first, which stops the server for good)

	fdFreed      chan struct{} // a descriptor was released; wakes a paused accept loop
	acceptPaused atomic.Int32  // accept loops waiting in waitForDescriptor

	tlsConf    *tls.Config   // Options.TLSConfig with ALPN set, nil for ws://
	handshakes handshakePool // TLS handshake goroutines (tls.go)
	tlsOnce    sync.Once     // decides tlsk at the first wss connection (tls.go, tlsBridged)
	tlsk       *tlsbuf.Coupling

	inbound inboundBudget // memory held for undelivered inbound messages (budget.go)
	defl    serverDeflate // permessage-deflate budget and counters (deflate.go)
	stats   serverStats   // counters (stats.go)
	clients *clientTable  // per-client limits (clients.go); nil when none is set

	gate       acceptGate    // holds the accept loops while a handoff offers the listener (handoff.go)
	handingOff atomic.Bool   // a HandOff runs
	nextID     atomic.Uint64 // the last ConnID given out (handoff.go)
	emptied    chan struct{} // signalled when the last connection is gone

	testHookOpened func()    // called by opened, set only by tests (export_test.go)
	testHookMarked func()    // called by HandOff once every loop marked its connections, set only by tests
	testHookBatch  func(int) // called by HandOff after each batch it sent, with their count so far, set only by tests
	testHookPass   func(int) // called by HandOff after each pass of the loops over the connections waiting for their boundary, set only by tests
}

// New returns a server that will deliver the events of its connections to
// h, once started with [Server.Start]. If h also implements
// [handler.Upgrader] it sees every upgrade request; if it implements
// [handler.AsyncUpgrader] it decides them off the loop; if it implements
// [handler.StreamHandler] it receives messages in chunks. New only builds
// the server, so a handler can hold it (to Broadcast) before the first
// connection arrives.
func New(h handler.Handler, opts Options) *Server {
	s := &Server{
		h:       h,
		opts:    opts.withDefaults(),
		loopsBy: map[gnet.EventLoop]*loop{},
		stopReq: make(chan struct{}),
		done:    make(chan struct{}),
		drained: make(chan struct{}),
		fdFreed: make(chan struct{}, 1),
		emptied: make(chan struct{}, 1),
	}
	s.nextID.Store(randomIDBase())
	s.up, _ = h.(handler.Upgrader)
	s.async, _ = h.(handler.AsyncUpgrader)
	s.stream, _ = h.(handler.StreamHandler)
	s.log = s.opts.Logger
	s.clock = s.opts.Clock
	s.start = s.clock.Now()
	s.tick = tickFor(&s.opts)
	s.maxConns = s.opts.MaxConns
	if s.maxConns == 0 {
		s.maxConns = defaultMaxConns(s.opts.FDReserve)
	} else if s.maxConns < 0 {
		s.maxConns = math.MaxInt32 // off: bounded by descriptors alone (accept.go pauses at EMFILE)
	}
	s.inbound.limit = s.opts.MaxInboundMemory
	s.tlsConf = tlsConfig(s.opts.TLSConfig)
	s.clients = newClientTable(&s.opts)
	s.stats.init()
	return s
}

// Start starts the server and returns once it accepts connections, or the
// error that kept it from starting: invalid Options (the error names the
// field), an address that cannot be bound, event loops that cannot start.
// It is the one way to start a server, and nothing else says "started": when
// Start has returned nil, [Server.Addr] is valid.
//
// With Options.Addr or Options.Listener the server accepts connections
// itself; with neither it runs only its event loops, for connections that
// arrive through [Server.Upgrade] from a net/http server and those opened
// with [Server.Dial].
//
// The server then serves until ctx is done or [Server.Shutdown] is called:
// it drains (every connection gets 1001 Going Away and CloseTimeout to
// answer) and stops. [Server.Wait] blocks until then. A server starts once:
// a second Start returns an error.
func (s *Server) Start(ctx context.Context) error {
	if s.h == nil {
		return errors.New("wsloop: Start: nil handler")
	}
	if err := s.opts.validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("wsloop: Start: the server was started already")
	}
	if err := s.begin(ctx); err != nil {
		// Nothing runs: the server is stopped, with the error.
		s.err = err
		close(s.done)
		return err
	}
	return nil
}

// begin binds the listener, starts the loops and the accept loops, and
// leaves the rest of the server's life to run.
func (s *Server) begin(ctx context.Context) error {
	ln := s.opts.Listener
	if ln == nil && s.opts.Addr != "" {
		var err error
		if ln, err = s.listen(ctx); err != nil {
			return err
		}
	}
	if err := s.startLoops(); err != nil {
		if ln != nil {
			ln.Close()
		}
		return err
	}
	var acceptDone chan error // nil without a listener: never ready
	if ln != nil {
		s.mu.Lock()
		s.ln, s.addr = ln, ln.Addr()
		s.mu.Unlock()
		acceptDone = make(chan error, acceptors)
		for i := 0; i < acceptors; i++ { // a few goroutines per server, never one per connection (accept.go)
			go func() { acceptDone <- s.acceptLoop(ln) }()
		}
		s.log.Info("wsloop: listening", "addr", s.addr, "max_conns", s.maxConns)
	} else {
		s.log.Info("wsloop: serving upgraded and dialed connections", "max_conns", s.maxConns)
	}
	// The clock ticks from now, before Start returns: a test's fake clock
	// moved right after Start must reach the timers.
	stopTicks := s.clock.Every(s.tick, s.onTick)
	go s.run(ctx, ln, acceptDone, stopTicks)
	return nil
}

// run supervises a started server: it waits until ctx ends, Shutdown is
// called or the listener fails for good, then stops the loops, which run
// OnClose for every connection still open, and closes done.
func (s *Server) run(ctx context.Context, ln net.Listener, acceptDone chan error, stopTicks func()) {
	var serveErr error
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), s.opts.CloseTimeout)
			go func() { defer cancel(); _ = s.Shutdown(sctx) }()
			<-s.stopReq
			waiting = false
		case <-s.stopReq:
			waiting = false
		case err := <-acceptDone:
			if errors.Is(err, errHandedOff) {
				// The listener is a successor's now (HandOff):
				// serve what stayed until Shutdown.
				continue
			}
			// The listener failed for good: drain what is open, then stop.
			serveErr = err
			s.log.Error("wsloop: accept failed, shutting down", "err", serveErr)
			sctx, cancel := context.WithTimeout(context.Background(), s.opts.CloseTimeout)
			go func() { defer cancel(); _ = s.Shutdown(sctx) }()
			<-s.stopReq
			waiting = false
		}
	}
	if ln != nil {
		ln.Close()
	}
	stopTicks()
	err := s.cli.Stop() // runs OnClose for every connection still open
	if serveErr == nil {
		serveErr = err
	}
	s.err = serveErr
	close(s.done)
}

// listen binds Options.Addr: "host:port" for TCP or "unix:///path". With
// ReusePort the socket is set to share its port with other processes
// (reuseport_*.go: what that does differs by system).
func (s *Server) listen(ctx context.Context) (net.Listener, error) {
	network, addr := "tcp", s.opts.Addr
	if n, a, ok := strings.Cut(addr, "://"); ok {
		network, addr = n, a
	}
	lc := net.ListenConfig{KeepAlive: s.opts.TCPKeepAlive}
	if lc.KeepAlive == 0 {
		lc.KeepAlive = -1 // off, as documented; Go would otherwise turn it on per accepted connection
	}
	if s.opts.ReusePort {
		lc.Control = reusePort
	}
	return lc.Listen(ctx, network, addr)
}

// Wait blocks until the server has stopped: after the context given to
// Start ended or [Server.Shutdown] was called, once the drain is over and
// every OnClose has run. It returns nil after such a stop, the error that
// made the listener fail for good, or the error of a failed Start. Wait on
// a server that was never started blocks until Shutdown.
func (s *Server) Wait() error {
	<-s.done
	return s.err
}

// startLoops starts the gnet event loops. They are a gnet client engine: it
// has no listener of its own, so every socket reaches it the same way,
// through the adoption path in accept.go.
func (s *Server) startLoops() error {
	n := s.opts.EventLoops
	cli, err := gnet.NewClient(&gnetEvents{s: s},
		gnet.WithNumEventLoop(n),
		gnet.WithLogger(gnetLogger{s.log}),
		gnet.WithReadBufferCap(s.opts.ReadBufferCap),
		gnet.WithLockOSThread(s.opts.LockOSThread),
		// Go's net package set TCP_NODELAY on the socket already (and
		// the descriptor gnet gets is a duplicate of it): skip gnet's
		// second setsockopt per connection.
		gnet.WithTCPNoDelay(gnet.TCPDelay),
	)
	if err != nil {
		return err
	}
	if err := cli.Start(); err != nil {
		return err
	}
	s.mu.Lock()
	s.cli = cli
	s.mu.Unlock()
	return nil
}

// Addr returns the address the server listens on, with the real port when
// Options.Addr asked for port 0; nil for a server without a listener.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Shutdown drains the server: it stops accepting (connections that arrive
// meanwhile get 503), sends every open connection a 1001 Going Away close
// frame after whatever the application queued before, waits until the peers
// answered and every connection is closed or ctx is done, then stops the
// event loops. It returns ctx.Err() if connections were still open when ctx
// ended (they are closed then). Shutdown on a server that has stopped
// returns nil; on one never started, it marks it stopped (Start then fails
// and Wait returns).
func (s *Server) Shutdown(ctx context.Context) error {
	if s.started.CompareAndSwap(false, true) {
		close(s.done)
		return nil
	}
	if s.draining.CompareAndSwap(false, true) {
		s.log.Info("wsloop: draining", "open", s.stats.conns.Load())
		s.handshakes.shutdown() // TLS handshakes of bridged connections end (tls.go)
		for _, lp := range s.loopList() {
			lp := lp
			_ = lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
				lp.wheel.each(func(wc *wsConn) { wc.drain() })
				return nil
			}))
		}
		if s.stats.conns.Load() == 0 {
			s.drainOnce.Do(func() { close(s.drained) })
		}
	}
	var err error
	select {
	case <-s.drained:
	case <-ctx.Done():
		err = ctx.Err()
	case <-s.done:
	}
	s.stopOnce.Do(func() { close(s.stopReq) })
	<-s.done
	return err
}

// loopList returns a snapshot of the loops that have connections.
func (s *Server) loopList() []*loop {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*loop(nil), s.loops...)
}

// loopFor returns wsloop's state for a gnet loop, creating it on the loop's
// first connection.
func (s *Server) loopFor(el gnet.EventLoop) *loop {
	s.mu.Lock()
	defer s.mu.Unlock()
	lp := s.loopsBy[el]
	if lp == nil {
		lp = newLoop(s, el)
		lp.idx = len(s.loops)
		s.loopsBy[el] = lp
		s.loops = append(s.loops, lp)
	}
	return lp
}

// loopAt returns the loop with index i.
func (s *Server) loopAt(i int) *loop {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loops[i]
}
