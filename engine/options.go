package engine

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"runtime"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Defaults applied to zero fields of [Options]. The limits the codec also
// applies are the codec's own defaults, so that the two never disagree.
const (
	DefaultAddr              = ":8080"
	DefaultMaxHeaderBytes    = codec.DefaultMaxHeaderBytes
	DefaultMaxMessageSize    = codec.DefaultMaxMessageSize
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultPongTimeout       = 20 * time.Second
	DefaultWriteStallTimeout = 30 * time.Second
	DefaultCloseTimeout      = 5 * time.Second
	DefaultMaxOutboundBytes  = 4 << 20
	DefaultFDReserve         = 64
)

// Options configures a [Server]. The zero value is a safe production
// configuration: every field has a documented default, and a negative value
// disables a timeout or a limit where that is allowed.
type Options struct {
	// Addr is the address to listen on, "host:port" for TCP (a port of 0
	// picks a free one, see [Server.Addr]) or "unix:///path/to/socket".
	// Default ":8080".
	Addr string

	// EventLoops is the number of event loops. Default (zero or negative):
	// runtime.GOMAXPROCS(0), the CPUs the Go scheduler runs on. That is
	// the container's CPU limit where one is set (Go 1.25 and later) and
	// the GOMAXPROCS environment variable where that is set, not every CPU
	// of the host: a server in a 2-CPU container on a 64-core machine
	// starts 2 loops, not 64.
	EventLoops int

	// ReusePort lets several processes listen on the same port, so that
	// the kernel spreads the connections over them: the way past one
	// process's descriptor limit (docs/scaling.md). It is off by default
	// because it also lets a second process of the same user bind the port
	// and silently take a share of the connections, where it would
	// otherwise fail to start. What it does depends on the system
	// (reuseport_*.go):
	//
	//   - Linux: SO_REUSEPORT; new connections are spread over the
	//     listening sockets by a hash of their addresses.
	//   - FreeBSD: SO_REUSEPORT_LB (FreeBSD 12 and later), which spreads
	//     them as Linux does. FreeBSD's plain SO_REUSEPORT would not.
	//   - DragonFly BSD: SO_REUSEPORT, which spreads them by hash as well
	//     (FreeBSD's SO_REUSEPORT_LB was ported from it); there it is a
	//     system-wide behaviour, not chosen per socket.
	//   - macOS, NetBSD, OpenBSD: SO_REUSEPORT, which lets the processes
	//     share the port but does not spread: one listening socket gets
	//     the new connections. Useful for handing a port over to a new
	//     process, not for sharing the load.
	//   - Windows: ListenAndServe returns an error. Windows has no
	//     SO_REUSEPORT, and its SO_REUSEADDR would let any process take
	//     over the port, so no substitute is used.
	ReusePort bool

	// MaxHeaderBytes caps the size of an upgrade request header. Over it
	// the server answers 431. Default 8 KiB.
	MaxHeaderBytes int

	// MaxMessageSize caps a data message (all its fragments together). A
	// frame header announcing a length that would pass it closes the
	// connection with 1009 before the bytes are buffered. Default 16 MiB.
	MaxMessageSize int64

	// HandshakeTimeout bounds the time from accept to a complete upgrade
	// request, however slowly the bytes trickle in. Default 10 s.
	HandshakeTimeout time.Duration

	// IdleTimeout closes a connection (1001, [handler.ErrIdleTimeout]) when
	// nothing has been received from it for this long. Halfway through, the
	// server sends a ping, so a healthy but quiet peer (a browser answers
	// pings by itself) stays connected while a dead one is dropped. It also
	// bounds a frame or message kept incomplete. Default 2 min; negative
	// disables.
	IdleTimeout time.Duration

	// MessageTimeout bounds the time a data message (all its fragments) or
	// a frame header may stay incomplete, so a peer that trickles a message
	// a byte at a time cannot hold it open forever. Past it the connection
	// is closed with 1008. Default: IdleTimeout; negative disables.
	MessageTimeout time.Duration

	// PingInterval, when positive, sends a ping every interval and closes
	// the connection ([handler.ErrPongTimeout]) when no pong arrives within
	// PongTimeout (default 20 s). Default off: the idle probe above is
	// usually enough.
	PingInterval time.Duration
	PongTimeout  time.Duration

	// WriteStallTimeout closes a connection whose outbound buffer has not
	// drained at all for this long. Default 30 s; negative disables.
	WriteStallTimeout time.Duration

	// CloseTimeout bounds the wait for the peer's close frame after the
	// server sent one. Default 5 s.
	CloseTimeout time.Duration

	// MaxOutboundBytes caps the bytes one connection may hold in the
	// server's memory: written by the application and not yet accepted by
	// the kernel. The slow-consumer policy: a write that would take a
	// non-empty backlog past the cap is refused with
	// [handler.ErrSlowConsumer] and the connection is closed with 1008
	// "slow consumer", so one stuck client never grows the server's memory
	// or slows a broadcast. The cap counts bytes, not their cause: a burst
	// written from a goroutine faster than the loop can hand it to the
	// kernel counts too, even to a fast reader, so size the cap for the
	// largest burst you write at once (or pace the writer). A single
	// message larger than the cap is still accepted when nothing is queued.
	// Default 4 MiB.
	MaxOutboundBytes int

	// MaxConns caps open connections (including those still in the
	// handshake). Past it a new connection gets 503 and is closed at once
	// by the accept loop, and a rate-limited log line says so. The default
	// keeps FDReserve descriptors free under RLIMIT_NOFILE; on Windows,
	// which has no such limit, it is 4096 (gnet holds a goroutine and a 64
	// KiB buffer per connection there). Should the
	// process run out of descriptors anyway (other files, another
	// library), accepting pauses until a connection closes: the server
	// never stops for it.
	MaxConns int
	// FDReserve is the number of descriptors left for everything else in
	// the process when MaxConns is derived from RLIMIT_NOFILE. Default 64.
	// Unused on Windows.
	FDReserve int

	// MaxInboundMemory caps the memory all connections together may hold
	// for inbound messages not yet delivered: messages being assembled
	// from fragments or split reads, decompressed output, and upgrade
	// requests still arriving. A connection that needs more than is left
	// is closed with 1013 Try Again Later, and the others go on. Default 1
	// GiB, or a quarter of the Go memory limit (debug.SetMemoryLimit,
	// GOMEMLIMIT) when that is smaller; negative disables.
	MaxInboundMemory int64

	// CrashOnPanic lets a panic in an application callback unwind through
	// the event loop and end the process. By default, as net/http does,
	// the server recovers it, logs the stack, counts it in Stats.Panics
	// and closes only that connection (1011), or answers 500 to an
	// upgrade request whose hook panicked.
	CrashOnPanic bool

	// TLSConfig, when set, makes the listener serve wss://: TLS 1.2 and
	// 1.3 through the standard library's crypto/tls (certificates from
	// Certificates or GetCertificate, which may rotate them without a
	// restart). ALPN offers http/1.1 unless NextProtos is set. Handshakes
	// run on at most MaxTLSHandshakes goroutines; after it a connection
	// holds no goroutine. The handshake timeout covers the TLS handshake
	// too.
	TLSConfig *tls.Config
	// MaxTLSHandshakes caps the TLS handshakes in progress at once, each on
	// a goroutine. A client that stalls in the middle of its handshake
	// holds one until HandshakeTimeout; queued handshakes start oldest
	// first. Default 256 (DefaultMaxTLSHandshakes).
	MaxTLSHandshakes int

	// Clock is where the server reads the time. nil means the system
	// clock; tests pass one they move by hand (enginetest.Clock).
	Clock Clock

	// CheckOrigin decides whether a request's Origin is allowed. nil means
	// same-origin: a request without Origin is allowed (non-browser
	// clients), one with an Origin whose host differs from the Host header
	// is refused with 403, as gorilla/websocket's Upgrader does.
	CheckOrigin func(r *handler.Request) bool

	// Subprotocols lists the subprotocols the server speaks, in its order
	// of preference; the first one the client offered is chosen.
	Subprotocols []string

	// Fallback, when set, answers plain HTTP GET requests that are not
	// WebSocket upgrades (a page, a health check). When nil they get
	// 426 Upgrade Required.
	Fallback func(r *handler.Request) *FallbackResponse

	// Logger receives the server's log lines, gnet's included. Default
	// slog.Default().
	Logger *slog.Logger

	// TCPKeepAlive enables TCP keep-alive probes with this period.
	TCPKeepAlive time.Duration

	// ReadBufferCap is the per-loop read buffer gnet reads into: the most
	// bytes one OnTraffic sees. Default 64 KiB.
	ReadBufferCap int

	// LockOSThread pins each event loop to an operating-system thread
	// (gnet's WithLockOSThread). It may help tail latency where loops
	// share a machine with other busy goroutines; measure before keeping
	// it. Default off.
	LockOSThread bool

	// Deflate configures permessage-deflate compression (RFC 7692). Off
	// by default; see [Deflate].
	Deflate Deflate
}

// FallbackResponse is a plain HTTP response returned by [Options.Fallback].
type FallbackResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

func (o *Options) withDefaults() Options {
	c := *o
	if c.EventLoops <= 0 {
		c.EventLoops = runtime.GOMAXPROCS(0)
	}
	if c.MaxInboundMemory == 0 {
		c.MaxInboundMemory = defaultInboundMemory()
	}
	if c.MaxTLSHandshakes <= 0 {
		c.MaxTLSHandshakes = DefaultMaxTLSHandshakes
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MessageTimeout == 0 {
		c.MessageTimeout = c.IdleTimeout
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = DefaultPongTimeout
	}
	if c.WriteStallTimeout == 0 {
		c.WriteStallTimeout = DefaultWriteStallTimeout
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.MaxOutboundBytes <= 0 {
		c.MaxOutboundBytes = DefaultMaxOutboundBytes
	}
	if c.FDReserve <= 0 {
		c.FDReserve = DefaultFDReserve
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
