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
// frames leave in the order of the calls. A write after the connection
// closed returns [ErrClosed] and never reaches any socket.
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
	// sends the final frame. Other messages must not be sent on the
	// connection until Close is called.
	NextWriter(op Op) (io.WriteCloser, error)
	// Ping sends a ping with up to 125 bytes of application data.
	Ping(data []byte) error
	// Pong sends an unsolicited or answering pong with up to 125 bytes.
	Pong(data []byte) error
	// Close starts the closing handshake with the given code and reason
	// (reason is cut to fit 123 bytes). The connection stays readable until
	// the peer answers or the close timeout passes; then OnClose runs.
	Close(code uint16, reason string) error

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

// Request describes an upgrade request to an [Upgrader]. It is valid only
// during the OnUpgrade call; copy what you need to keep (for example into the
// Context of the [UpgradeResponse]).
type Request struct {
	// Method is the HTTP method, always GET once validation passed.
	Method string
	// Path is the path of the request target, e.g. "/chat".
	Path string
	// RawQuery is the query of the request target, without the '?'.
	RawQuery string
	// Host is the value of the Host header.
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
	// RemoteAddr is the peer's address.
	RemoteAddr net.Addr
}

// UpgradeResponse is what an [Upgrader] decides for an accepted request.
type UpgradeResponse struct {
	// Subprotocol is the subprotocol to answer with. The server preselects
	// the first offered protocol that appears in its configured list; the
	// hook may change it to any of r.Protocols or to "".
	Subprotocol string
	// Header holds extra header lines for the 101 response.
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
	Status int
	Reason string
	// Header holds extra response headers, e.g. WWW-Authenticate.
	Header http.Header
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("wsloop: upgrade rejected: %d %s", e.Status, e.Reason)
}

// Reject returns an *[HTTPError] for an [Upgrader] to return.
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
	// ErrCloseTimeout ends a connection whose peer did not answer a close
	// frame in time.
	ErrCloseTimeout = errors.New("wsloop: close handshake timed out")
	// ErrShutdown is reported when the server stopped before the close
	// handshake completed.
	ErrShutdown = errors.New("wsloop: server shut down")
	// ErrTooLarge is returned by writes of control frames over 125 bytes.
	ErrTooLarge = errors.New("wsloop: control frame payload over 125 bytes")
)
