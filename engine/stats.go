package engine

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/wsloop/wsloop/codec"
)

// Stats is a snapshot of a server's counters, for logs and metrics. Every
// map in it has keys from a fixed set, never from text a client controls,
// so that a metrics exporter's series stay bounded.
type Stats struct {
	// Open is the number of open WebSocket connections (past the
	// handshake: counted once the 101 is handed to the socket, before OnOpen
	// runs, and uncounted before OnClose runs); Conns counts
	// connections holding a descriptor, handshakes and closes in
	// progress included.
	Open, Conns int64
	// Accepted counts TCP connections accepted since start, refused ones
	// included.
	Accepted int64
	// Upgraded counts successful handshakes, those of Dial included.
	Upgraded int64
	// Dialed counts the connections opened by Dial.
	Dialed int64
	// Rejected counts refused upgrade requests by "STATUS label", for
	// example "403 origin" or "503 connection limit". The labels are a
	// fixed set:
	//   - "malformed request": HTTP/1.1 syntax (RFC 9112): the request
	//     line, the request-target, a header line (obs-fold, whitespace
	//     before a colon, a control character in a name or a value), an
	//     invalid Host;
	//   - "duplicate header": a second Host, Origin, Sec-WebSocket-Key or
	//     Sec-WebSocket-Version;
	//   - "request body": Transfer-Encoding, or a Content-Length but 0;
	//   - "bad request": a missing Host, a Connection header without the
	//     upgrade token, an invalid Sec-WebSocket-Key;
	//   - "method", "http version", "not websocket", "websocket version",
	//     "header too large", "origin", "handshake timeout", "connection
	//     limit", "shutting down", "inbound memory", "application" (an
	//     Upgrader's rejection, whatever its reason), "panic", "client
	//     connections", "client handshake rate", "client table full" (the
	//     per-client limits) and "other".
	Rejected map[string]int64
	// MessagesIn/Out and BytesIn/Out count data messages and their payload
	// bytes (out: frame bytes written).
	MessagesIn, MessagesOut int64
	BytesIn, BytesOut       int64
	// ClosesByCode counts the close frames the server sent, by code:
	// protocol errors, limits, timeouts, the slow-consumer policy,
	// Conn.Close, drains and the answers to the peers' closes. Codes
	// 1000-1015 are counted as themselves, 3000-3999 under 3000,
	// 4000-4999 under 4000 (a peer chooses the code the server echoes),
	// anything else under 0.
	ClosesByCode map[uint16]int64
	// SlowConsumers counts connections dropped by the outbound cap;
	// Timeouts counts connections closed by a handshake, idle, message,
	// pong, close or write-stall timeout.
	SlowConsumers, Timeouts int64
	// Panics counts application callbacks that panicked and were
	// recovered (see Options.CrashOnPanic).
	Panics int64
	// AcceptErrors counts accepts that failed for want of descriptors or
	// memory, and sockets that could not be handed to an event loop.
	AcceptErrors int64
	// InboundBytes is the memory held now for inbound messages not yet
	// delivered, as charged to Options.MaxInboundMemory; InboundRefused
	// counts the times the budget refused to grow.
	InboundBytes, InboundRefused int64
	// TLSHandshakes counts completed TLS handshakes (wss://), and
	// TLSFailures failed ones and broken TLS streams by a fixed set of
	// labels: "timeout", "closed" (the client left), "not tls" (plain
	// HTTP on the TLS port), "no common parameters", "certificate",
	// "oversized record", "oversized handshake", "inbound memory",
	// "unexpected message", "bad record" and "other".
	TLSHandshakes int64
	TLSFailures   map[string]int64
	// Deflate holds the permessage-deflate counters.
	Deflate DeflateStats

	// Behind a load balancer: the PROXY protocol and the per-client
	// limits (docs/load-balancers.md).
	//
	// ProxyHeaders counts the PROXY protocol headers accepted
	// (Options.ProxyProtocol, and ProxyListener's connections), and
	// ProxyRefused the connections closed for theirs, by a fixed set of
	// labels: "missing" (a trusted peer sent something else), "malformed",
	// "oversized", "truncated" (the peer closed in the middle of it),
	// "timeout" (not complete within HandshakeTimeout) and "untrusted" (a
	// header from a peer outside Options.ProxyProtocol).
	ProxyHeaders int64
	ProxyRefused map[string]int64
	// ClientConnLimited and ClientRateLimited count the connections
	// refused by Options.MaxConnsPerClient and MaxHandshakesPerClient,
	// ClientTableFull those refused because MaxTrackedClients clients
	// all had open connections. They are also in Rejected ("429 client
	// connections", "429 client handshake rate", "503 client table
	// full"), those closed without an answer on a TLS port included.
	// TrackedClients is the number of clients the limits track now.
	ClientConnLimited, ClientRateLimited, ClientTableFull int64
	TrackedClients                                        int64
	// MovedOut counts connections handed to a successor process
	// (HandOff), MovedIn those taken over from a predecessor
	// (Takeover.Restore) and restored; they are not counted in Upgraded.
	MovedOut, MovedIn int64
}

