// Package handler is the contract between a wsloop server and the application:
// the [Handler] callbacks the server invokes for each connection, the [Conn] the
// application writes to, and the types those two share.
//
// # Threading
//
// Every callback runs on the event loop that owns the connection. An event loop
// serves thousands of connections, so a callback must not block: no network or
// disk I/O, no database calls, no sleeping, no waiting on a channel or a mutex
// that another slow goroutine holds. Hand blocking work to your own goroutine
// or worker pool and write the result back with the [Conn] methods, which are
// safe from any goroutine.
//
// A panic in a callback does not take the server down: by default the
// server recovers it as net/http recovers a handler's, logs the stack,
// closes that connection with 1011 (OnClose still runs once) and serves
// the others on; a panic in OnUpgrade answers the request with 500.
//
// # Buffer lifetimes
//
// The data slice passed to OnMessage, OnPing and OnPong aliases the server's
// read buffers and is valid only until the callback returns, like the slice
// returned by bufio.Reader.Peek. Copy it to keep it. Slices passed to the write
// methods of [Conn] may be reused by the caller as soon as the method returns.
package handler

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/wsloop/wsloop/codec"
)

// Op is a WebSocket message type. Only [Text] and [Binary] are delivered to
// OnMessage; control frames have their own callbacks.
type Op = codec.OpCode

// Message types.
const (
	Text   = codec.OpText
	Binary = codec.OpBinary
)

// Handler receives the events of every connection of a server.
//
// OnOpen runs once, after the handshake succeeded. OnClose runs exactly once
// for every connection whose OnOpen ran, whatever ended it, unless the
// connection moved to a successor process ([Mover]: OnMoved runs instead).
// Between the two, OnMessage, OnPing and OnPong run in the order the peer
// sent the frames.
// All callbacks of one connection run on the same event loop goroutine and
// never concurrently with each other.
type Handler interface {
	// OnOpen is called when the WebSocket handshake has completed.
	OnOpen(c Conn)
	// OnMessage is called with each complete data message. data is valid only
	// until OnMessage returns.
	OnMessage(c Conn, op Op, data []byte)
	// OnPing is called with the payload of each ping. If the handler does not
	// answer (see [Base]), the server does not either: implementations that
	// take over pings must call c.Pong themselves.
	OnPing(c Conn, data []byte)
	// OnPong is called with the payload of each pong.
	OnPong(c Conn, data []byte)
	// OnClose is called once when the connection is gone. err is a
	// *[CloseError] when a close frame was exchanged (the peer's code and
	// reason, or the code the server sent on a protocol error, limit or
	// shutdown), or another error that says why the TCP connection ended
	// without one (for example [ErrIdleTimeout] or io.EOF).
	OnClose(c Conn, err error)
}

// Base implements [Handler] with no-op callbacks, except OnPing, which answers
// every ping with a pong carrying the same payload as RFC 6455 §5.5.2
// requires. Embed it to implement only the callbacks you need.
type Base struct{}

// OnOpen does nothing.
func (Base) OnOpen(Conn) {}

// OnMessage does nothing.
func (Base) OnMessage(Conn, Op, []byte) {}

// OnPing answers with a pong that carries the same application data.
func (Base) OnPing(c Conn, data []byte) { _ = c.Pong(data) }

// OnPong does nothing.
func (Base) OnPong(Conn, []byte) {}

// OnClose does nothing.
func (Base) OnClose(Conn, error) {}

