package engine

import (
	"encoding/binary"
	"math/bits"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsloop/wsloop/codec"
)

// Per-client limits (Options.MaxConnsPerClient, MaxHandshakesPerClient;
// docs/load-balancers.md).
//
// A client is an IPv4 address, or an IPv6 prefix (a /64 by default: what one
// subscriber usually gets, so that walking through the addresses of one's
// own /64 does not make one many clients). Its address is the PROXY
// protocol's when a trusted balancer sent one, the socket's otherwise.
//
// Where the check runs. A connection accepted from a client directly is
// checked on the accepting goroutine before it is handed to a loop, as
// MaxConns is: a refused one gets its 429 and is closed there, and costs
// the loops nothing. A connection from a trusted balancer is checked on its
// loop once its PROXY header names the client; one upgraded through
// net/http, in Upgrade once it is hijacked (the address is the socket's,
// or the PROXY header's when the listener is a ProxyListener's). A refused
// connection gets 429 Too Many Requests with Retry-After, or a plain close
// where no HTTP can be spoken (the TLS port before its handshake).
//
// The table. Per-client state lives in a map only while the client has
// connections (handshakes included) or handshakes recent enough to count
// against its rate: a client whose last connection closes is dropped at
// once when its rate allows a full burst again, or within about a second
// after, by a sweep on the server's tick. The handshake rate is a GCRA
// (the token bucket's arithmetic in one timestamp per client): a client may
// start MaxHandshakesPerClient handshakes at once, then one every
// 1/MaxHandshakesPerClient seconds. The map is split in shards with a lock
// each, so that acceptors and loops rarely wait for one another.
//
// The cap. MaxTrackedClients bounds the clients tracked, so that a flood
// from ever new addresses (an attacker with an IPv6 /48 has 65,536 /64s)
// cannot grow the table. A new client that finds its shard full first
// pushes out the client whose connections closed longest ago (it loses
// only its rate history); if every client of the shard holds open
// connections, the new one is refused with 503 and counted in
// Stats.ClientTableFull until a client leaves. Clients with open
// connections are never forgotten, so a limit cannot be escaped by
// flooding the table. The map keeps the size it grew to until the table has
// shrunk to an eighth of it; then the sweep moves it into a smaller one.

// clientKey is a client's address: IPv4 as its IPv4-mapped IPv6 form, IPv6
// masked to the client prefix.
type clientKey struct{ hi, lo uint64 }

// clientShards is the number of independently locked parts of the table.
const clientShards = 16

// clientEntry is one client's state.
type clientEntry struct {
	key   clientKey
	conns int32 // open connections, handshakes included
	// tat is the GCRA's theoretical arrival time of the client's next
	// handshake, in nanoseconds since the server started: at or before
	// now, the client may start a full burst.
	tat        int64
	prev, next *clientEntry // on the shard's idle list while conns == 0; next links the free list
}

// clientShard is one locked part of the table.
type clientShard struct {
	mu    sync.Mutex
	m     map[clientKey]*clientEntry
	peak  int         // the most entries m held since it was made
	idle  clientEntry // head of the list of entries without connections, oldest first (circular; key unused)
	free  *clientEntry
	nfree int
	_     [64]byte // keep the next shard's lock off this cache line
}

// clientTable holds the per-client state of a server.
type clientTable struct {
	maxConns  int32 // 0: no connection limit
	interval  int64 // ns between handshakes at the rate limit; 0: no rate limit
	tolerance int64 // the GCRA's burst tolerance: (burst-1)*interval
	hiMask    uint64
	loMask    uint64
	perShard  int
	tracked   atomic.Int64
	shards    [clientShards]clientShard
}

// clientVerdict is what the table says about a new connection.
type clientVerdict uint8

const (
	clientAdmitted clientVerdict = iota
	clientOverConns
	clientOverRate
	clientTableFull
)

// maxFreeEntries bounds the entries a shard keeps for reuse.
const maxFreeEntries = 64

// newClientTable returns the table for o, or nil when no per-client limit
// is set.
func newClientTable(o *Options) *clientTable {
	if o.MaxConnsPerClient <= 0 && o.MaxHandshakesPerClient <= 0 {
		return nil
	}
	t := &clientTable{perShard: (o.MaxTrackedClients + clientShards - 1) / clientShards}
	if o.MaxConnsPerClient > 0 {
		t.maxConns = int32(min(o.MaxConnsPerClient, 1<<30))
	}
	if r := o.MaxHandshakesPerClient; r > 0 {
		t.interval = int64(time.Second) / int64(r)
		t.tolerance = int64(r-1) * t.interval
	}
	b := o.ClientIPv6Prefix
	switch {
	case b <= 64:
		t.hiMask = ^uint64(0) << (64 - b)
	default:
		t.hiMask, t.loMask = ^uint64(0), ^uint64(0)<<(128-b)
	}
	for i := range t.shards {
		sh := &t.shards[i]
		sh.m = map[clientKey]*clientEntry{}
		sh.idle.prev, sh.idle.next = &sh.idle, &sh.idle
	}
	return t
}

