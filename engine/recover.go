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

// catch is deferred by every call into the application. Unless
// Options.CrashOnPanic is set it recovers a panic there: it counts and logs
// it, and fails wc with 1011 when fail is set. It must itself be the
// deferred function, or recover would not stop the panic. A caller whose
// results must say that the callback panicked sets them to that outcome
// before the call: a normal return overwrites them, a recovered panic
// leaves them.
func (s *Server) catch(wc *wsConn, what string, fail bool) {
	if s.opts.CrashOnPanic {
		return
	}
	r := recover()
	if r == nil {
		return
	}
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
	defer s.catch(wc, "OnOpen", true)
	wc.handler().OnOpen(wc)
}

func (s *Server) callMessage(wc *wsConn, op handler.Op, data []byte) {
	defer s.catch(wc, "OnMessage", true)
	wc.handler().OnMessage(wc, op, data)
}

func (s *Server) callChunk(wc *wsConn, op handler.Op, chunk []byte, first, final bool) {
	defer s.catch(wc, "OnMessageChunk", true)
	wc.streamer().OnMessageChunk(wc, op, chunk, first, final)
}

func (s *Server) callPing(wc *wsConn, data []byte) {
	defer s.catch(wc, "OnPing", true)
	wc.handler().OnPing(wc, data)
}

func (s *Server) callPong(wc *wsConn, data []byte) {
	defer s.catch(wc, "OnPong", true)
	wc.handler().OnPong(wc, data)
}

// callDrain runs a NotifyBacklog function on the loop. A panic in it is
// logged and counted; the connection goes on, since the function is the
// producer's, not the connection's.
func (s *Server) callDrain(wc *wsConn, f func()) {
	defer s.catch(wc, "NotifyBacklog function", false)
	f()
}

func (s *Server) callClose(wc *wsConn, err error) {
	defer s.catch(wc, "OnClose", false)
	wc.handler().OnClose(wc, err)
}

// callUpgradeAsync runs the AsyncUpgrader; a panic becomes errPanicked.
func (s *Server) callUpgradeAsync(wc *wsConn, r *handler.Request, decide func(*handler.UpgradeResponse, error)) (err error) {
	err = errPanicked // unless it returns
	defer s.catch(wc, "OnUpgradeAsync", false)
	s.async.OnUpgradeAsync(r, decide)
	return nil
}

// callUpgrade runs the Upgrader; a panic becomes errPanicked.
func (s *Server) callUpgrade(wc *wsConn, r *handler.Request, res *handler.UpgradeResponse) (err error) {
	err = errPanicked // unless it returns
	defer s.catch(wc, "OnUpgrade", false)
	return s.up.OnUpgrade(r, res)
}

// callCheckOrigin runs Options.CheckOrigin; ok is false if it panicked.
func (s *Server) callCheckOrigin(wc *wsConn, r *handler.Request) (allowed, ok bool) {
	defer s.catch(wc, "CheckOrigin", false)
	return s.opts.CheckOrigin(r), true
}

// callFallback runs Options.Fallback; ok is false if it panicked.
func (s *Server) callFallback(wc *wsConn, r *codec.Request) (resp *FallbackResponse, ok bool) {
	defer s.catch(wc, "Fallback", false)
	return s.opts.Fallback(s.request(r, wc)), true
}
