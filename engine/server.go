// Package engine serves WebSocket connections from gnet event loops.
//
// A [Server] owns a gnet engine: one or more event loops, each serving many
// connections without a goroutine per connection. The bytes a loop reads are
// handed to the codec, which turns them into the handshake, data messages and
// control frames; the application sees them through a [handler.Handler].
// Writes from any goroutine are queued per connection and flushed by the
// connection's loop with one system call per batch.
//
// Handler callbacks run on the event loops and must not block (see package
// handler). Timeouts, limits and the slow-consumer policy are in [Options];
// their defaults are safe for production.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Server is a WebSocket server. Create it with [New], run it with
// [Server.ListenAndServe], stop it with [Server.Shutdown]. Its methods are
// safe for concurrent use.
type Server struct {
	gnet.BuiltinEventEngine

	h      handler.Handler
	up     handler.Upgrader
	stream handler.StreamHandler
	opts   Options
	log    *slog.Logger
	start  time.Time
	tick   time.Duration

	mu       sync.Mutex
	loopsBy  map[gnet.EventLoop]*loop
	loops    []*loop
	eng      gnet.Engine
	addr     net.Addr
	maxConns int

	ready     chan struct{}
	readyOnce sync.Once
	done      chan struct{}
	drained   chan struct{}
	drainOnce sync.Once
	draining  atomic.Bool
	stopping  atomic.Bool
	running   atomic.Bool

	open     atomic.Int64 // TCP connections, handshake included
	wsOpen   atomic.Int64 // connections past the handshake
	accepted atomic.Int64
	upgraded atomic.Int64

	defl serverDeflate // permessage-deflate budget and counters (deflate.go)

	statMu   sync.Mutex
	rejected map[string]int64
	closes   map[uint16]int64
	limitLog rateLimited
}

// loopStats are the counters of one loop, kept apart so that loops never
// contend on a shared cache line in the message path.
type loopStats struct {
	messagesIn, messagesOut atomic.Int64
	bytesIn, bytesOut       atomic.Int64
	slowConsumers, timeouts atomic.Int64
	_                       [64]byte
}

// New returns a server that delivers the events of its connections to h. If
// h also implements [handler.Upgrader] it sees every upgrade request; if it
// implements [handler.StreamHandler] it receives messages in chunks.
func New(h handler.Handler, opts Options) *Server {
	s := &Server{
		h:        h,
		opts:     opts.withDefaults(),
		start:    time.Now(),
		loopsBy:  map[gnet.EventLoop]*loop{},
		ready:    make(chan struct{}),
		done:     make(chan struct{}),
		drained:  make(chan struct{}),
		rejected: map[string]int64{},
		closes:   map[uint16]int64{},
	}
	s.up, _ = h.(handler.Upgrader)
	s.stream, _ = h.(handler.StreamHandler)
	s.log = s.opts.Logger
	s.tick = tickFor(&s.opts)
	s.maxConns = s.opts.MaxConns
	if s.maxConns <= 0 {
		s.maxConns = defaultMaxConns(s.opts.FDReserve)
	}
	return s
}

// tickFor picks the timer wheel's resolution: a quarter of the shortest
// timeout, between 5 ms and 500 ms, so that timeouts fire within 25% of
// their value and an idle server wakes at most a few times a second.
func tickFor(o *Options) time.Duration {
	min := o.HandshakeTimeout
	for _, d := range []time.Duration{o.IdleTimeout, o.MessageTimeout, o.CloseTimeout, o.WriteStallTimeout, o.PingInterval, o.PongTimeout} {
		if d > 0 && d < min {
			min = d
		}
	}
	t := min / 4
	if t < 5*time.Millisecond {
		t = 5 * time.Millisecond
	}
	if t > 500*time.Millisecond {
		t = 500 * time.Millisecond
	}
	return t
}

// defaultMaxConns keeps reserve descriptors free under RLIMIT_NOFILE. gnet
// stops its whole engine when accept fails with EMFILE, so the server must
// never let connections use the last descriptors.
func defaultMaxConns(reserve int) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 30
	}
	n := int(rl.Cur) - reserve
	if n < 1 {
		n = 1
	}
	return n
}

