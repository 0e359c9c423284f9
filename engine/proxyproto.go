package engine

import (
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/codec"
)

// The PROXY protocol on the engine's listener (Options.ProxyProtocol,
// docs/load-balancers.md).
//
// A load balancer in TCP mode (AWS NLB, HAProxy, Envoy) opens its own
// connection to the server, so the socket's peer is the balancer. With the
// PROXY protocol on, it begins that connection with a header that names the
// client (codec/proxy.go). A connection whose peer is in one of the trusted
// networks starts in phaseProxy: the loop reads the header from gnet's
// buffer as it arrives (ParseProxyHeader says "incomplete" or fails at
// once), under the handshake timer that runs from accept, so a header that
// trickles in costs no more than a request that does. Once it is whole the
// connection reports the client's addresses, the per-client limits count
// it under the client's address, and it goes on to the TLS handshake (wss)
// or the upgrade request with whatever followed the header in the same
// read. A connection from a trusted network that sends anything else, or a
// malformed, truncated or oversized header, is closed: it is the balancer
// misbehaving, and the protocol's specification wants the connection
// dropped (proxy-protocol.txt §2.1). A connection from anywhere else is
// served as it is, and a header it sends is refused (400, or a close on
// the TLS port): only a trusted peer may say who the client is.
//
// Where the addresses go. A connection's addresses live in gnet's
// connection, which wsloop already rewrites (gnetconn.go); the client's
// replace the balancer's there, so a proxied idle connection costs nothing
// more than a direct one. Where gnet's fields are not found, they go in the
// connection's connInfo instead, as a bridged connection's do.

// Labels of Stats.ProxyRefused.
const (
	proxyMissing   = "missing"   // a trusted peer sent no header
	proxyMalformed = "malformed" // a header that breaks the protocol's rules
	proxyOversized = "oversized" // v1 without its CRLF in 107 bytes, v2 over MaxHeaderBytes
	proxyTruncated = "truncated" // the peer closed in the middle of its header
	proxyTimeout   = "timeout"   // the header was not complete within HandshakeTimeout
	proxyUntrusted = "untrusted" // a header from a peer outside Options.ProxyProtocol
	proxyLabels    = 6
)

var proxyLabelNames = [proxyLabels]string{proxyMissing, proxyMalformed, proxyOversized, proxyTruncated, proxyTimeout, proxyUntrusted}

// proxyCounters are the PROXY protocol's counters, by label index.
type proxyCounters struct {
	accepted atomic.Int64
	refused  [proxyLabels]atomic.Int64
}

func (pc *proxyCounters) count(label string) {
	for i, l := range proxyLabelNames {
		if l == label {
			pc.refused[i].Add(1)
			return
		}
	}
}

// proxyErrLabel sorts a parse error into its label.
func proxyErrLabel(err error) string {
	switch err {
	case codec.ErrNoProxyHeader:
		return proxyMissing
	case codec.ErrProxyTooLarge:
		return proxyOversized
	}
	return proxyMalformed
}

var untrustedProxyResponse = codec.AppendResponse(nil, http.StatusBadRequest, nil,
	[]byte("PROXY protocol header from an address not trusted to send one\n"))

