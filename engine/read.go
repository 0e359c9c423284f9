package engine

import (
	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// The read path: the bytes gnet buffered for a connection, decoded into
// events and delivered to the handler. Everything here runs on the
// connection's loop.

// traffic handles the bytes gnet has buffered for the connection: the
// handshake first, then frames.
func (wc *wsConn) traffic() gnet.Action {
	if wc.st.Load()&(sPauseWanted|sPaused) != 0 && wc.pausedTraffic() {
		return gnet.None // paused: the bytes wait (readpause.go)
	}
	wc.lastRead = wc.lp.now
	if wc.has(sProbeSent) {
		wc.set(sProbeSent, false)
	}
	if wc.phase() == phaseProxy {
		return wc.proxyTraffic() // a PROXY protocol header first (proxyproto.go)
	}
	if ts := wc.tls(); ts != nil {
		switch wc.phase() {
		case phaseTLS:
			return wc.tlsHandshakeTraffic(ts)
		case phaseClosed:
			return gnet.None
		}
		more := wc.tlsTraffic(ts)
		action := wc.dispatch()
		wc.keepCarried()
		if !more {
			return gnet.Close // the TLS stream ended
		}
		return action
	}
	return wc.dispatch()
}

// dispatch reads the input by phase: the upgrade request, then frames.
func (wc *wsConn) dispatch() gnet.Action {
	switch wc.phase() {
	case phaseHandshake:
		return wc.handshake()
	case phaseFailing:
		wc.dropInput() // read and drop until the peer closes
		return gnet.None
	case phaseClosed, phaseMoved:
		return gnet.None
	}
	return wc.frames()
}

// in returns the bytes waiting to be read: those carried over from before
// (connExtra.pending: read by net/http before the socket reached the loop,
// or decrypted by TLS), then what gnet has buffered. carried is how many of
// buf are the carried ones. The slice is valid until consumed is called.
// Loop only.
func (wc *wsConn) in() (buf []byte, carried int) {
	buf, _ = wc.c.Peek(-1)
	if x := wc.x.Load(); x != nil && len(x.pending) > 0 {
		carried = len(x.pending)
		if len(buf) == 0 {
			return x.pending, carried
		}
		buf = append(x.pending, buf...) // rare: carried bytes and new ones
	}
	return buf, carried
}

// consumed drops the first n bytes of the input in returned (buf, carried).
// What is left of the carried bytes stays carried, joined by what gnet had
// when they are not all read: gnet's bytes are then moved out of its buffer.
// Loop only.
func (wc *wsConn) consumed(buf []byte, carried, n int) {
	inGnet := len(buf) - carried
	switch {
	case carried == 0:
		if n > 0 {
			_, _ = wc.c.Discard(n) // never 0: gnet discards everything then
		}
	case n >= carried:
		wc.x.Load().pending = nil
		if n > carried {
			_, _ = wc.c.Discard(n - carried)
		}
	default:
		// A partial unit is left among the carried bytes: keep all that
		// is left, gnet's bytes with it, carried.
		wc.x.Load().pending = buf[n:]
		if inGnet > 0 {
			_, _ = wc.c.Discard(inGnet)
		}
	}
}

// inputLeft reports whether bytes wait to be read.
func (wc *wsConn) inputLeft() bool {
	x := wc.x.Load()
	return wc.c.InboundBuffered() > 0 || x != nil && len(x.pending) > 0
}

// dropInput discards everything waiting to be read. Loop only.
func (wc *wsConn) dropInput() {
	if n := wc.c.InboundBuffered(); n > 0 {
		_, _ = wc.c.Discard(n)
	}
	if x := wc.x.Load(); x != nil {
		x.pending = nil
	}
}

// frames decodes and delivers every complete unit waiting for an open
// connection: gnet calls OnTraffic once per read, so nothing may be left
// behind that a later call would not see.
func (wc *wsConn) frames() gnet.Action {
	s := wc.lp.srv
	buf, carried := wc.in()
	if len(buf) == 0 {
		return gnet.None
	}
	if wc.has(sReadHalted) {
		wc.set(sReadHalted, false) // this call reads what the pause left
	}
	action := gnet.None
	var perr *codec.ProtocolError
	max := wc.maxMessageSize()
	off := 0
	wc.beginCallbacks()
	for {
		if wc.st.Load()&sPauseWanted != 0 {
			// Paused by a callback: the rest waits, and the resume
			// must wake this connection to read it (readpause.go).
			if off < len(buf) {
				wc.set(sReadHalted, true)
			}
			break
		}
		if wc.st.Load()&(sMoving|sHeld) != 0 && !wc.dec.InMessage() {
			// A handoff takes the connection at this message
			// boundary: what follows is moved raw (handoff.go).
			break
		}
		n, ev, err := wc.dec.Decode(buf[off:], max)
		if err != nil {
			var ok bool // a type assertion, not errors.As: &perr would escape on every call
			if perr, ok = err.(*codec.ProtocolError); !ok {
				perr = &codec.ProtocolError{Code: codec.CloseProtocolError, Reason: err.Error()}
			}
			break
		}
		off += n
		if ev.Kind == codec.EventNone {
			break
		}
		if ev.Kind == codec.EventData {
			wc.deliver(&ev)
		} else if wc.control(&ev) {
			action = gnet.Close
			break
		}
		if p := wc.phase(); p != phaseOpen && p != phaseClosing {
			off = len(buf) // failed meanwhile: nothing after is read
			break
		}
	}
	if perr != nil {
		off = len(buf) // nothing after a protocol error is read
	}
	wc.consumed(buf, carried, off)
	wc.endCallbacks()
	if wc.st.Load()&sPauseWanted != 0 && !wc.has(sPaused) {
		wc.applyReadState()
	}
	if perr != nil {
		s.log.Debug("wsloop: protocol error", "remote", wc.c.RemoteAddr(), "code", perr.Code, "reason", perr.Reason)
		wc.fail(perr.Code, perr.Reason, &handler.CloseError{Code: perr.Code, Reason: perr.Reason})
		return gnet.None
	}
	if action == gnet.Close {
		return wc.closeWhenFlushed() // after the last of the reply is out
	}
	if wc.phase() == phaseClosed {
		return action
	}
	// Bound the time a message or a frame header may stay incomplete, even
	// while bytes keep trickling in.
	if wc.dec.InMessage() || wc.inputLeft() {
		if wc.acceptOrMsgAt == 0 && s.opts.MessageTimeout > 0 {
			wc.acceptOrMsgAt = wc.lp.now
			wc.lp.wheel.schedule(wc, wc.lp.now+s.ticks(s.opts.MessageTimeout))
		}
	} else {
		wc.acceptOrMsgAt = 0
	}
	return gnet.None
}

// deliver hands a data event to the handler: straight from gnet's buffer
// when the message arrived whole, otherwise through the assembly buffer.
func (wc *wsConn) deliver(ev *codec.Event) {
	if p := wc.phase(); p != phaseOpen && !(p == phaseClosing && wc.has(sClient)) {
		// After the server's close frame, data is read and dropped (RFC
		// 6455 §5.5.1 forbids only sending it). A client goes on
		// delivering until the server's answer: what the server sent
		// before it saw the client's close is the answer to what the
		// client sent before it (`echo x | wscat URL` prints x).
		wc.dropAssembly()
		return
	}
	s := wc.lp.srv
	st := &wc.lp.stats
	st.bytesIn.Add(int64(len(ev.Payload)))
	if ev.Final {
		st.messagesIn.Add(1)
	}
	if ev.Compressed { // permessage-deflate: decompress, check, deliver whole (deflate.go)
		s.deliverCompressed(wc, ev)
		return
	}
	if wc.streamer() != nil {
		s.callChunk(wc, ev.Op, ev.Payload, ev.First, ev.Final)
		return
	}
	if ev.First && ev.Final {
		s.callMessage(wc, ev.Op, ev.Payload)
		return
	}
	x := wc.extra()
	if !s.growAssembly(x, len(ev.Payload)) {
		s.refuseInbound(wc, len(x.asm)+len(ev.Payload))
		return
	}
	x.asm = append(x.asm, ev.Payload...)
	if ev.Final {
		s.callMessage(wc, ev.Op, x.asm)
		s.releaseAssembly(x)
	}
}

// control handles a ping, pong or close frame. It returns true when the TCP
// connection must now be closed.
func (wc *wsConn) control(ev *codec.Event) bool {
	s := wc.lp.srv
	switch ev.Op {
	case codec.OpPing:
		if wc.phase() == phaseOpen {
			s.callPing(wc, ev.Payload)
		}
	case codec.OpPong:
		wc.set(sPongWait, false)
		if wc.phase() == phaseOpen {
			s.callPong(wc, ev.Payload)
		}
	case codec.OpClose:
		if wc.phase() == phaseOpen {
			// RFC 6455 §5.5.1: answer with a close frame, "typically
			// echoing the status code it received", then the server
			// closes the TCP connection first (§7.1.1).
			wc.setCloseErr(&handler.CloseError{Code: ev.CloseCode, Reason: string(ev.CloseReason), Remote: true})
			wc.mu.Lock()
			wc.queueCloseLocked(ev.CloseCode, "", closeReply) // 1005 is answered with an empty close
			if wc.has(sClient) {
				wc.awaitServerClose() // under mu with the reply: no write slips in between
				wc.mu.Unlock()
				return false
			}
			wc.mu.Unlock()
			return true
		}
		// The answer to our close frame: the handshake is complete. OnClose
		// reports the close this side sent, whether or not it is answered.
		if wc.has(sClient) {
			// Except on a client, when the server's close carries a
			// code of its own: then the two closes crossed, and the
			// server's reason is what the client needs to know (a
			// policy violation, an application's 4xxx).
			if sent := wc.sentCloseErr(ev.CloseCode); ev.CloseCode != codec.CloseNoStatus && !isCloseCode(sent, ev.CloseCode) {
				wc.setCloseErr(&handler.CloseError{Code: ev.CloseCode, Reason: string(ev.CloseReason), Remote: true})
			} else {
				wc.setCloseErr(sent)
			}
			wc.awaitServerClose()
			return false
		}
		wc.setCloseErr(wc.sentCloseErr(ev.CloseCode))
		return true
	}
	return false
}

// isCloseCode reports whether err is a *handler.CloseError with code.
func isCloseCode(err error, code uint16) bool {
	ce, ok := err.(*handler.CloseError)
	return ok && ce.Code == code
}
