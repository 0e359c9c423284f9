package engine

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// The opening handshake (RFC 6455 §4.2): the upgrade request parsed from
// gnet's buffer as it arrives, checked, shown to the application, and
// answered with 101 or with an HTTP error and a reason. Loop only.

var timeoutResponse = codec.AppendResponse(nil, http.StatusRequestTimeout, nil, []byte("upgrade request not completed in time\n"))

func (wc *wsConn) handshake() gnet.Action {
	lp := wc.lp
	s := lp.srv
	buf, carried := wc.in()
	x := wc.x.Load()
	if x != nil && x.deciding {
		// An AsyncUpgrader is deciding: hold what else arrives (a frame
		// pipelined behind the request) until it has, charged.
		wc.consumed(buf, carried, 0)
		if !s.chargeHeader(x, len(buf)) {
			x.deciding = false
			s.stats.reject(http.StatusServiceUnavailable, rejectBusy)
			return wc.respond(busyResponse)
		}
		return gnet.None
	}
	// Most requests arrive in one read: scan with a scanner on the stack
	// and keep its position in the connection's extra state only when the
	// header is not complete yet.
	hs := codec.HeaderScanner{Max: s.opts.MaxHeaderBytes}
	if x != nil && x.hsSaved {
		hs = x.hs
	} else if wc.untrustedProxy(buf) {
		// A PROXY protocol header from a peer not trusted to send one
		// (proxyproto.go): say so, rather than "malformed request line".
		return wc.respond(untrustedProxyResponse)
	}
	n, err := hs.Scan(buf)
	if err != nil {
		return wc.reject(codec.ErrRequestTooLarge)
	}
	if n == 0 {
		x = wc.extra()
		x.hs, x.hsSaved = hs, true
		wc.consumed(buf, carried, 0) // keep it all, carried bytes included
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
				s.checkResponse("Options.Fallback", resp.Status, resp.Header)
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
	if s.async != nil {
		if req == nil {
			req = s.request(&r, wc)
		}
		x = wc.extra()
		x.deciding = true
		wc.consumed(buf, carried, 0)
		if !s.chargeHeader(x, len(buf)) {
			x.deciding = false
			s.stats.reject(http.StatusServiceUnavailable, rejectBusy)
			return wc.respond(busyResponse)
		}
		if err := s.callUpgradeAsync(wc, req, wc.decider()); err != nil {
			x.deciding = false
			return wc.reject(errPanicked)
		}
		return gnet.None // decided: the task queued by decide takes it from here
	}
	// The response lives in the loop, not on the stack: passing it to the
	// Upgrader through an interface would move it to the heap on every
	// handshake, hook or not.
	res := &lp.upRes
	*res = handler.UpgradeResponse{}
	defer func() { *res = handler.UpgradeResponse{} }() // hold no references
	res.Subprotocol = s.preferredSubprotocol(&r)
	if s.up != nil {
		if req == nil {
			req = s.request(&r, wc)
		}
		if err := s.callUpgrade(wc, req, res); err != nil {
			return wc.rejectErr(err)
		}
	}
	return wc.accept(buf, carried, n, &r, res)
}

// preferredSubprotocol returns the first subprotocol the client offered
// that the server speaks (Options.Subprotocols), or "".
func (s *Server) preferredSubprotocol(r *codec.Request) string {
	sub := ""
	if len(s.opts.Subprotocols) > 0 {
		r.Protocols(func(p []byte) bool {
			for _, sp := range s.opts.Subprotocols {
				if string(p) == sp {
					sub = sp
					return false
				}
			}
			return true
		})
	}
	return sub
}

// accept completes an accepted handshake: it answers 101, opens the
// connection, runs OnOpen and decodes what was pipelined behind the
// request, which is the first n bytes of the input (buf, carried).
func (wc *wsConn) accept(buf []byte, carried, n int, r *codec.Request, res *handler.UpgradeResponse) gnet.Action {
	lp := wc.lp
	s := lp.srv
	if !s.checkUpgradeResponse("the upgrade hook", res.Subprotocol, res.Header) {
		return wc.reject(errBadSubprotocol)
	}
	ext := s.negotiateDeflate(wc, r) // permessage-deflate (deflate.go): nil when off or not offered
	out := codec.AppendAccept(lp.scratch[:0], r.Key, res.Subprotocol, ext, res.Header)
	lp.scratch = out[:0]
	info := lp.infoFor(res.Subprotocol, r.Path, r.RawQuery)
	if !wc.write(out) {
		return gnet.None
	}
	wc.consumed(buf, carried, n)
	wc.open(info, res.Context)
	if wc.inputLeft() && wc.phase() == phaseOpen {
		return wc.frames() // a frame pipelined behind the request
	}
	return gnet.None
}

// open moves a connection past its handshake and runs OnOpen. Loop only.
func (wc *wsConn) open(info *connInfo, ctx any) {
	lp := wc.lp
	s := lp.srv
	wc.mu.Lock()
	wc.setPhase(phaseOpen)
	wc.setContextLocked(ctx)
	if wc.aux != nil && wc.aux.info != nil && wc.aux.info.remote != nil {
		// Addresses set before the handshake stay: a PROXY protocol
		// header's (proxyproto.go), or a bridged connection's client
		// (tls.go). They are this connection's, so its connInfo is a
		// copy of the loop's shared one (info.go).
		old := wc.aux.info
		mine := connInfo{path: "/"}
		if info != nil {
			mine = *info
		}
		mine.remote, mine.local = old.remote, old.local
		info = &mine
	}
	wc.setInfoLocked(info)
	wc.mu.Unlock()
	if lp.proxyHdrs != nil {
		delete(lp.proxyHdrs, wc) // OnUpgrade has seen it
	}
	wc.set(sHandlerRan, true)
	s.stats.open.Add(1)
	s.stats.upgraded.Add(1)
	lp.wheel.disarm(wc)
	wc.acceptOrMsgAt = 0
	wc.pingOrCloseAt = lp.now
	wc.armTimer()

	wc.beginCallbacks()
	s.callOpen(wc)
	wc.endCallbacks()
	if s.draining.Load() {
		// Shutdown began while this connection was on its way (an
		// Upgrade racing it, or a loop created after its drain task
		// was queued): it gets its 1001 too.
		wc.drain()
	}
}

// rejectErr answers a request an Upgrader refused with err.
func (wc *wsConn) rejectErr(err error) gnet.Action {
	var he *handler.HTTPError
	switch {
	case errors.Is(err, errPanicked):
		return wc.reject(errPanicked)
	case errors.As(err, &he):
		wc.lp.srv.checkResponse("handler.HTTPError", he.Status, he.Header)
		status := he.Status
		if status < 200 || status > 599 {
			status = http.StatusInternalServerError // as codec.AppendResponse sends it, and counted so
		}
		return wc.reject(&codec.HandshakeError{Status: status, Reason: he.Reason, Header: he.Header})
	}
	return wc.reject(&codec.HandshakeError{Status: http.StatusForbidden, Reason: err.Error()})
}

// decider returns the decide function given to an AsyncUpgrader: the first
// call queues the decision on the connection's loop, later ones do nothing.
func (wc *wsConn) decider() func(*handler.UpgradeResponse, error) {
	var once atomic.Bool
	return func(res *handler.UpgradeResponse, err error) {
		if !once.CompareAndSwap(false, true) {
			return
		}
		var r handler.UpgradeResponse // a copy: the caller may reuse res
		if res != nil {
			r = *res
		}
		_ = wc.lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			wc.decided(&r, err)
			return nil
		}))
	}
}