// proxyTrusted reports whether a peer may send a PROXY protocol header: its
// address is in one of Options.ProxyProtocol's networks. A Unix socket's
// peer has no address: it is trusted, since the socket's permissions already
// decide who may connect (a balancer on the same host).
func (s *Server) proxyTrusted(a net.Addr) bool {
	if len(s.opts.ProxyProtocol) == 0 {
		return false
	}
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.UnixAddr:
		return true
	default:
		return false
	}
	ip = ip.Unmap()
	for _, p := range s.opts.ProxyProtocol {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// proxyRefused counts a connection refused for its PROXY protocol header
// (or its lack of one) and logs it, at most once a second.
func (s *Server) proxyRefused(label string, peer net.Addr, err error) {
	s.stats.proxy.count(label)
	if ok, n := s.stats.proxyLog.allow(s.clock, time.Second); ok {
		s.log.Warn("wsloop: PROXY protocol header refused, connection closed", "reason", label, "peer", peer, "err", err, "refused_since_last_log", n)
	}
}

// proxyTCPAddr returns the address a header gave, as gnet keeps one: a
// *net.TCPAddr without a zone, IPv4 in 4 bytes (an IPv4-mapped IPv6
// address is the IPv4 client it stands for).
func proxyTCPAddr(ap netip.AddrPort) *net.TCPAddr {
	a := ap.Addr().Unmap()
	return &net.TCPAddr{IP: a.AsSlice(), Port: int(ap.Port())}
}

// proxyTraffic reads the PROXY protocol header of a connection from a
// trusted peer, then hands what follows it to the TLS handshake or the
// upgrade request. Loop only.
func (wc *wsConn) proxyTraffic() gnet.Action {
	lp := wc.lp
	s := lp.srv
	buf, _ := wc.c.Peek(-1)
	var h codec.ProxyHeader
	n, err := codec.ParseProxyHeader(buf, s.opts.MaxHeaderBytes, &h)
	if err != nil {
		s.proxyRefused(proxyErrLabel(err), wc.c.RemoteAddr(), err)
		wc.setPhase(phaseFailing) // counted: not "truncated" as well when it closes
		return gnet.Close
	}
	if n == 0 {
		return gnet.None // the handshake timer bounds the wait
	}
	s.stats.proxy.accepted.Add(1)
	proxied := h.Proxied() && (h.Family == codec.ProxyTCP4 || h.Family == codec.ProxyTCP6)
	if proxied {
		wc.setPeer(proxyTCPAddr(h.Source), proxyTCPAddr(h.Destination))
	}
	if s.wantsRequest() {
		// For OnUpgrade (handler.Request.Proxy): kept off the connection,
		// which would keep it for life, until the handshake is done.
		if lp.proxyHdrs == nil {
			lp.proxyHdrs = map[*wsConn]*codec.ProxyHeader{}
		}
		lp.proxyHdrs[wc] = h.Clone()
	}
	_, _ = wc.c.Discard(n) // n > 0
	// The limits count the client, not the balancer. A LOCAL header (the
	// balancer's own health check) is not a client's.
	if s.clients != nil && proxied {
		v, counted := s.admitClient(wc.peerAddr())
		if v != clientAdmitted {
			wc.setPhase(phaseHandshake) // an HTTP answer, written as the handshake's are
			if s.tlsConf != nil {
				return gnet.Close // no TLS yet: nothing to answer in
			}
			return wc.respond(clientResponses[v])
		}
		wc.set(sTracked, counted)
	}
	if s.tlsConf != nil {
		wc.tlsStart()
		if wc.c.InboundBuffered() > 0 {
			return wc.tlsHandshakeTraffic(wc.tls())
		}
		return gnet.None
	}
	wc.setPhase(phaseHandshake)
	if wc.c.InboundBuffered() > 0 {
		return wc.handshake()
	}
	return gnet.None
}

// wantsRequest reports whether the application sees upgrade requests (and
// so their PROXY protocol headers): an Upgrader, an AsyncUpgrader,
// CheckOrigin or Fallback.
func (s *Server) wantsRequest() bool {
	return s.up != nil || s.async != nil || s.opts.CheckOrigin != nil || s.opts.Fallback != nil
}

// setPeer makes the connection report remote and local as its addresses:
// in gnet's connection when its fields were found (no memory more), else
// in the connection's info. Loop only, before OnOpen.
func (wc *wsConn) setPeer(remote, local *net.TCPAddr) {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if proxyAddrsInGnet && wc.lp.setGnetAddrs(wc.c, remote, local) {
		return
	}
	info := &connInfo{path: "/"}
	if wc.aux != nil && wc.aux.info != nil {
		*info = *wc.aux.info // a copy: the loop's may be shared (info.go)
	}
	info.remote, info.local = remote, local
	wc.setInfoLocked(info)
}

// proxyAddrsInGnet lets a test take the connInfo road that a gnet release
// without the expected fields would take.
var proxyAddrsInGnet = true

// untrustedProxy refuses a PROXY protocol header from a peer outside the
// trusted networks, if buf (the first bytes of the connection) begins with
// one. Loop only.
func (wc *wsConn) untrustedProxy(buf []byte) bool {
	s := wc.lp.srv
	if len(s.opts.ProxyProtocol) == 0 || !codec.HasProxySignature(buf) {
		return false
	}
	s.proxyRefused(proxyUntrusted, wc.c.RemoteAddr(), nil)
	return true
}
