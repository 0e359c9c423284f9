package engine

import (
	"fmt"
	"runtime/debug"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Calls into the application, and what a panic in one of them does.
//
// As net/http does for its handlers, the engine recovers a panic in an
// application callback by default: an event loop serves thousands of
// connections, and one bad input must not end them all. The stack is
// logged (at most one line per second, with a count of those suppressed)
// and counted in Stats.Panics. Then:
//
//   - OnOpen, OnMessage, OnMessageChunk, OnPing, OnPong: the connection is
//     failed with 1011 and its OnClose runs once, as for any other close;
//   - OnUpgrade, CheckOrigin, Fallback: the request gets 500, and neither
//     OnOpen nor OnClose runs;
//   - OnClose: nothing more to do.
//
// Options.CrashOnPanic turns this off: the panic then unwinds through the
// event loop and ends the process.

// errPanic is what OnClose reports for a connection whose callback panicked.
var errPanic = &handler.CloseError{Code: codec.CloseInternalError, Reason: "internal server error"}

// recovered handles a recovered panic value r from callback what. wc is
// failed with 1011 when fail is set.
func (s *Server) recovered(r any, what string, wc *wsConn, fail bool) {
	s.stats.panics.Add(1)
	if ok, n := s.stats.panicLog.allow(s.clock, time.Second); ok {
		s.log.Error("wsloop: panic in "+what+" recovered", "panic", fmt.Sprint(r),
			"remote", wc.c.RemoteAddr(), "panics_since_last_log", n, "stack", string(debug.Stack()))
	}
	if fail {
		wc.fail(codec.CloseInternalError, errPanic.Reason, errPanic)
	}
}

func (s *Server) callOpen(wc *wsConn) {
	if !s.opts.CrashOnPanic {
		defer func() {
			if r := recover(); r != nil {
				s.recovered(r, "OnOpen", wc, true)
			}
		}()
	}
	wc.handler().OnOpen(wc)
}

func (s *Server) callMessage(wc *wsConn, op handler.Op, data []byte) {
	if !s.opts.CrashOnPanic {
		defer func() {
			if r := recover(); r != nil {
				s.recovered(r, "OnMessage", wc, true)
			}
		}()
	}
	wc.handler().OnMessage(wc, op, data)
}

func (s *Server) callChunk(wc *wsConn, op handler.Op, chunk []byte, first, final bool) {
	if !s.opts.CrashOnPanic {
		defer func() {
			if r := recover(); r != nil {
				s.recovered(r, "OnMessageChunk", wc, true)
			}
		}()
	}
	wc.streamer().OnMessageChunk(wc, op, chunk, first, final)
}

func (s *Server) callPing(wc *wsConn, data []byte) {
	if !s.opts.CrashOnPanic {
		defer func() {
			if r := recover(); r != nil {
				s.recovered(r, "OnPing", wc, true)
			}
		}()
	}
	wc.handler().OnPing(wc, data)
}

func (s *Server) callPong(wc *wsConn, data []byte) {
	if !s.opts.CrashOnPanic {
		defer func() {
			if r := recover(); r != nil {
				s.recovered(r, "OnPong", wc, true)
			}
		}()
	}
	wc.handler().OnPong(wc, data)
}

func (s *Server) callClose(wc *wsConn, err error) {
	if !s.opts.CrashOnPanic {
		defer func() {
			if r := recover(); r != nil {
				s.recovered(r, "OnClose", wc, false)
			}
		}()
	}
	wc.handler().OnClose(wc, err)
}

// callUpgradeAsync runs the AsyncUpgrader; a panic becomes errPanicked.
func (s *Server) callUpgradeAsync(wc *wsConn, r *handler.Request, decide func(*handler.UpgradeResponse, error)) (err error) {
	if !s.opts.CrashOnPanic {
		defer func() {
			if p := recover(); p != nil {
				s.recovered(p, "OnUpgradeAsync", wc, false)
				err = errPanicked
			}
		}()
	}
	s.async.OnUpgradeAsync(r, decide)
	return nil
}

// callUpgrade runs the Upgrader; a panic becomes errPanicked.
func (s *Server) callUpgrade(wc *wsConn, r *handler.Request, res *handler.UpgradeResponse) (err error) {
	if !s.opts.CrashOnPanic {
		defer func() {
			if p := recover(); p != nil {
				s.recovered(p, "OnUpgrade", wc, false)
				err = errPanicked
			}
		}()
	}
	return s.up.OnUpgrade(r, res)
}

// callCheckOrigin runs Options.CheckOrigin; ok is false if it panicked.
func (s *Server) callCheckOrigin(wc *wsConn, r *handler.Request) (allowed, ok bool) {
	if !s.opts.CrashOnPanic {
		defer func() {
			if p := recover(); p != nil {
				s.recovered(p, "CheckOrigin", wc, false)
				allowed, ok = false, false
			}
		}()
	}
	return s.opts.CheckOrigin(r), true
}

// callFallback runs Options.Fallback; ok is false if it panicked.
func (s *Server) callFallback(wc *wsConn, r *codec.Request) (resp *Response, ok bool) {
	if !s.opts.CrashOnPanic {
		defer func() {
			if p := recover(); p != nil {
				s.recovered(p, "Fallback", wc, false)
				resp, ok = nil, false
			}
		}()
	}
	return s.opts.Fallback(s.request(r, wc)), true
}