// ticks converts a duration to wheel ticks, rounding up, at least 1.
func (s *Server) ticks(d time.Duration) uint32 {
	t := uint32((d + s.tick - 1) / s.tick)
	if t == 0 {
		t = 1
	}
	return t
}

func (s *Server) ticksSince(t time.Time) uint32 { return uint32(t.Sub(s.start)/s.tick) + 1 }

// ListenAndServe listens on Options.Addr and serves until Shutdown is called
// or ctx is done; then it drains as Shutdown does, giving connections
// CloseTimeout to answer, and returns. It returns an error at once if the
// address cannot be bound.
func (s *Server) ListenAndServe(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("wsloop: server already started")
	}
	defer close(s.done)
	defer s.readyOnce.Do(func() { close(s.ready) }) // also on a bind error

	stop := make(chan struct{})
	defer close(stop)
	go func() { // one goroutine per server, to turn ctx into a drain
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), s.opts.CloseTimeout)
			defer cancel()
			_ = s.Shutdown(sctx)
		case <-stop:
		}
	}()

	loops := s.opts.EventLoops
	if loops <= 0 {
		loops = runtime.NumCPU()
	}
	gopts := []gnet.Option{
		gnet.WithNumEventLoop(loops),
		gnet.WithTicker(true),
		gnet.WithLogger(gnetLogger{s.log}),
		gnet.WithReusePort(s.opts.ReusePort),
		gnet.WithReuseAddr(true),
		gnet.WithReadBufferCap(s.opts.ReadBufferCap),
		gnet.WithTCPKeepAlive(s.opts.TCPKeepAlive),
	}
	addr := s.opts.Addr
	if !strings.Contains(addr, "://") {
		addr = "tcp://" + addr
	}
	if s.opts.ReusePort {
		addr = pinPort(addr)
	}
	return gnet.Run(s, addr, gopts...)
}

// pinPort replaces a TCP port of 0 with a free port. With ReusePort every
// event loop binds its own listener to the address: with port 0 each would
// get a different port, Addr would report the first, and the other loops
// would never see a connection.
func pinPort(addr string) string {
	network, hostport, _ := strings.Cut(addr, "://")
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || port != "0" || !strings.HasPrefix(network, "tcp") {
		return addr
	}
	ln, err := net.Listen(network, hostport)
	if err != nil {
		return addr // gnet reports the error
	}
	defer ln.Close()
	return network + "://" + net.JoinHostPort(host, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
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

// Shutdown drains the server: it refuses new connections (503), sends every
// open connection a 1001 Going Away close frame after whatever the
// application queued before, waits until the peers answered and every
// connection is closed or ctx is done, then stops the event loops. It
// returns ctx.Err() if connections were still open when ctx ended (they are
// closed then). Shutdown on a server that is not running returns nil.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.running.Load() {
		return nil
	}
	if s.draining.CompareAndSwap(false, true) {
		s.log.Info("wsloop: draining", "open", s.open.Load())
		s.mu.Lock()
		loops := append([]*loop(nil), s.loops...)
		s.mu.Unlock()
		for _, lp := range loops {
			lp := lp
			_ = lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
				lp.wheel.each(func(wc *wsConn) { wc.drain() })
				return nil
			}))
		}
		if s.open.Load() == 0 {
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
	s.stopping.Store(true)
	// Stop the engine now rather than at the next tick. Engine.Stop itself
	// polls every 500 ms before returning, so it runs on its own and we wait
	// for ListenAndServe, which returns as soon as the loops have exited.
	s.mu.Lock()
	eng := s.eng
	s.mu.Unlock()
	go func() { _ = eng.Stop(context.Background()) }()
	<-s.done
	return err
}

// drain starts the close handshake for shutdown. Loop only.
func (wc *wsConn) drain() {
	switch wc.getPhase() {
	case phaseHandshake:
		wc.setCloseErr(handler.ErrShutdown)
		wc.closeNow()
	case phaseOpen:
		const reason = "server shutting down"
		wc.setCloseErr(&handler.CloseError{Code: codec.CloseGoingAway, Reason: reason})
		wc.mu.Lock()
		wc.queueCloseLocked(codec.CloseGoingAway, reason)
		wc.phase = phaseClosing
		wc.mu.Unlock()
		wc.lp.srv.countClose(codec.CloseGoingAway)
		wc.flush()
	}
}