// Conn is one WebSocket connection as the application sees it.
//
// All methods are safe to call from any goroutine. A write encodes its frame
// into the connection's queue and returns: inside a callback of this
// connection, the frames queued during the callbacks of one read go out
// together when they return (one system call); from any other goroutine,
// the connection's event loop writes them at its next turn. Either way the
// frames leave in the order of the calls, and the calls of one goroutine
// keep their order with its broadcasts (engine.Server.Broadcast) too. No
// write blocks, and a message is never interleaved with another (see
// NextWriter). A write after the connection closed returns [ErrClosed] and
// never reaches any socket.
type Conn interface {
	// WriteMessage sends data as one message of type op ([Text] or
	// [Binary]). The caller may reuse data once WriteMessage returns. It
	// returns [ErrSlowConsumer] (and closes the connection with 1008) when
	// the connection's outbound buffer is over its cap.
	WriteMessage(op Op, data []byte) error
	// WritePrepared sends a frame encoded once with [codec.NewPreparedFrame];
	// the same prepared frame may go to any number of connections.
	WritePrepared(f *codec.PreparedFrame) error
	// NextWriter returns a writer that sends one message of type op as a
	// sequence of fragments: each Write call becomes one frame, and Close
	// sends the final frame. The message stays whole whoever else writes
	// (RFC 6455 §5.4): from its first fragment to its final frame, other
	// messages (WriteMessage, WritePrepared, a broadcast, another
	// NextWriter) are queued behind it, never waited for, and follow it in
	// the order of their calls; pings, pongs and a close may go between
	// its fragments. Queued bytes count against the outbound cap, and
	// writes held longer than the write-stall timeout close the connection
	// with 1008 and [ErrMessageStalled], so always Close the writer. The
	// writer itself is not safe for concurrent use.
	NextWriter(op Op) (io.WriteCloser, error)
	// Ping sends a ping with up to 125 bytes of application data.
	Ping(data []byte) error
	// Pong sends an unsolicited or answering pong with up to 125 bytes.
	Pong(data []byte) error
	// Close starts the closing handshake with the given code and reason
	// (reason is cut to fit 123 bytes). A code that may not be sent on the
	// wire (codec.ValidCloseCode: anything but 1000-1003, 1007-1014 and
	// 3000-4999) is replaced by 1000 Normal Closure. The
	// connection stays readable until the peer answers or the close
	// timeout passes; then OnClose runs. Close returns [ErrClosed] if the
	// connection is closing already.
	Close(code uint16, reason string) error

	// Backlog returns the bytes written to the connection that the kernel
	// has not taken yet: queued by wsloop (pending, held behind an open
	// message, waiting behind broadcasts) plus the event loop's outbound
	// buffer as of the loop's last look. 0 once the connection closed.
	Backlog() int
	// NotifyBacklog arranges for f to run once, on the connection's event
	// loop, as soon as the backlog is at most mark bytes: at once if it is
	// already, or when the peer has read enough. It also runs when the
	// connection closes, so a producer waiting on it is never stranded
	// (its next write then returns [ErrClosed]). A later call replaces one
	// that has not run. f must not block: signal a goroutine, as with
	// close(ch). With it a producer waits for a slow reader instead of
	// filling the outbound cap.
	NotifyBacklog(mark int, f func())
	// PauseReading stops reading from the connection: no OnMessage (not
	// even for a message already received whole), no control frame
	// answered; what the peer sends waits in the kernel, whose receive
	// window then stops the peer. No goroutine waits anywhere. While
	// paused, the timeouts that wait for input (idle, message, pong) are
	// suspended; they restart at ResumeReading. Writes go on as usual.
	// Called from a callback of this connection, it takes effect before
	// the next message is delivered. Safe from any goroutine; pausing a
	// paused connection does nothing.
	PauseReading()
	// ResumeReading reads again, starting with what waited.
	ResumeReading()

	// Context returns the value set by SetContext or by the upgrade hook.
	Context() any
	// SetContext attaches an application value to the connection.
	SetContext(v any)

	// RemoteAddr returns the peer's address.
	RemoteAddr() net.Addr
	// LocalAddr returns the local address the peer connected to.
	LocalAddr() net.Addr
	// Subprotocol returns the subprotocol chosen during the handshake, or "".
	Subprotocol() string
	// Path returns the request path of the upgrade request, e.g. "/ws".
	Path() string
	// RawQuery returns the query of the upgrade request without the '?'.
	RawQuery() string
}

// Request describes an HTTP request the server received: an upgrade request
// to an [Upgrader] (OnUpgrade, or OnUpgradeAsync until its decide is
// called), to the server's origin check (engine.Options.CheckOrigin), or a
// plain GET to its fallback (engine.Options.Fallback). It is valid only
// during that call; copy what you need to keep (for example into the
// Context of the [UpgradeResponse]).
type Request struct {
	// Method is the HTTP method, always GET once validation passed.
	Method string
	// Path is the path of the request target, e.g. "/chat".
	Path string
	// RawQuery is the query of the request target, without the '?'.
	RawQuery string
	// Host is the host the request is for: the Host header, or, for a
	// request-target in absolute form ("GET http://host/path"), the
	// target's host, which RFC 9112 §3.2.2 says a server uses instead.
	// The default origin check compares Origin with it. The Host line as
	// sent is in Header.
	Host string
	// Origin is the value of the Origin header, or "" when absent.
	Origin string
	// Header holds every header line of the request with canonical keys.
	Header http.Header
	// Protocols lists the subprotocols the client offered, in its order of
	// preference.
	Protocols []string
	// Extensions lists the extension offers as the client sent them, e.g.
	// "permessage-deflate; client_max_window_bits".
	Extensions []string
	// RemoteAddr is the peer's address: the client's, as a PROXY protocol
	// header announced it, when the server reads one.
	RemoteAddr net.Addr
	// Proxy is the PROXY protocol header the connection began with, when
	// the server reads them (engine.Options.ProxyProtocol) and the peer is
	// a trusted load balancer; nil otherwise. Its TLVs (version 2) carry
	// what the balancer knows: Proxy.Authority() is the TLS server name the
	// client asked the balancer for, for example. Like the Request, it is
	// valid only during the call.
	Proxy *codec.ProxyHeader
}

