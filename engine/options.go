package engine

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"time"

	"github.com/klauspost/compress/flate"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Defaults applied to zero fields of [Options] and [Deflate]: every default
// of the engine is declared here. The limits the codec also applies are the
// codec's own defaults, so that the two never disagree.
const (
	DefaultMaxHeaderBytes    = codec.DefaultMaxHeaderBytes
	DefaultMaxMessageSize    = codec.DefaultMaxMessageSize
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultPongTimeout       = 20 * time.Second
	DefaultWriteStallTimeout = 30 * time.Second
	DefaultCloseTimeout      = 5 * time.Second
	DefaultMaxOutboundBytes  = 4 << 20
	DefaultFDReserve         = 64
	DefaultMaxTLSHandshakes  = 256
	DefaultReadBufferCap     = 64 << 10
	DefaultClientIPv6Prefix  = 64
	DefaultMaxTrackedClients = 1 << 20

	// DefaultDeflateThreshold is Deflate.Threshold's default.
	DefaultDeflateThreshold = 128
	// DefaultDeflateLevel is Deflate.Level's default: flate.BestSpeed.
	DefaultDeflateLevel = flate.BestSpeed
	// DefaultTakeoverWindow is Deflate.TakeoverWindow's default. On JSON
	// messages of 256 B to 16 KiB it compresses to within 1-11% of a full
	// 32 KiB window at a quarter to a half of its CPU per message. A
	// compressor of the connection's own (0.8 MB) would be cheaper per
	// message still, 1.3x at 16 KiB to 5x at 256 B, for 200 times the
	// memory (BenchmarkDeflateTakeoverWindow).
	DefaultTakeoverWindow = 4 << 10
)

