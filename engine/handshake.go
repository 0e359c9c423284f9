package engine

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// The opening handshake (RFC 6455 §4.2): the upgrade request parsed from
// gnet's buffer as it arrives, checked, shown to the application, and
// answered with 101 or with an HTTP error and a reason. Loop only.

var timeoutResponse = codec.AppendResponse(nil, http.StatusRequestTimeout, nil, []byte("upgrade request not completed in time\n"))

func (wc *wsConn) handshake() gnet.Action {
	c := wc.c
	lp := wc.lp
	s := lp.srv
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
		return wc.reject(codec.ErrRequestTooLarge)
	}
	if n == 0 {
		x = wc.extra()
		x.hs, x.hsSaved = hs, true
		if !s.chargeHeader(x, len(buf)) {
			s.stats.reject(http.StatusServiceUnavailable, rejectBusy)
			return wc.respond(busyResponse)
		}
		return gnet.None // the handshake timer bounds the wait
	}
	if x != nil {
		x.hsSaved = false
		s.releaseHeader(x)
	}
	var r codec.Request
	if err := codec.ParseRequest(buf[:n], &r); err != nil {
		he := err.(*codec.HandshakeError)
		if he.NotWebSocket && s.opts.Fallback != nil && (string(r.Method) == http.MethodGet || string(r.Method) == http.MethodHead) {
			resp, ok := s.callFallback(wc, &r)
			if !ok {
				return wc.reject(errPanicked)
			}
			if resp != nil {
				body := resp.Body
				if string(r.Method) == http.MethodHead {
					body = nil
				}
				out := codec.AppendResponse(lp.scratch[:0], resp.Status, resp.Header, body)
				lp.scratch = out[:0]
				return wc.respond(out)
			}
		}
		return wc.reject(he)
	}

	var req *handler.Request
	if s.opts.CheckOrigin != nil {
		req = s.request(&r, wc)
		allowed, ok := s.callCheckOrigin(wc, req)
		if !ok {
			return wc.reject(errPanicked)
		}
		if !allowed {
			return wc.reject(errOrigin)
		}
	} else if !sameOrigin(r.Origin, r.Host) {
		return wc.reject(errOrigin)
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
		if err := s.callUpgrade(wc, req, res); err != nil {
			var he *handler.HTTPError
			switch {
			case errors.Is(err, errPanicked):
				return wc.reject(errPanicked)
			case errors.As(err, &he):
				return wc.reject(&codec.HandshakeError{Status: he.Status, Reason: he.Reason, Header: he.Header})
			}
			return wc.reject(&codec.HandshakeError{Status: http.StatusForbidden, Reason: err.Error()})
		}
	}

	ext := s.negotiateDeflate(wc, &r) // permessage-deflate (deflate.go): nil when off or not offered
	out := codec.AppendAccept(lp.scratch[:0], r.Key, res.Subprotocol, ext, res.Header)
	lp.scratch = out[:0]
	var info *connInfo
	if string(r.Path) != "/" || len(r.RawQuery) > 0 || res.Subprotocol != "" {
		info = &connInfo{subprotocol: res.Subprotocol, path: string(r.Path), rawQuery: string(r.RawQuery)}
	}
	if !wc.write(out) {
		return gnet.None
	}
	_, _ = c.Discard(n)

	wc.mu.Lock()
	wc.setPhase(phaseOpen)
	wc.setContextLocked(res.Context)
	if info != nil {
		wc.extra().info = info
	}
	wc.mu.Unlock()
	wc.set(sHandlerRan, true)
	s.stats.open.Add(1)
	s.stats.upgraded.Add(1)
	lp.wheel.disarm(wc)
	wc.msgStart = 0
	wc.pingAt = lp.now
	wc.armTimer()

	wc.beginCallbacks()
	s.callOpen(wc)
	wc.endCallbacks()
	if c.InboundBuffered() > 0 && wc.phase() == phaseOpen {
		return wc.frames() // a frame pipelined behind the request
	}
	return gnet.None
}

var (
	errOrigin    = &codec.HandshakeError{Status: http.StatusForbidden, Reason: "origin not allowed"}
	errPanicked  = &codec.HandshakeError{Status: http.StatusInternalServerError, Reason: "internal server error"}
	busyResponse = codec.AppendResponse(nil, http.StatusServiceUnavailable, http.Header{"Retry-After": {"5"}}, []byte(busyReason+"\n"))
)

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

// reject answers a failed handshake with its status and reason, counts it
// under a label from a fixed set, then ends the connection.
func (wc *wsConn) reject(he *codec.HandshakeError) gnet.Action {
	s := wc.lp.srv
	s.stats.reject(he.Status, rejectLabel(he))
	s.log.Debug("wsloop: upgrade rejected", "remote", wc.c.RemoteAddr(), "status", he.Status, "reason", he.Reason)
	out := codec.AppendReject(wc.lp.scratch[:0], he)
	wc.lp.scratch = out[:0]
	return wc.respond(out)
}

// respond writes an HTTP response in the handshake phase and ends the
// connection.
func (wc *wsConn) respond(resp []byte) gnet.Action {
	if wc.write(resp) {
		wc.linger()
	}
	return gnet.None
}

// handshakeTimedOut answers a request that did not arrive in time.
func (wc *wsConn) handshakeTimedOut() {
	s := wc.lp.srv
	wc.lp.stats.timeouts.Add(1)
	s.stats.reject(http.StatusRequestTimeout, rejectTimeout)
	wc.respond(timeoutResponse)
}
