package engine

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/netip"
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

	// EventLoops is the number of event loops. Default: one per CPU.
	EventLoops int

	// ReusePort sets SO_REUSEPORT on the listening socket, so that several
	// processes can listen on the same port and the kernel spreads the
	// connections over them: the way past one process's descriptor limit
	// (docs/scaling.md). It is off by default because it also lets a
	// second process of the same user bind the port and silently take a
	// share of the connections, where it would otherwise fail to start.
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
	// keeps FDReserve descriptors free under RLIMIT_NOFILE. Should the
	// process run out of descriptors anyway (other files, another
	// library), accepting pauses until a connection closes: the server
	// never stops for it.
	MaxConns int
	// FDReserve is the number of descriptors left for everything else in
	// the process when MaxConns is derived from RLIMIT_NOFILE. Default 64.
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

	// Behind a load balancer: the PROXY protocol and per-client limits
	// (docs/load-balancers.md). All off by default.

	// ProxyProtocol lists the networks of the load balancers that begin
	// each connection with a PROXY protocol header (HAProxy's send-proxy
	// or send-proxy-v2, AWS NLB's proxy protocol v2, Envoy's
	// proxy_protocol). A connection from one of them must begin with a
	// version 1 or 2 header, read before the TLS handshake (wss) and the
	// upgrade request and bounded by HandshakeTimeout; RemoteAddr and
	// LocalAddr then report the client's addresses and the one it
	// connected to, handler.Request.Proxy carries the header (its TLVs
	// included), and the per-client limits count the client. A LOCAL or
	// UNKNOWN header (a balancer's health check) keeps the real
	// addresses. A connection from such a network with a missing,
	// malformed, truncated or oversized header (a v2 header is capped at
	// MaxHeaderBytes) is closed, counted in Stats.ProxyRefused and logged
	// once a second at most. Connections from anywhere else are served
	// directly, and a header from one of them is refused with 400 (or a
	// close on the TLS port): only a trusted peer may say who the client
	// is. On a Unix socket every peer is trusted. For a net/http server,
	// see [Server.ProxyListener]. Default nil: no header is read.
	ProxyProtocol []netip.Prefix

	// MaxConnsPerClient caps the open connections of one client address
	// (see ClientIPv6Prefix), handshakes included. Past it a new
	// connection gets 429 Too Many Requests with Retry-After (a TLS port
	// behind a PROXY balancer: a close), is counted in
	// Stats.ClientConnLimited and logged once a second at most. It is
	// checked before the socket reaches a loop, so a refused flood costs
	// no more than its accept; for a connection from a trusted balancer,
	// once its PROXY header named the client. Default 0: no limit;
	// negative values are invalid.
	MaxConnsPerClient int
	// MaxHandshakesPerClient caps the handshakes (new connections) one
	// client address may start per second: a burst of this many, then one
	// every 1/MaxHandshakesPerClient seconds. Past it: 429 with
	// Retry-After: 1, Stats.ClientRateLimited, a log line at most once a
	// second. Default 0: no limit; negative values are invalid.
	MaxHandshakesPerClient int
	// ClientIPv6Prefix is the length of the IPv6 prefix that counts as
	// one client for the per-client limits; IPv4 addresses count one by
	// one. Default 64 (what one subscriber usually gets); 128 counts
	// every IPv6 address apart. Values over 128 are invalid.
	ClientIPv6Prefix int
	// MaxTrackedClients caps the client addresses the per-client limits
	// track at once, so that a flood from ever new addresses cannot grow
	// their table (about 100 bytes a client). A client is tracked while
	// it has connections or handshakes in the last second. At the cap a
	// new client pushes out one without connections; when every tracked
	// client has connections, a new one is refused with 503 and counted
	// in Stats.ClientTableFull. Default 1,048,576
	// (DefaultMaxTrackedClients); size it above the number of distinct
	// addresses you expect to hold connections at once.
	MaxTrackedClients int
}

// DefaultMaxTrackedClients is Options.MaxTrackedClients when it is zero.
const DefaultMaxTrackedClients = 1 << 20

// FallbackResponse is a plain HTTP response returned by [Options.Fallback].
type FallbackResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

func (o *Options) withDefaults() Options {
	c := *o
	if c.EventLoops <= 0 {
		c.EventLoops = runtime.NumCPU()
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
	if c.MaxConnsPerClient < 0 {
		c.MaxConnsPerClient = 0
	}
	if c.MaxHandshakesPerClient < 0 {
		c.MaxHandshakesPerClient = 0
	}
	if c.ClientIPv6Prefix <= 0 {
		c.ClientIPv6Prefix = 64
	}
	c.ClientIPv6Prefix = min(c.ClientIPv6Prefix, 128)
	if c.MaxTrackedClients <= 0 {
		c.MaxTrackedClients = DefaultMaxTrackedClients
	}
	return c
}