// Reject labels (see Stats.Rejected).
const (
	rejectBadRequest   = "bad request"
	rejectMalformed    = "malformed request"
	rejectDuplicate    = "duplicate header"
	rejectBody         = "request body"
	rejectMethod       = "method"
	rejectHTTPVersion  = "http version"
	rejectNotWebSocket = "not websocket"
	rejectVersion      = "websocket version"
	rejectTooLarge     = "header too large"
	rejectOrigin       = "origin"
	rejectTimeout      = "handshake timeout"
	rejectConnLimit    = "connection limit"
	rejectShutdown     = "shutting down"
	rejectBusy         = "inbound memory"
	rejectApp          = "application"
	rejectPanic        = "panic"
	rejectOther        = "other"
	rejectClientConns  = "client connections"
	rejectClientRate   = "client handshake rate"
	rejectClientTable  = "client table full"
)

// rejectLabel returns the label of a handshake rejection.
func rejectLabel(he *codec.HandshakeError) string {
	switch he {
	case codec.ErrBadRequestLine, codec.ErrBadTarget, codec.ErrBadHeaderLine, codec.ErrHeaderSpace, codec.ErrObsFold,
		codec.ErrHeaderValue, codec.ErrBadHost:
		return rejectMalformed
	case codec.ErrDuplicateHost, codec.ErrDuplicateOrigin, codec.ErrDuplicateKey, codec.ErrDuplicateVersion:
		return rejectDuplicate
	case codec.ErrRequestBody:
		return rejectBody
	case codec.ErrNoHost, codec.ErrConnection, codec.ErrKey:
		return rejectBadRequest
	case codec.ErrMethod:
		return rejectMethod
	case codec.ErrHTTPVersion:
		return rejectHTTPVersion
	case codec.ErrNotWebSocket:
		return rejectNotWebSocket
	case codec.ErrVersion:
		return rejectVersion
	case codec.ErrRequestTooLarge:
		return rejectTooLarge
	case errOrigin:
		return rejectOrigin
	case errPanicked:
		return rejectPanic
	}
	return rejectApp // built from the Upgrader's error
}

// loopStats are the counters of one loop, kept apart so that loops never
// contend on a shared cache line in the message path.
type loopStats struct {
	messagesIn, messagesOut atomic.Int64
	bytesIn, bytesOut       atomic.Int64
	slowConsumers, timeouts atomic.Int64
	_                       [64]byte
}

// Close code buckets of serverStats.closes.
const (
	closeBucket3000  = 16
	closeBucket4000  = 17
	closeBucketOther = 18
	closeBuckets     = 19
)

// serverStats holds the server-wide counters.
type serverStats struct {
	conns         atomic.Int64 // connections holding a descriptor: the budget against maxConns
	open          atomic.Int64 // connections past the handshake
	accepted      atomic.Int64
	upgraded      atomic.Int64
	dialed        atomic.Int64
	acceptErrors  atomic.Int64
	panics        atomic.Int64
	closes        [closeBuckets]atomic.Int64
	tlsHandshakes atomic.Int64
	movedOut      atomic.Int64
	movedIn       atomic.Int64

	rmu         sync.Mutex
	rejected    map[string]int64 // keys: "STATUS label", bounded
	tlsFailures map[string]int64 // keys: tlsFailureLabel's, bounded

	limitLog, acceptLog, panicLog rateLimited

	// The PROXY protocol and the per-client limits (proxyproto.go, clients.go).
	proxy                                proxyCounters
	clientConns, clientRate, clientTable atomic.Int64
	proxyLog, clientLog                  rateLimited
	headerLog                            rateLimited // response header fields dropped or rewritten
}