// afterWrite records gnet's outbound backlog for the cap and the write-stall
// timer. Loop only.
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

// Stats is a snapshot of a server's counters, for logs and metrics.
type Stats struct {
	// Open is the number of open WebSocket connections (past the
	// handshake); Conns counts TCP connections, handshakes included.
	Open, Conns int64
	// Accepted counts TCP connections accepted since start.
	Accepted int64
	// Upgraded counts successful handshakes.
	Upgraded int64
	// Rejected counts refused requests by reason, e.g. "403 origin not
	// allowed", "431 request header too large", "503 connection limit".
	Rejected map[string]int64
	// MessagesIn/Out and BytesIn/Out count data messages and their payload
	// bytes (out: frame bytes written).
	MessagesIn, MessagesOut int64
	BytesIn, BytesOut       int64
	// ClosesByCode counts close frames sent by the server, by code.
	ClosesByCode map[uint16]int64
	// SlowConsumers counts connections dropped by the outbound cap;
	// Timeouts counts connections closed by a handshake, idle, message,
	// pong, close or write-stall timeout.
	SlowConsumers, Timeouts int64
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Open:         s.wsOpen.Load(),
		Conns:        s.open.Load(),
		Accepted:     s.accepted.Load(),
		Rejected:     map[string]int64{},
		ClosesByCode: map[uint16]int64{},
	}
	s.mu.Lock()
	for _, lp := range s.loops {
		st.MessagesIn += lp.stats.messagesIn.Load()
		st.MessagesOut += lp.stats.messagesOut.Load()
		st.BytesIn += lp.stats.bytesIn.Load()
		st.BytesOut += lp.stats.bytesOut.Load()
		st.SlowConsumers += lp.stats.slowConsumers.Load()
		st.Timeouts += lp.stats.timeouts.Load()
	}
	s.mu.Unlock()
	s.statMu.Lock()
	for k, v := range s.rejected {
		st.Rejected[k] = v
	}
	for k, v := range s.closes {
		st.ClosesByCode[k] = v
	}
	s.statMu.Unlock()
	st.Upgraded = s.upgraded.Load()
	return st
}

func (s *Server) countClose(code uint16) {
	s.statMu.Lock()
	s.closes[code]++
	s.statMu.Unlock()
}

func (s *Server) countReject(status int, reason string) {
	s.statMu.Lock()
	s.rejected[fmt.Sprintf("%d %s", status, reason)]++
	s.statMu.Unlock()
}

// --- gnet.EventHandler ----------------------------------------------------

// OnBoot records the engine and the bound address. It is part of the
// gnet.EventHandler implementation; do not call it.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.mu.Lock()
	s.eng = eng
	if fd, err := eng.Dup(); err == nil {
		if sa, err := syscall.Getsockname(fd); err == nil {
			s.addr = sockaddrToAddr(sa)
		}
		_ = syscall.Close(fd)
	}
	s.mu.Unlock()
	s.log.Info("wsloop: listening", "addr", s.addr, "max_conns", s.maxConns)
	s.readyOnce.Do(func() { close(s.ready) })
	return gnet.None
}

func sockaddrToAddr(sa syscall.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *syscall.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	case *syscall.SockaddrUnix:
		return &net.UnixAddr{Name: a.Name, Net: "unix"}
	}
	return nil
}

// OnTick advances every loop's timer wheel (on the loop, through a task) and
// stops the engine once a shutdown has drained. Part of gnet.EventHandler.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	if s.stopping.Load() {
		return 0, gnet.Shutdown
	}
	s.mu.Lock()
	for _, lp := range s.loops {
		_ = lp.el.Execute(context.Background(), lp)
	}
	s.mu.Unlock()
	if s.draining.Load() {
		return 10 * time.Millisecond, gnet.None // notice the end of a drain promptly
	}
	return s.tick, gnet.None
}

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