// decided carries out an AsyncUpgrader's decision, on the loop. The request
// is still in gnet's buffer: it was not consumed while the decision was
// pending. A decision that comes after the handshake timeout, or after the
// client left, finds the connection past deciding and does nothing.
func (wc *wsConn) decided(res *handler.UpgradeResponse, err error) {
	x := wc.x.Load()
	if wc.phase() != phaseHandshake || x == nil || !x.deciding {
		return
	}
	x.deciding = false
	s := wc.lp.srv
	s.releaseHeader(x)
	if err != nil {
		wc.rejectErr(err)
		return
	}
	buf, carried := wc.in()
	hs := codec.HeaderScanner{Max: s.opts.MaxHeaderBytes}
	n, _ := hs.Scan(buf)
	var r codec.Request
	if n == 0 || codec.ParseRequest(buf[:n], &r) != nil {
		wc.reject(errPanicked) // cannot happen: the same bytes parsed before
		return
	}
	if res.Subprotocol == "" {
		res.Subprotocol = s.preferredSubprotocol(&r)
	}
	if wc.accept(buf, carried, n, &r, res) == gnet.Close {
		wc.closeNow()
	}
}

// Headers the application gives (a Fallback's page, a 101, a Reject)
// reach the wire only through the codec's response writers, which apply
// the rules of issue 25 whatever happens here: a field whose name is not a
// token is dropped, control characters in a value become spaces, and the
// fields the writer frames itself are not duplicated (codec.AppendAccept,
// codec.AppendResponse). These checks only tell the operator, through a
// rate-limited log line, that an application's header was changed, which
// usually means request data was copied into it unchecked.