// UpgradeResponse is what an [Upgrader] decides for an accepted request.
type UpgradeResponse struct {
	// Subprotocol is the subprotocol to answer with. The server preselects
	// the first offered protocol that appears in its configured list; the
	// hook may change it to any of r.Protocols or to "". A value that is
	// not a token (RFC 6455 §4.1) makes the server answer 500 instead
	// (and log why).
	Subprotocol string
	// Header holds extra header lines for the 101 response. Nothing in it
	// can write a header line of its own: a control character in a value
	// (CR, LF, NUL...) is replaced by a space, as net/http's Header.Write
	// does, a field whose name is not an RFC 9110 token is dropped, and so
	// are the fields the handshake writes itself: Upgrade, Connection,
	// Sec-WebSocket-Accept, -Protocol (set Subprotocol instead) and
	// -Extensions, and Content-Length and Transfer-Encoding, which a 101
	// never carries. The server logs each change, rate-limited.
	Header http.Header
	// Context becomes the connection's Context before OnOpen runs.
	Context any
}

// Upgrader is an optional interface a [Handler] may implement to see each
// upgrade request before it is accepted: route on the path, check auth or the
// Origin, choose the subprotocol, attach per-connection state. Returning an
// error rejects the request: a *[HTTPError] with its status and reason, any
// other error with 403 Forbidden. OnUpgrade runs on the event loop: it must
// not block either. res is reused for the next request once OnUpgrade
// returns: set its fields, do not keep the pointer.
type Upgrader interface {
	OnUpgrade(r *Request, res *UpgradeResponse) error
}

// AsyncUpgrader is an optional interface a [Handler] may implement instead of
// [Upgrader] when deciding on an upgrade takes blocking work: a session or
// token looked up in a database, a call to a rate-limit service.
// OnUpgradeAsync runs on the event loop and must not block either; it hands
// the work to a goroutine of its own, which calls decide once, from any
// goroutine, when it knows: decide(res, nil) accepts the request with res
// (nil: the defaults), decide(nil, err) rejects it as an error returned
// by OnUpgrade would. Until then the connection waits in the handshake,
// holding no goroutine of the server's; if decide has not been called when
// the handshake timeout passes, the client gets 503 and later calls of
// decide do nothing. r stays valid until decide is called. A handler that
// implements both interfaces is asked through OnUpgradeAsync only.
type AsyncUpgrader interface {
	OnUpgradeAsync(r *Request, decide func(res *UpgradeResponse, err error))
}

// HTTPError rejects an upgrade with an HTTP status and a reason that is sent
// to the client as the response body.
type HTTPError struct {
	// Status is the response's status; one outside 200-599 is sent as
	// 500.
	Status int
	// Reason is the body, one line: a control character in it becomes a
	// space.
	Reason string
	// Header holds extra response headers, e.g. WWW-Authenticate, by the
	// same rules as [UpgradeResponse].Header: control characters in
	// values become spaces, and fields whose names are not tokens are
	// dropped, as are Content-Length and Transfer-Encoding (the server
	// frames the body). Each change is logged, rate-limited.
	Header http.Header
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("wsloop: upgrade rejected: %d %s", e.Status, e.Reason)
}

// Reject returns an *[HTTPError] for an [Upgrader] to return. The response
// is written as the [HTTPError] fields say: no reason or status can forge
// a header line.
func Reject(status int, reason string) error { return &HTTPError{Status: status, Reason: reason} }

// StreamHandler is an optional interface a [Handler] may implement to receive
// data messages as they arrive instead of whole: the server then never
// assembles a message in memory. OnMessageChunk is called one or more times
// per message, first set on the first chunk and final on the last (a small
// message may come as a single chunk with both set). Chunks of text messages
// are already checked to be valid UTF-8 so far, but a chunk may end in the
// middle of a multi-byte character. chunk is valid only until the call
// returns. When a handler implements StreamHandler, OnMessage is not called.
type StreamHandler interface {
	OnMessageChunk(c Conn, op Op, chunk []byte, first, final bool)
}