var (
	limitResponse = codec.AppendResponse(nil, http.StatusServiceUnavailable, http.Header{"Retry-After": {"5"}}, []byte("server at its connection limit, try again later\n"))
	drainResponse = codec.AppendResponse(nil, http.StatusServiceUnavailable, http.Header{"Retry-After": {"5"}}, []byte("server shutting down\n"))
	timeoutResp   = codec.AppendResponse(nil, http.StatusRequestTimeout, nil, []byte("upgrade request not completed in time\n"))
)

// OnOpen admits a TCP connection into the handshake phase, or refuses it with
// 503 past MaxConns or during a drain. Part of gnet.EventHandler.
func (s *Server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	s.accepted.Add(1)
	if s.draining.Load() {
		s.countReject(http.StatusServiceUnavailable, "shutting down")
		return drainResponse, gnet.Close
	}
	if n := s.open.Add(1); n > int64(s.maxConns) {
		s.open.Add(-1)
		s.countReject(http.StatusServiceUnavailable, "connection limit")
		if ok, dropped := s.limitLog.allow(time.Second); ok {
			s.log.Warn("wsloop: connection limit reached, refusing connections", "max_conns", s.maxConns, "refused_since_last_log", dropped)
		}
		return limitResponse, gnet.Close
	}
	lp := s.loopFor(c.EventLoop())
	wc := &wsConn{c: c, lp: lp}
	wc.msgStart = lp.now // the handshake timeout runs from accept
	wc.lastRead = lp.now
	lp.wheel.add(wc)
	lp.wheel.schedule(wc, lp.now+s.ticks(s.opts.HandshakeTimeout))
	c.SetContext(wc)
	return nil, gnet.None
}

// OnClose releases the connection's state and runs the handler's OnClose
// exactly once for connections whose OnOpen ran. Part of gnet.EventHandler.
func (s *Server) OnClose(c gnet.Conn, err error) gnet.Action {
	wc, _ := c.Context().(*wsConn)
	if wc == nil {
		return gnet.None
	}
	c.SetContext(nil)
	wc.mu.Lock()
	wc.phase = phaseClosed
	if wc.out != nil {
		putOut(wc.out)
		wc.out = nil
	}
	wc.mu.Unlock()
	lp := wc.lp
	lp.wheel.drop(wc)
	if x := wc.x.Load(); x != nil && x.asm != nil {
		putBuf(x.asm)
		x.asm = nil
	}
	s.closeDeflate(wc) // permessage-deflate: return the context-takeover reservation (deflate.go)
	if wc.has(lHandlerRan) {
		s.wsOpen.Add(-1)
		cause := wc.closeErr()
		if cause == nil {
			cause = err
			if s.draining.Load() {
				cause = handler.ErrShutdown
			}
			if cause == nil {
				cause = errPeerGone
			}
		}
		s.h.OnClose(wc, cause)
	}
	if s.open.Add(-1) == 0 && s.draining.Load() {
		s.drainOnce.Do(func() { close(s.drained) })
	}
	return gnet.None
}

// errPeerGone is reported when the TCP connection ended without a close
// frame and without a socket error.
var errPeerGone = errors.New("wsloop: connection closed by peer without a close frame (1006)")

// OnTraffic runs the handshake or decodes frames from the bytes gnet has
// buffered for the connection. Part of gnet.EventHandler.
func (s *Server) OnTraffic(c gnet.Conn) gnet.Action {
	wc, _ := c.Context().(*wsConn)
	if wc == nil {
		return gnet.Close
	}
	wc.lastRead = wc.lp.now
	wc.set(lProbeSent, false)
	switch wc.getPhase() {
	case phaseHandshake:
		return s.handshake(wc)
	case phaseFailing:
		_, _ = c.Discard(c.InboundBuffered()) // read and drop until the peer closes
		return gnet.None
	case phaseClosed:
		return gnet.None
	}
	return s.frames(wc)
}