func (st *serverStats) init() {
	st.rejected = map[string]int64{}
	st.tlsFailures = map[string]int64{}
}

// reject counts a refused request. status is clamped to a valid HTTP status
// so that an application's own statuses cannot grow the key set either.
func (st *serverStats) reject(status int, label string) {
	if status < 100 || status > 599 {
		status, label = 0, rejectOther
	}
	key := strconv.Itoa(status) + " " + label
	st.rmu.Lock()
	st.rejected[key]++
	st.rmu.Unlock()
}

// countClose counts a close frame the server sent.
func (st *serverStats) countClose(code uint16) {
	var i int
	switch {
	case code >= 1000 && code <= 1015:
		i = int(code - 1000)
	case code >= 3000 && code <= 3999:
		i = closeBucket3000
	case code >= 4000 && code <= 4999:
		i = closeBucket4000
	default:
		i = closeBucketOther
	}
	st.closes[i].Add(1)
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Open:           s.stats.open.Load(),
		Conns:          s.stats.conns.Load(),
		Accepted:       s.stats.accepted.Load(),
		Upgraded:       s.stats.upgraded.Load(),
		Dialed:         s.stats.dialed.Load(),
		Panics:         s.stats.panics.Load(),
		AcceptErrors:   s.stats.acceptErrors.Load(),
		InboundBytes:   s.inbound.used.Load(),
		InboundRefused: s.inbound.refused.Load(),
		Rejected:       map[string]int64{},
		ClosesByCode:   map[uint16]int64{},
		TLSHandshakes:  s.stats.tlsHandshakes.Load(),
		TLSFailures:    map[string]int64{},
		Deflate: DeflateStats{
			Negotiated: s.defl.negotiated.Load(),
			Takeover:   s.defl.takeover.Load(),
			BudgetUsed: s.defl.used.Load(),
			Downgraded: s.defl.downgraded.Load(),
		},
		MovedOut: s.stats.movedOut.Load(),
		MovedIn:  s.stats.movedIn.Load(),
	}
	for _, lp := range s.loopList() {
		st.MessagesIn += lp.stats.messagesIn.Load()
		st.MessagesOut += lp.stats.messagesOut.Load()
		st.BytesIn += lp.stats.bytesIn.Load()
		st.BytesOut += lp.stats.bytesOut.Load()
		st.SlowConsumers += lp.stats.slowConsumers.Load()
		st.Timeouts += lp.stats.timeouts.Load()
	}
	s.stats.rmu.Lock()
	for k, v := range s.stats.rejected {
		st.Rejected[k] = v
	}
	for k, v := range s.stats.tlsFailures {
		st.TLSFailures[k] = v
	}
	s.stats.rmu.Unlock()
	st.ProxyHeaders = s.stats.proxy.accepted.Load()
	st.ProxyRefused = map[string]int64{}
	for i, l := range proxyLabelNames {
		if n := s.stats.proxy.refused[i].Load(); n > 0 {
			st.ProxyRefused[l] = n
		}
	}
	st.ClientConnLimited = s.stats.clientConns.Load()
	st.ClientRateLimited = s.stats.clientRate.Load()
	st.ClientTableFull = s.stats.clientTable.Load()
	if s.clients != nil {
		st.TrackedClients = s.clients.tracked.Load()
	}
	for i := range s.stats.closes {
		n := s.stats.closes[i].Load()
		if n == 0 {
			continue
		}
		var code uint16
		switch i {
		case closeBucket3000:
			code = 3000
		case closeBucket4000:
			code = 4000
		case closeBucketOther:
			code = 0
		default:
			code = 1000 + uint16(i)
		}
		st.ClosesByCode[code] = n
	}
	return st
}