// Options configures a [Server]. The zero value is a safe production
// configuration of a server without a listener of its own (the net/http
// road); set Addr to listen.
//
// One rule holds for every number in Options and [Deflate]: zero means the
// field's default (each field names it; the constants are the Default*
// above), and a negative value turns a limit or a timeout off where off
// has a meaning, as each such field says. Anywhere else a negative value is
// invalid, and [Start] returns an error naming the field before it listens.
type Options struct {
	// Addr is the address to listen on, "host:port" for TCP (a port of 0
	// picks a free one, see [Server.Addr]) or "unix:///path/to/socket".
	// Empty (the default): no listener of its own; connections arrive
	// through [Server.Upgrade] and [Server.Dial].
	Addr string

	// Listener, when set, is served instead of binding Addr (which must
	// then be empty): a listener from systemd's socket activation, or one
	// a test made. The server takes it over and closes it when it stops.
	Listener net.Listener

	// EventLoops is the number of event loops. Default:
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
	// the server answers 431. Default 8 KiB (DefaultMaxHeaderBytes).
	MaxHeaderBytes int

	// MaxMessageSize caps a data message (all its fragments together). A
	// frame header announcing a length that would pass it closes the
	// connection with 1009 before the bytes are buffered. Default 16 MiB
	// (DefaultMaxMessageSize); negative: no limit but MaxInboundMemory.
	MaxMessageSize int64

	// HandshakeTimeout bounds the time from accept to a complete upgrade
	// request, however slowly the bytes trickle in, the TLS handshake
	// included. Default 10 s (DefaultHandshakeTimeout); it cannot be
	// turned off.
	HandshakeTimeout time.Duration

	// IdleTimeout closes a connection (1001, [handler.ErrIdleTimeout]) when
	// nothing has been received from it for this long. Halfway through, the
	// server sends a ping, so a healthy but quiet peer (a browser answers
	// pings by itself) stays connected while a dead one is dropped. It also
	// bounds a frame or message kept incomplete. Default 2 min
	// (DefaultIdleTimeout); negative: off.
	IdleTimeout time.Duration

	// MessageTimeout bounds the time a data message (all its fragments) or
	// a frame header may stay incomplete, so a peer that trickles a message
	// a byte at a time cannot hold it open forever. Past it the connection
	// is closed with 1008. Default: IdleTimeout; negative: off.
	MessageTimeout time.Duration

	// PingInterval, when positive, sends a ping every interval and closes
	// the connection ([handler.ErrPongTimeout]) when no pong arrives within
	// PongTimeout. Default (zero) and negative: off; the idle probe above
	// is usually enough.
	PingInterval time.Duration
	// PongTimeout is how long a PingInterval ping may go unanswered.
	// Default 20 s (DefaultPongTimeout).
	PongTimeout time.Duration

	// WriteStallTimeout closes a connection whose outbound buffer has not
	// drained at all for this long ([handler.ErrWriteStall]), and one
	// whose data has waited this long behind a fragmented message that
	// was never finished (1008, [handler.ErrMessageStalled]; see
	// [handler.Conn]'s NextWriter). Default 30 s
	// (DefaultWriteStallTimeout); negative: off.
	WriteStallTimeout time.Duration

	// CloseTimeout bounds the wait for the peer's close frame after the
	// server sent one, and a drain's grace when the context given to
	// Start ends. Default 5 s (DefaultCloseTimeout).
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
	// Default 4 MiB (DefaultMaxOutboundBytes); negative: no cap.
	MaxOutboundBytes int

	// MaxConns caps open connections (including those still in the
	// handshake). Past it a new connection gets 503 and is closed at once
	// by the accept loop, and a rate-limited log line says so. The default
	// keeps FDReserve descriptors free under RLIMIT_NOFILE; on Windows,
	// which has no such limit, it is 4096 (gnet holds a goroutine and a 64
	// KiB buffer per connection there). Should the
	// process run out of descriptors anyway (other files, another
	// library), accepting pauses until a connection closes: the server
	// never stops for it. Negative: no cap but the descriptors.
	MaxConns int
	// FDReserve is the number of descriptors left for everything else in
	// the process when MaxConns is derived from RLIMIT_NOFILE. Default 64
	// (DefaultFDReserve). Unused on Windows.
	FDReserve int

	// MaxInboundMemory caps the memory all connections together may hold
	// for inbound messages not yet delivered: messages being assembled
	// from fragments or split reads, decompressed output, and upgrade
	// requests still arriving. A connection that needs more than is left
	// is closed with 1013 Try Again Later, and the others go on. Default 1
	// GiB, or a quarter of the Go memory limit (debug.SetMemoryLimit,
	// GOMEMLIMIT) when that is smaller; negative: off.
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

	// TCPKeepAlive enables TCP keep-alive probes with this period, on
	// accepted and dialed connections. Default (zero) and negative: off;
	// the idle timeout's ping finds dead peers without it.
	TCPKeepAlive time.Duration

	// ReadBufferCap is the per-loop read buffer gnet reads into: the most
	// bytes one OnTraffic sees. Default 64 KiB (DefaultReadBufferCap).
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
	// once its PROXY header named the client. Default (zero) and
	// negative: no limit.
	MaxConnsPerClient int
	// MaxHandshakesPerClient caps the handshakes (new connections) one
	// client address may start per second: a burst of this many, then one
	// every 1/MaxHandshakesPerClient seconds. Past it: 429 with
	// Retry-After: 1, Stats.ClientRateLimited, a log line at most once a
	// second. Default (zero) and negative: no limit.
	MaxHandshakesPerClient int
	// ClientIPv6Prefix is the length of the IPv6 prefix that counts as
	// one client for the per-client limits; IPv4 addresses count one by
	// one. Default 64 (DefaultClientIPv6Prefix, what one subscriber
	// usually gets); 128 counts every IPv6 address apart. Negative values
	// and values over 128 are invalid.
	ClientIPv6Prefix int
	// MaxTrackedClients caps the client addresses the per-client limits
	// track at once, so that a flood from ever new addresses cannot grow
	// their table (about 100 bytes a client). A client is tracked while
	// it has connections or handshakes in the last second. At the cap a
	// new client pushes out one without connections; when every tracked
	// client has connections, a new one is refused with 503 and counted
	// in Stats.ClientTableFull. Default 1,048,576
	// (DefaultMaxTrackedClients); size it above the number of distinct
	// addresses you expect to hold connections at once. Negative values
	// are invalid.
	MaxTrackedClients int
}