func (s *Server) handshake(wc *wsConn) gnet.Action {
	c := wc.c
	lp := wc.lp
	buf, _ := c.Peek(-1)
	// Most requests arrive in one read: scan with a scanner on the stack
	// and keep its position in the connection's extra state only when the
	// header is not complete yet.
	hs := codec.HeaderScanner{Max: s.opts.MaxHeaderBytes}
	x := wc.x.Load()
	if x != nil && x.hsSaved {
		hs = x.hs
	}
	n, err := hs.Scan(buf)
	if err != nil {
		return s.reject(wc, codec.ErrRequestTooLarge)
	}
	if n == 0 {
		x = wc.extra()
		x.hs, x.hsSaved = hs, true
		return gnet.None // the handshake timer bounds the wait
	}
	if x != nil {
		x.hsSaved = false
	}
	var r codec.Request
	if err := codec.ParseRequest(buf[:n], &r); err != nil {
		he := err.(*codec.HandshakeError)
		if he.NotWebSocket && s.opts.Fallback != nil && (string(r.Method) == http.MethodGet || string(r.Method) == http.MethodHead) {
			if resp := s.opts.Fallback(s.request(&r, wc)); resp != nil {
				body := resp.Body
				if string(r.Method) == http.MethodHead {
					body = nil
				}
				out := codec.AppendResponse(lp.scratch[:0], resp.Status, resp.Header, body)
				lp.scratch = out[:0]
				_, _ = c.Write(out)
				return s.linger(wc)
			}
		}
		return s.reject(wc, he)
	}

	var req *handler.Request
	if s.opts.CheckOrigin != nil {
		req = s.request(&r, wc)
		if !s.opts.CheckOrigin(req) {
			return s.reject(wc, errOrigin)
		}
	} else if !sameOrigin(r.Origin, r.Host) {
		return s.reject(wc, errOrigin)
	}
	// The response lives in the loop, not on the stack: passing it to the
	// Upgrader through an interface would move it to the heap on every
	// handshake, hook or not.
	res := &lp.upRes
	*res = handler.UpgradeResponse{}
	defer func() { *res = handler.UpgradeResponse{} }() // hold no references
	if len(s.opts.Subprotocols) > 0 {
		r.Protocols(func(p []byte) bool {
			for _, sp := range s.opts.Subprotocols {
				if string(p) == sp {
					res.Subprotocol = sp
					return false
				}
			}
			return true
		})
	}
	if s.up != nil {
		if req == nil {
			req = s.request(&r, wc)
		}
		if err := s.up.OnUpgrade(req, res); err != nil {
			var he *handler.HTTPError
			if errors.As(err, &he) {
				return s.reject(wc, &codec.HandshakeError{Status: he.Status, Reason: he.Reason, Header: he.Header})
			}
			return s.reject(wc, &codec.HandshakeError{Status: http.StatusForbidden, Reason: err.Error()})
		}
	}

	ext := s.negotiateDeflate(wc, &r) // permessage-deflate (deflate.go): nil when off or not offered
	out := codec.AppendAccept(lp.scratch[:0], r.Key, res.Subprotocol, ext, res.Header)
	lp.scratch = out[:0]
	var info *connInfo
	if string(r.Path) != "/" || len(r.RawQuery) > 0 || res.Subprotocol != "" {
		info = &connInfo{subprotocol: res.Subprotocol, path: string(r.Path), rawQuery: string(r.RawQuery)}
	}
	if _, _ = c.Write(out); wc.getPhase() == phaseClosed {
		return gnet.None
	}
	_, _ = c.Discard(n)

	wc.mu.Lock()
	wc.phase = phaseOpen
	wc.setContextLocked(res.Context)
	if info != nil {
		wc.extra().info = info
	}
	wc.mu.Unlock()
	wc.set(lHandlerRan, true)
	s.wsOpen.Add(1)
	s.upgraded.Add(1)
	lp.wheel.disarm(wc)
	wc.msgStart = 0
	wc.pingAt = lp.now
	s.armTimer(wc)

	wc.beginCallbacks()
	s.h.OnOpen(wc)
	wc.endCallbacks()
	if c.InboundBuffered() > 0 && wc.getPhase() == phaseOpen {
		return s.frames(wc) // a frame pipelined behind the request
	}
	return gnet.None
}

var errOrigin = &codec.HandshakeError{Status: http.StatusForbidden, Reason: "origin not allowed"}