// clientKeyOf returns the client key of a peer's address; false for a peer
// without an IP address (a Unix socket's), which is not limited.
func (t *clientTable) keyOf(a net.Addr) (clientKey, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return clientKey{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return clientKey{}, false
	}
	ip = ip.Unmap()
	b := ip.As16()
	k := clientKey{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
	if ip.Is6() {
		k.hi &= t.hiMask
		k.lo &= t.loMask
	}
	return k, true
}

func (t *clientTable) shard(k clientKey) *clientShard {
	h := (k.hi ^ bits.RotateLeft64(k.lo, 29)) * 0x9E3779B97F4A7C15
	return &t.shards[h>>(64-4)]
}

// admit counts a new connection of client k at now (ns since the server
// started), unless a limit refuses it.
func (t *clientTable) admit(k clientKey, now int64) clientVerdict { return t.add(k, now, false) }

// count counts a connection of client k that is open already (moved here
// by a handoff), past any limit: refusing it would close a connection the
// deploy promised to keep. Its handshake was paid for in the old process,
// so the rate is not charged. With no client without connections to push
// out, the entry takes a shard past its share of MaxTrackedClients; every
// such entry holds an open connection, so the excess is bounded by the
// connections moved.
func (t *clientTable) count(k clientKey, now int64) { t.add(k, now, true) }

// add is admit, and count when moved.
func (t *clientTable) add(k clientKey, now int64, moved bool) clientVerdict {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[k]
	if e == nil {
		if len(sh.m) >= t.perShard {
			sh.sweep(t, now)
			if len(sh.m) >= t.perShard {
				if old := sh.idle.next; old != &sh.idle {
					sh.drop(t, old) // the client whose connections closed longest ago
				} else if !moved {
					return clientTableFull
				}
			}
		}
		e = sh.alloc()
		e.key = k
		sh.m[k] = e
		sh.peak = max(sh.peak, len(sh.m))
		t.tracked.Add(1)
	} else if !moved && t.maxConns > 0 && e.conns >= t.maxConns {
		return clientOverConns
	}
	if t.interval > 0 && !moved {
		tat := max(e.tat, now)
		if tat-now > t.tolerance {
			return clientOverRate // (a new entry never is: its tat is 0)
		}
		e.tat = tat + t.interval
	}
	if e.conns == 0 && e.prev != nil {
		sh.idleRemove(e)
	}
	e.conns++
	return clientAdmitted
}

// release uncounts a connection of client k that closed at now.
func (t *clientTable) release(k clientKey, now int64) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[k]
	if e == nil || e.conns <= 0 {
		return // cannot happen: an entry with connections is never dropped
	}
	e.conns--
	if e.conns > 0 {
		return
	}
	if e.tat <= now {
		sh.drop(t, e)
		return
	}
	sh.idleAppend(e)
}

// sweep drops the clients without connections whose handshake history no
// longer counts, and shrinks maps that a flood grew. Called every tick.
func (t *clientTable) sweep(now int64) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		sh.sweep(t, now)
		if sh.peak > 1024 && len(sh.m) < sh.peak/8 {
			m := make(map[clientKey]*clientEntry, len(sh.m))
			for k, e := range sh.m {
				m[k] = e
			}
			sh.m, sh.peak = m, len(m)
		}
		sh.mu.Unlock()
	}
}

// sweep drops expired entries from the head of the idle list: O(expired).
// An entry's history expires at most a second after it became idle (its
// tat is then at most tolerance+interval ahead), so the list, kept in the
// order entries became idle, is nearly in expiry order too.
func (sh *clientShard) sweep(t *clientTable, now int64) {
	for e := sh.idle.next; e != &sh.idle && e.tat <= now; e = sh.idle.next {
		sh.drop(t, e)
	}
}

func (sh *clientShard) idleAppend(e *clientEntry) {
	e.prev, e.next = sh.idle.prev, &sh.idle
	sh.idle.prev.next = e
	sh.idle.prev = e
}