// FallbackResponse is a plain HTTP response returned by [Options.Fallback].
// It is sent with Content-Length and "Connection: close".
type FallbackResponse struct {
	// Status is the status code. One outside 200-599 is sent as 500 (a
	// 1xx, above all a 101, would tell a proxy that the connection
	// changed protocols or that the answer is still to come); a 204 or
	// 304 is sent without a body.
	Status int
	// Header holds the response's header fields. Nothing in it can
	// write a header line of its own: a control character in a value
	// (CR, LF, NUL...) is replaced by a space, as net/http's Header.Write
	// does, and a field whose name is not an RFC 9110 token is dropped,
	// as are Content-Length and Transfer-Encoding (the server frames the
	// body itself). Each such change is logged, rate-limited. Copying
	// request data into a header is thus safe from response splitting,
	// though not from whatever the value means (a redirect's Location
	// still goes where it says).
	Header http.Header
	// Body is the response body; a HEAD request gets none.
	Body []byte
}

// validate checks the fields where a negative value (or a combination) is
// invalid, so that Start can refuse them before it listens.
func (o *Options) validate() error {
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("wsloop: Options.%s = %v: %s", field, v, why)
	}
	if o.Addr != "" && o.Listener != nil {
		return errors.New("wsloop: Options.Addr and Options.Listener are both set: give one")
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"EventLoops", int64(o.EventLoops)},
		{"MaxHeaderBytes", int64(o.MaxHeaderBytes)},
		{"HandshakeTimeout", int64(o.HandshakeTimeout)},
		{"PongTimeout", int64(o.PongTimeout)},
		{"CloseTimeout", int64(o.CloseTimeout)},
		{"FDReserve", int64(o.FDReserve)},
		{"MaxTLSHandshakes", int64(o.MaxTLSHandshakes)},
		{"ReadBufferCap", int64(o.ReadBufferCap)},
		{"Deflate.ContextTakeoverBudget", o.Deflate.ContextTakeoverBudget},
		{"ClientIPv6Prefix", int64(o.ClientIPv6Prefix)},
		{"MaxTrackedClients", int64(o.MaxTrackedClients)},
	} {
		if f.v < 0 {
			return bad(f.name, f.v, "must not be negative (zero means the default)")
		}
	}
	if o.ClientIPv6Prefix > 128 {
		return bad("ClientIPv6Prefix", o.ClientIPv6Prefix, "must be at most 128")
	}
	if l := o.Deflate.Level; l != 0 && (l < flate.HuffmanOnly || l > flate.BestCompression) {
		return bad("Deflate.Level", l, "must be a flate level: -2 (HuffmanOnly), -1 (DefaultCompression), 1 to 9, or 0 for the default")
	}
	if w := o.Deflate.TakeoverWindow; w != 0 && (w < 256 || w > codec.DeflateWindow) {
		return bad("Deflate.TakeoverWindow", w, "must be 256 to 32768, or 0 for the default")
	}
	return nil
}

// withDefaults returns o with every zero field set to its default. Negative
// values stay: the code that applies a limit or timeout reads them as off.
func (o *Options) withDefaults() Options {
	c := *o
	if c.EventLoops == 0 {
		c.EventLoops = runtime.GOMAXPROCS(0)
	}
	if c.MaxInboundMemory == 0 {
		c.MaxInboundMemory = defaultInboundMemory()
	}
	if c.MaxTLSHandshakes == 0 {
		c.MaxTLSHandshakes = DefaultMaxTLSHandshakes
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MessageTimeout == 0 {
		c.MessageTimeout = c.IdleTimeout
	}
	if c.PongTimeout == 0 {
		c.PongTimeout = DefaultPongTimeout
	}
	if c.WriteStallTimeout == 0 {
		c.WriteStallTimeout = DefaultWriteStallTimeout
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.MaxOutboundBytes == 0 {
		c.MaxOutboundBytes = DefaultMaxOutboundBytes
	}
	if c.FDReserve == 0 {
		c.FDReserve = DefaultFDReserve
	}
	if c.ReadBufferCap == 0 {
		c.ReadBufferCap = DefaultReadBufferCap
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ClientIPv6Prefix == 0 {
		c.ClientIPv6Prefix = DefaultClientIPv6Prefix
	}
	if c.MaxTrackedClients == 0 {
		c.MaxTrackedClients = DefaultMaxTrackedClients
	}
	// Deflate's zero fields are read through its accessors (deflate.go),
	// which apply the same defaults.
	return c
}