// sameOrigin implements the default origin policy: no Origin header (a
// non-browser client) passes; otherwise the Origin's host[:port] must equal
// the Host header, ignoring case, as gorilla/websocket's default does.
func sameOrigin(origin, host []byte) bool {
	if len(origin) == 0 {
		return true
	}
	u, err := url.Parse(string(origin))
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, string(host))
}

// request builds the handler's view of an upgrade request. It allocates, so
// it is built only when an Upgrader, CheckOrigin or Fallback asks for it.
func (s *Server) request(r *codec.Request, wc *wsConn) *handler.Request {
	req := &handler.Request{
		Method:     string(r.Method),
		Path:       string(r.Path),
		RawQuery:   string(r.RawQuery),
		Host:       string(r.Host),
		Origin:     string(r.Origin),
		Header:     http.Header{},
		RemoteAddr: wc.c.RemoteAddr(),
	}
	r.VisitHeaders(func(k, v []byte) {
		key := http.CanonicalHeaderKey(string(k))
		req.Header[key] = append(req.Header[key], string(v))
	})
	r.Protocols(func(p []byte) bool {
		req.Protocols = append(req.Protocols, string(p))
		return true
	})
	r.ExtensionHeaders(func(v []byte) { req.Extensions = append(req.Extensions, string(v)) })
	return req
}

// reject answers a failed handshake with its status and reason, then closes.
func (s *Server) reject(wc *wsConn, he *codec.HandshakeError) gnet.Action {
	s.countReject(he.Status, he.Reason)
	s.log.Debug("wsloop: upgrade rejected", "remote", wc.c.RemoteAddr(), "status", he.Status, "reason", he.Reason)
	out := codec.AppendReject(wc.lp.scratch[:0], he)
	wc.lp.scratch = out[:0]
	if _, _ = wc.c.Write(out); wc.getPhase() == phaseClosed {
		return gnet.None
	}
	return s.linger(wc)
}

// linger ends a connection after a response was written: half-close, then
// read and drop until the peer closes or CloseTimeout passes, so that unread
// request bytes cannot turn our close into a reset that destroys the
// response in flight.
func (s *Server) linger(wc *wsConn) gnet.Action {
	_, _ = wc.c.Discard(wc.c.InboundBuffered())
	wc.setPhase(phaseFailing)
	wc.flushFailing()
	return gnet.None
}

// frames decodes every complete unit buffered for an open connection.
func (s *Server) frames(wc *wsConn) gnet.Action {
	c := wc.c
	lp := wc.lp
	buf, _ := c.Peek(-1)
	if len(buf) == 0 {
		return gnet.None
	}
	action := gnet.None
	var perr *codec.ProtocolError
	off := 0
	wc.beginCallbacks()
	for {
		n, ev, err := wc.dec.Decode(buf[off:], s.opts.MaxMessageSize)
		if err != nil {
			var ok bool // a type assertion, not errors.As: &perr would escape on every call
			if perr, ok = err.(*codec.ProtocolError); !ok {
				perr = &codec.ProtocolError{Code: codec.CloseProtocolError, Reason: err.Error()}
			}
			break
		}
		off += n
		if ev.Kind == codec.EventNone {
			break
		}
		if ev.Kind == codec.EventData {
			s.deliver(wc, &ev)
		} else if s.control(wc, &ev) {
			action = gnet.Close
			break
		}
		if p := wc.getPhase(); p != phaseOpen && p != phaseClosing {
			break
		}
	}
	if perr != nil {
		off = len(buf) // nothing after a protocol error is read
	}
	if off > 0 {
		_, _ = c.Discard(off)
	}
	wc.endCallbacks()
	if perr != nil {
		s.log.Debug("wsloop: protocol error", "remote", wc.c.RemoteAddr(), "code", perr.Code, "reason", perr.Reason)
		wc.fail(perr.Code, perr.Reason, &handler.CloseError{Code: perr.Code, Reason: perr.Reason})
		return gnet.None
	}
	if action == gnet.Close || wc.getPhase() == phaseClosed {
		return action
	}
	// Bound the time a message or a frame header may stay incomplete, even
	// while bytes keep trickling in.
	if wc.dec.InMessage() || c.InboundBuffered() > 0 {
		if wc.msgStart == 0 && s.opts.MessageTimeout > 0 {
			wc.msgStart = lp.now
			lp.wheel.schedule(wc, lp.now+s.ticks(s.opts.MessageTimeout))
		}
	} else {
		wc.msgStart = 0
	}
	return gnet.None
}