func (sh *clientShard) idleRemove(e *clientEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

// drop forgets an entry without connections.
func (sh *clientShard) drop(t *clientTable, e *clientEntry) {
	if e.prev != nil {
		sh.idleRemove(e)
	}
	delete(sh.m, e.key)
	t.tracked.Add(-1)
	if sh.nfree < maxFreeEntries {
		*e = clientEntry{next: sh.free}
		sh.free = e
		sh.nfree++
	}
}

func (sh *clientShard) alloc() *clientEntry {
	if e := sh.free; e != nil {
		sh.free, e.next = e.next, nil
		sh.nfree--
		return e
	}
	return new(clientEntry)
}

// Refusals of the per-client limits: the responses written before a
// request was read (at accept, or after a PROXY header), and the errors of
// Upgrade. Retry-After: a client over its rate may try again within the
// second; one over its connection count when one of them closes, which
// the server cannot know, so it suggests the same pause as at MaxConns.
var (
	errClientConns = &codec.HandshakeError{Status: http.StatusTooManyRequests,
		Reason: "too many connections from your address", Header: http.Header{"Retry-After": {"5"}}}
	errClientRate = &codec.HandshakeError{Status: http.StatusTooManyRequests,
		Reason: "too many new connections from your address, slow down", Header: http.Header{"Retry-After": {"1"}}}
	errClientTable = &codec.HandshakeError{Status: http.StatusServiceUnavailable,
		Reason: "server tracking too many client addresses, try again later", Header: http.Header{"Retry-After": {"1"}}}

	clientConnsResponse = codec.AppendReject(nil, errClientConns)
	clientRateResponse  = codec.AppendReject(nil, errClientRate)
	clientTableResponse = codec.AppendReject(nil, errClientTable)
)

// sinceStart returns the server's clock in nanoseconds since it started,
// the time base of the client table.
func (s *Server) sinceStart() int64 { return int64(s.clock.Now().Sub(s.start)) }

// admitClient checks a new connection from peer against the per-client
// limits. It returns the verdict (refusals counted and logged) and whether
// the connection is now counted, until releaseClient: a peer without an IP
// address (a Unix socket's) is neither limited nor counted. Safe from any
// goroutine.
func (s *Server) admitClient(peer net.Addr) (v clientVerdict, counted bool) {
	k, ok := s.clients.keyOf(peer)
	if !ok {
		return clientAdmitted, false
	}
	if v = s.clients.admit(k, s.sinceStart()); v != clientAdmitted {
		s.clientRefused(v, peer)
		return v, false
	}
	return clientAdmitted, true
}

var clientResponses = [...][]byte{clientOverConns: clientConnsResponse, clientOverRate: clientRateResponse, clientTableFull: clientTableResponse}

// clientRefused counts and logs, at most once a second, a connection the
// per-client limits refused.
func (s *Server) clientRefused(v clientVerdict, peer net.Addr) {
	var he *codec.HandshakeError
	var label string
	switch v {
	case clientOverConns:
		s.stats.clientConns.Add(1)
		he, label = errClientConns, rejectClientConns
	case clientOverRate:
		s.stats.clientRate.Add(1)
		he, label = errClientRate, rejectClientRate
	default:
		s.stats.clientTable.Add(1)
		he, label = errClientTable, rejectClientTable
	}
	s.stats.reject(he.Status, label)
	if ok, n := s.stats.clientLog.allow(s.clock, time.Second); ok {
		s.log.Warn("wsloop: per-client limit reached, refusing connections", "limit", label, "client", peer,
			"max_conns_per_client", s.opts.MaxConnsPerClient, "max_handshakes_per_client", s.opts.MaxHandshakesPerClient,
			"refused_since_last_log", n)
	}
}

// countMoved counts a connection a handoff moved here under the client it
// was counted under before (wc.peerAddr: the PROXY header's client, or the
// socket's peer), so that the limits hold across a deploy. A dialed
// connection, or one from a trusted balancer that named no client, is not
// a client's and is not counted. Loop only (restored).
func (s *Server) countMoved(wc *wsConn) {
	if s.clients == nil || wc.has(sClient) {
		return
	}
	if in := wc.infoOrNil(); (in == nil || in.remote == nil) && s.proxyTrusted(wc.c.RemoteAddr()) {
		return
	}
	if k, ok := s.clients.keyOf(wc.peerAddr()); ok {
		s.clients.count(k, s.sinceStart())
		wc.set(sTracked, true)
	}
}

// releaseClient uncounts a closed connection that admitClient counted. peer
// must be the address it was admitted under. Loop only (closed).
func (s *Server) releaseClient(peer net.Addr) {
	if k, ok := s.clients.keyOf(peer); ok {
		s.clients.release(k, s.sinceStart())
	}
}
