package engine

import (
	"context"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/handler"
)

// SetOpenedHook makes s call f on the event loop each time it has taken a
// new connection in (before its handshake), so that a test can move a fake
// clock only once the connection's timers run. Call it before serving.
func SetOpenedHook(s *Server, f func()) { s.testHookOpened = f }

// SetHandOffMarkedHook makes s call f during HandOff once every loop has
// marked the connections that move, before any of them leaves: what a
// test does in f happens during the move. Call it before HandOff.
func SetHandOffMarkedHook(s *Server, f func()) { s.testHookMarked = f }

// SetHandOffBatchHook makes s call f during HandOff after each batch of
// connections it sent, with the number sent so far.
func SetHandOffBatchHook(s *Server, f func(int)) { s.testHookBatch = f }

// SetHandOffPassHook makes s call f during HandOff after each pass over
// the connections waiting for their message boundary, with the count.
func SetHandOffPassHook(s *Server, f func(int)) { s.testHookPass = f }

// TLSBuffersFound reports whether the crypto/tls buffers an idle wss
// connection must not keep were found in this Go release (tls.go).
func TLSBuffersFound() bool { return tlsConnBufs.ok }

// TLSBuffersHeld returns the capacity crypto/tls's record and handshake
// buffers keep for the wss connection c, read on its loop.
func TLSBuffersHeld(c handler.Conn) (record, hand int) {
	wc := c.(*wsConn)
	ch := make(chan [2]int, 1)
	_ = wc.lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		tc := wc.tls().conn
		ch <- [2]int{tlsBuffer(tc, tlsConnBufs.rawInput).Cap(), tlsBuffer(tc, tlsConnBufs.hand).Cap()}
		return nil
	}))
	r := <-ch
	return r[0], r[1]
}