// deliver hands a data event to the handler: straight from gnet's buffer
// when the message arrived whole, otherwise through the assembly buffer.
func (s *Server) deliver(wc *wsConn, ev *codec.Event) {
	if wc.getPhase() != phaseOpen {
		return // after our close frame, data is read and dropped (RFC 6455 §5.5.1)
	}
	st := &wc.lp.stats
	st.bytesIn.Add(int64(len(ev.Payload)))
	if ev.Final {
		st.messagesIn.Add(1)
	}
	if ev.Compressed { // permessage-deflate: decompress, check, deliver whole (deflate.go)
		s.deliverCompressed(wc, ev)
		return
	}
	if s.stream != nil {
		s.stream.OnMessageChunk(wc, ev.Op, ev.Payload, ev.First, ev.Final)
		return
	}
	if ev.First && ev.Final {
		s.h.OnMessage(wc, ev.Op, ev.Payload)
		return
	}
	x := wc.extra()
	x.asm = growBuf(x.asm, len(ev.Payload))
	x.asm = append(x.asm, ev.Payload...)
	if ev.Final {
		msg := x.asm
		x.asm = nil
		s.h.OnMessage(wc, ev.Op, msg)
		putBuf(msg)
	}
}

// control handles a ping, pong or close frame. It returns true when the TCP
// connection must now be closed.
func (s *Server) control(wc *wsConn, ev *codec.Event) bool {
	phase := wc.getPhase()
	switch ev.Op {
	case codec.OpPing:
		if phase == phaseOpen {
			s.h.OnPing(wc, ev.Payload)
		}
	case codec.OpPong:
		wc.set(lPongWait, false)
		if phase == phaseOpen {
			s.h.OnPong(wc, ev.Payload)
		}
	case codec.OpClose:
		if phase == phaseOpen {
			// RFC 6455 §5.5.1: answer with a close frame, "typically
			// echoing the status code it received", then the server
			// closes the TCP connection first (§7.1.1).
			wc.setCloseErr(&handler.CloseError{Code: ev.CloseCode, Reason: string(ev.CloseReason), Remote: true})
			wc.mu.Lock()
			wc.queueCloseLocked(ev.CloseCode, "")
			wc.phase = phaseClosing
			wc.mu.Unlock()
			s.countClose(ev.CloseCode)
			return true
		}
		// The answer to our close frame: the handshake is complete. OnClose
		// reports the close the server sent, whether or not it is answered.
		if wc.closeErr() == nil {
			wc.setCloseErr(wc.serverClose(ev.CloseCode))
		}
		return true
	}
	return false
}

// serverClose returns what OnClose reports for a close the application
// started with Conn.Close: the code and reason it sent. fallback is used if
// none was recorded (the peer's echoed code, or 0 for a timeout, which then
// reports ErrCloseTimeout).
func (wc *wsConn) serverClose(fallback uint16) error {
	var sent *handler.CloseError
	wc.mu.Lock()
	if x := wc.x.Load(); x != nil {
		sent = x.sentClose
	}
	wc.mu.Unlock()
	switch {
	case sent != nil:
		return sent
	case fallback != 0:
		return &handler.CloseError{Code: fallback}
	}
	return handler.ErrCloseTimeout
}