// Mover is an optional interface of a [Handler] whose connections may move
// to a successor process during a deploy (engine.Server.HandOff): the
// socket and its WebSocket state go to the new process, and the peer sees
// no close, no reconnect and no lost or repeated message. A connection
// whose handler does not implement Mover stays in the old process and is
// drained with the others that cannot move.
type Mover interface {
	// OnMove runs on the connection's event loop when the connection is
	// about to leave this process, at a message boundary in both
	// directions. It returns the connection's application state, which
	// the successor's [Restorer] gets. It must not block. An error (or a
	// panic) keeps the connection here.
	OnMove(c Conn) (state []byte, err error)
	// OnMoved runs instead of OnClose once the successor owns the
	// connection: the peer is still connected, to the other process, so
	// forget the connection without telling anyone it left. Writes on c
	// return ErrClosed from OnMove on.
	OnMoved(c Conn)
}

// Restorer is an optional interface of the [Handler] of a process that
// takes connections over from its predecessor (engine.TakeOver).
type Restorer interface {
	// OnRestore runs on the event loop in place of OnOpen for a connection
	// that moved here, with the state its old process's [Mover] returned.
	// It returns the connection's handler (nil: this server's) and its
	// Context. It must not block. An error (or a panic) closes the
	// connection with 1012 Service Restart. Messages the peer sent
	// during the move are delivered after it returns. Without a
	// Restorer, OnOpen runs instead.
	OnRestore(c Conn, state []byte) (h Handler, ctx any, err error)
}

// CloseError reports the close frame that ended a connection.
type CloseError struct {
	// Code is the close status code (RFC 6455 §7.4), 1005 when the close
	// frame carried none.
	Code uint16
	// Reason is the UTF-8 reason text, possibly empty.
	Reason string
	// Remote is true when the peer sent this close first, false when the
	// server initiated it (protocol error, limit, timeout, Close, shutdown).
	Remote bool
}

func (e *CloseError) Error() string {
	who := "server"
	if e.Remote {
		who = "peer"
	}
	if e.Reason == "" {
		return fmt.Sprintf("wsloop: closed by %s with %d", who, e.Code)
	}
	return fmt.Sprintf("wsloop: closed by %s with %d: %s", who, e.Code, e.Reason)
}

// Errors reported by [Conn] methods and to OnClose.
var (
	// ErrClosed is returned by writes on a connection that is closing or
	// closed.
	ErrClosed = errors.New("wsloop: connection closed")
	// ErrSlowConsumer is returned when a write would push the connection's
	// outbound buffer past its cap; the connection is closed with 1008.
	ErrSlowConsumer = errors.New("wsloop: slow consumer: outbound buffer over its cap")
	// ErrIdleTimeout ends a connection that received nothing for the idle
	// timeout.
	ErrIdleTimeout = errors.New("wsloop: idle timeout")
	// ErrMessageTimeout ends a connection that kept a message or a frame
	// header incomplete for too long.
	ErrMessageTimeout = errors.New("wsloop: message not completed in time")
	// ErrPongTimeout ends a connection that did not answer a server ping in
	// time.
	ErrPongTimeout = errors.New("wsloop: pong timeout")
	// ErrWriteStall ends a connection whose outbound data did not drain for
	// the write-stall timeout.
	ErrWriteStall = errors.New("wsloop: write stalled")
	// ErrMessageStalled ends a connection (1008) whose writes waited longer
	// than the write-stall timeout behind a fragmented message that was not
	// finished: a NextWriter that was never closed.
	ErrMessageStalled = errors.New("wsloop: data held behind an unfinished fragmented message past the write-stall timeout")
	// ErrCloseTimeout ends a connection whose peer did not answer a close
	// frame in time.
	ErrCloseTimeout = errors.New("wsloop: close handshake timed out")
	// ErrShutdown is reported when the server stopped before the close
	// handshake completed.
	ErrShutdown = errors.New("wsloop: server shut down")
	// ErrPausedOverflow ends a paused connection (1008) on a platform
	// where reads cannot be paused at the poller, once what it sent
	// meanwhile passes the bound that keeps its memory finite.
	ErrPausedOverflow = errors.New("wsloop: paused connection sent more than its read bound")
	// ErrTooLarge is returned by writes of control frames over 125 bytes.
	ErrTooLarge = errors.New("wsloop: control frame payload over 125 bytes")
)
