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
	wc.lastRead = wc.lp.now
	if wc.has(sProbeSent) {
		wc.set(sProbeSent, false)
	}
	switch wc.phase() {
	case phaseHandshake:
		return wc.handshake()
	case phaseFailing:
		_, _ = wc.c.Discard(wc.c.InboundBuffered()) // read and drop until the peer closes
		return gnet.None
	case phaseClosed:
		return gnet.None
	}
	return wc.frames()
}

// frames decodes and delivers every complete unit buffered for an open
// connection: gnet calls OnTraffic once per read, so nothing may be left
// behind that a later call would not see. Bytes carried over from before
// the socket reached the loop (connExtra.pending) come first.
func (wc *wsConn) frames() gnet.Action {
	c := wc.c
	s := wc.lp.srv
	buf, _ := c.Peek(-1)
	inGnet := len(buf)
	carried := 0
	x := wc.x.Load()
	if x != nil && x.pending != nil {
		buf = append(x.pending, buf...) // rare: a net/http upgrade with pipelined bytes
		carried = len(x.pending)
		x.pending = nil
	}
	if len(buf) == 0 {
		return gnet.None
	}
	action := gnet.None
	var perr *codec.ProtocolError
	max := wc.maxMessageSize()
	off := 0
	wc.beginCallbacks()
	for {
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
	switch {
	case off >= carried:
		if off > carried {
			_, _ = c.Discard(off - carried)
		}
	default:
		// Part of the carried bytes is left (a partial frame header):
		// keep it, with what gnet had, for the next read.
		wc.extra().pending = append([]byte(nil), buf[off:]...)
		if inGnet > 0 {
			_, _ = c.Discard(inGnet)
		}
	}
	wc.endCallbacks()
	if perr != nil {
		s.log.Debug("wsloop: protocol error", "remote", c.RemoteAddr(), "code", perr.Code, "reason", perr.Reason)
		wc.fail(perr.Code, perr.Reason, &handler.CloseError{Code: perr.Code, Reason: perr.Reason})
		return gnet.None
	}
	if action == gnet.Close || wc.phase() == phaseClosed {
		return action
	}
	// Bound the time a message or a frame header may stay incomplete, even
	// while bytes keep trickling in.
	if wc.dec.InMessage() || c.InboundBuffered() > 0 || off < carried {
		if wc.msgStart == 0 && s.opts.MessageTimeout > 0 {
			wc.msgStart = wc.lp.now
			wc.lp.wheel.schedule(wc, wc.lp.now+s.ticks(s.opts.MessageTimeout))
		}
	} else {
		wc.msgStart = 0
	}
	return gnet.None
}

// deliver hands a data event to the handler: straight from gnet's buffer
// when the message arrived whole, otherwise through the assembly buffer.
func (wc *wsConn) deliver(ev *codec.Event) {
	if wc.phase() != phaseOpen {
		wc.dropAssembly() // after our close frame, data is read and dropped (RFC 6455 §5.5.1)
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
			wc.mu.Unlock()
			return true
		}
		// The answer to our close frame: the handshake is complete. OnClose
		// reports the close the server sent, whether or not it is answered.
		wc.setCloseErr(wc.sentCloseErr(ev.CloseCode))
		return true
	}
	return false
}