// checkResponse logs what the codec will change in a plain response the
// application supplied: its header, and a status that is not a final one
// (written as 500).
func (s *Server) checkResponse(where string, status int, h http.Header) {
	var err error
	if len(h) > 0 {
		err = codec.CheckResponseHeader(h)
	}
	if err == nil && status >= 200 && status <= 599 {
		return
	}
	if ok, n := s.stats.headerLog.allow(s.clock, time.Second); ok {
		if err != nil {
			s.log.Warn("wsloop: response header changed before sending", "from", where, "err", err, "changed_since_last_log", n)
		} else {
			s.log.Warn("wsloop: response status is not a final one, sent as 500", "from", where, "status", status, "changed_since_last_log", n)
		}
	}
}

// checkUpgradeResponse logs what the codec will change in a 101's extra
// header, and reports whether the chosen subprotocol may be sent: it must
// be a token (RFC 6455 §4.1 item 10), or the handshake is refused with 500
// rather than answered with a subprotocol the connection would not report.
func (s *Server) checkUpgradeResponse(where, subprotocol string, h http.Header) bool {
	var err error
	if len(h) > 0 {
		err = codec.CheckAcceptHeader(h)
	}
	valid := subprotocol == "" || codec.CheckSubprotocols([]string{subprotocol}) == nil
	if err == nil && valid {
		return true
	}
	if ok, n := s.stats.headerLog.allow(s.clock, time.Second); ok {
		if !valid {
			s.log.Error("wsloop: upgrade refused with 500: the subprotocol chosen is not a token", "from", where,
				"subprotocol", strconv.Quote(subprotocol), "changed_since_last_log", n)
		} else {
			s.log.Warn("wsloop: 101 header changed before sending", "from", where, "err", err, "changed_since_last_log", n)
		}
	}
	return valid
}

var (
	errOrigin         = &codec.HandshakeError{Status: http.StatusForbidden, Reason: "origin not allowed"}
	errBadSubprotocol = &codec.HandshakeError{Status: http.StatusInternalServerError, Reason: "internal server error"}
	errUndecided      = &codec.HandshakeError{Status: http.StatusServiceUnavailable, Reason: "upgrade not decided in time", Header: http.Header{"Retry-After": {"5"}}}
	errPanicked       = &codec.HandshakeError{Status: http.StatusInternalServerError, Reason: "internal server error"}
	busyResponse      = codec.AppendResponse(nil, http.StatusServiceUnavailable, http.Header{"Retry-After": {"5"}}, []byte(busyReason+"\n"))
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
		RemoteAddr: wc.peerAddr(),
	}
	if wc.lp.proxyHdrs != nil {
		req.Proxy = wc.lp.proxyHdrs[wc]
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
	s.log.Debug("wsloop: upgrade rejected", "remote", wc.peerAddr(), "status", he.Status, "reason", he.Reason)
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

// handshakeTimedOut answers a request that did not arrive in time, or
// that an AsyncUpgrader did not decide on in time.
func (wc *wsConn) handshakeTimedOut() {
	s := wc.lp.srv
	wc.lp.stats.timeouts.Add(1)
	if x := wc.x.Load(); x != nil && x.deciding {
		x.deciding = false
		s.stats.reject(http.StatusServiceUnavailable, rejectTimeout)
		out := codec.AppendReject(wc.lp.scratch[:0], errUndecided)
		wc.lp.scratch = out[:0]
		wc.respond(out)
		return
	}
	s.stats.reject(http.StatusRequestTimeout, rejectTimeout)
	wc.respond(timeoutResponse)
}