// armTimer schedules the connection's next deadline from its state. Loop only.
func (s *Server) armTimer(wc *wsConn) {
	lp := wc.lp
	next := uint32(0)
	consider := func(at uint32) {
		if next == 0 || int32(at-next) < 0 {
			next = at
		}
	}
	o := &s.opts
	if o.IdleTimeout > 0 {
		idle := s.ticks(o.IdleTimeout)
		if !wc.has(lProbeSent) {
			consider(wc.lastRead + idle/2)
		} else {
			consider(wc.lastRead + idle)
		}
	}
	if wc.msgStart != 0 && o.MessageTimeout > 0 {
		consider(wc.msgStart + s.ticks(o.MessageTimeout))
	}
	if o.PingInterval > 0 {
		if wc.has(lPongWait) {
			consider(wc.pingAt + s.ticks(o.PongTimeout))
		} else {
			consider(wc.pingAt + s.ticks(o.PingInterval))
		}
	}
	if x := wc.x.Load(); x != nil && x.stallSince != 0 {
		consider(x.stallSince + s.ticks(o.WriteStallTimeout))
	}
	if next != 0 {
		if int32(next-lp.now) <= 0 {
			next = lp.now + 1
		}
		lp.wheel.schedule(wc, next)
	}
}

// onTimer runs when the connection's wheel entry is due: it enforces every
// timeout that applies and schedules the next check. Loop only.
func (wc *wsConn) onTimer() {
	s := wc.lp.srv
	lp := wc.lp
	now := lp.now
	o := &s.opts
	switch wc.getPhase() {
	case phaseHandshake:
		if now-wc.msgStart >= s.ticks(o.HandshakeTimeout) {
			lp.stats.timeouts.Add(1)
			s.countReject(http.StatusRequestTimeout, "handshake timeout")
			_, _ = wc.c.Write(timeoutResp)
			if wc.getPhase() != phaseClosed {
				s.linger(wc)
			}
			return
		}
		lp.wheel.schedule(wc, wc.msgStart+s.ticks(o.HandshakeTimeout))
		return
	case phaseClosing, phaseFailing:
		if !wc.has(lCloseTimed) {
			wc.pingAt = now
			wc.set(lCloseTimed, true)
		}
		if now-wc.pingAt >= s.ticks(o.CloseTimeout) {
			if wc.closeErr() == nil {
				wc.setCloseErr(wc.serverClose(0))
			}
			lp.stats.timeouts.Add(1)
			wc.closeNow()
			return
		}
		lp.wheel.schedule(wc, wc.pingAt+s.ticks(o.CloseTimeout))
		return
	case phaseClosed:
		return
	}

	if o.IdleTimeout > 0 {
		idle := s.ticks(o.IdleTimeout)
		since := now - wc.lastRead
		if since >= idle {
			lp.stats.timeouts.Add(1)
			wc.fail(codec.CloseGoingAway, "idle timeout", handler.ErrIdleTimeout)
			return
		}
		if since >= idle/2 && !wc.has(lProbeSent) {
			wc.set(lProbeSent, true)
			_ = wc.Ping(nil)
		}
	}
	if wc.msgStart != 0 && o.MessageTimeout > 0 && now-wc.msgStart >= s.ticks(o.MessageTimeout) {
		lp.stats.timeouts.Add(1)
		wc.fail(codec.ClosePolicyViolation, "message not completed in time", handler.ErrMessageTimeout)
		return
	}
	if o.PingInterval > 0 {
		if wc.has(lPongWait) && now-wc.pingAt >= s.ticks(o.PongTimeout) {
			lp.stats.timeouts.Add(1)
			wc.fail(codec.ClosePolicyViolation, "pong timeout", handler.ErrPongTimeout)
			return
		}
		if !wc.has(lPongWait) && now-wc.pingAt >= s.ticks(o.PingInterval) {
			wc.pingAt = now
			wc.set(lPongWait, true)
			_ = wc.Ping(nil)
		}
	}
	if x := wc.x.Load(); x != nil && x.stallSince != 0 {
		ob := wc.c.OutboundBuffered()
		switch {
		case ob == 0:
			x.stallSince = 0
		case ob < x.stallBytes:
			x.stallSince, x.stallBytes = now, ob // it drains, slowly
		case now-x.stallSince >= s.ticks(o.WriteStallTimeout):
			lp.stats.timeouts.Add(1)
			x.closeErr = handler.ErrWriteStall
			wc.setPhase(phaseFailing)
			wc.closeNow()
			return
		}
	}
	wc.flush()
	if wc.getPhase() == phaseOpen {
		s.armTimer(wc)
	}
}
