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
// served by the same loops and machinery.
package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/engine/internal/tlsbuf"
	"github.com/wsloop/wsloop/handler"
)

// Server is a WebSocket server. Create it with [New], run it with
// [Server.ListenAndServe] or [Server.Serve], stop it with [Server.Shutdown].
// Its methods are safe for concurrent use.
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

	ready     chan struct{}
	readyOnce sync.Once
	stopReq   chan struct{} // closed to stop the event loops
	stopOnce  sync.Once
	done      chan struct{} // closed when Serve has returned
	drained   chan struct{}
	drainOnce sync.Once
	draining  atomic.Bool
	running   atomic.Bool

	fdFreed      chan struct{} // a descriptor was released; wakes a paused accept loop
	acceptPaused atomic.Int32  // accept loops waiting in waitForDescriptor

	tlsConf    *tls.Config   // Options.TLSConfig with ALPN set, nil for ws://
	handshakes handshakePool // TLS handshake goroutines (tls.go)
	tlsOnce    sync.Once     // decides tlsk at the first wss connection (tls.go, tlsBridged)
	tlsk       *tlsbuf.Coupling

	inbound inboundBudget // memory held for undelivered inbound messages (budget.go)
	defl    serverDeflate // permessage-deflate budget and counters (deflate.go)
	stats   serverStats   // counters (stats.go)

	testHookOpened func() // called by opened, set only by tests (export_test.go)
}

// New returns a server that delivers the events of its connections to h. If
// h also implements [handler.Upgrader] it sees every upgrade request; if it
// implements [handler.StreamHandler] it receives messages in chunks.
func New(h handler.Handler, opts Options) *Server {
	s := &Server{
		h:       h,
		opts:    opts.withDefaults(),
		loopsBy: map[gnet.EventLoop]*loop{},
		ready:   make(chan struct{}),
		stopReq: make(chan struct{}),
		done:    make(chan struct{}),
		drained: make(chan struct{}),
		fdFreed: make(chan struct{}, 1),
	}
	s.up, _ = h.(handler.Upgrader)
	s.async, _ = h.(handler.AsyncUpgrader)
	s.stream, _ = h.(handler.StreamHandler)
	s.log = s.opts.Logger
	s.clock = s.opts.Clock
	s.start = s.clock.Now()
	s.tick = tickFor(&s.opts)
	s.maxConns = s.opts.MaxConns
	if s.maxConns <= 0 {
		s.maxConns = defaultMaxConns(s.opts.FDReserve)
	}
	s.inbound.limit = s.opts.MaxInboundMemory
	s.tlsConf = tlsConfig(s.opts.TLSConfig)
	s.stats.init()
	return s
}

// ListenAndServe listens on Options.Addr and serves until Shutdown is called
// or ctx is done; then it drains as Shutdown does, giving connections
// CloseTimeout to answer, and returns. It returns an error at once if the
// address cannot be bound.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := s.listen(ctx)
	if err != nil {
		if s.running.CompareAndSwap(false, true) {
			s.readyOnce.Do(func() { close(s.ready) })
			close(s.done)
		}
		return err
	}
	return s.Serve(ctx, ln)
}

// listen binds Options.Addr: "host:port" for TCP or "unix:///path". With
// ReusePort the socket gets SO_REUSEPORT, so that several processes can
// share the port.
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

// Serve accepts connections on ln and serves them until Shutdown is called or
// ctx is done; then it drains as Shutdown does and returns. Serve takes ln
// over and closes it. With a nil ln, Serve runs the event loops without a
// listener of their own, for connections that arrive through
// [Server.Upgrade] from a net/http server. A server serves once: a second
// Serve returns an error.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if !s.running.CompareAndSwap(false, true) {
		if ln != nil {
			ln.Close()
		}
		return errors.New("wsloop: server already started")
	}
	defer close(s.done)
	defer s.readyOnce.Do(func() { close(s.ready) }) // also when the loops fail to start

	if err := s.startLoops(); err != nil {
		if ln != nil {
			ln.Close()
		}
		return err
	}
	stopTicks := s.clock.Every(s.tick, s.onTick)
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
		s.log.Info("wsloop: serving upgraded connections", "max_conns", s.maxConns)
	}
	s.readyOnce.Do(func() { close(s.ready) })

	var serveErr error
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), s.opts.CloseTimeout)
		go func() { defer cancel(); _ = s.Shutdown(sctx) }()
		<-s.stopReq
	case <-s.stopReq:
	case serveErr = <-acceptDone:
		// The listener failed for good: drain what is open, then stop.
		s.log.Error("wsloop: accept failed, shutting down", "err", serveErr)
		sctx, cancel := context.WithTimeout(context.Background(), s.opts.CloseTimeout)
		go func() { defer cancel(); _ = s.Shutdown(sctx) }()
		<-s.stopReq
	}
	if ln != nil {
		ln.Close()
	}
	stopTicks()
	err := s.cli.Stop() // runs OnClose for every connection still open
	if serveErr == nil {
		serveErr = err
	}
	return serveErr
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

// Ready is closed once the server listens (Addr is valid from then on), or
// once ListenAndServe failed to start.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr returns the address the server listens on, with the real port when
// Options.Addr asked for port 0; nil before Ready or if listening failed.
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
// ended (they are closed then). Shutdown on a server that is not running
// returns nil.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.running.Load() {
		return nil
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
		return ctx.Err()
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
