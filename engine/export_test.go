package engine

import (
	"context"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/engine/internal/tlsbuf"
	"github.com/wsloop/wsloop/handler"
)

// SetOpenedHook makes s call f on the event loop each time it has taken a
// new connection in (before its handshake), so that a test can move a fake
// clock only once the connection's timers run. Call it before serving.
func SetOpenedHook(s *Server, f func()) { s.testHookOpened = f }

// TLSBuffersFound reports whether the crypto/tls buffers an idle wss
// connection must not keep were found in this Go release (tls.go).
func TLSBuffersFound() bool { return tlsbuf.Check().Buffers == nil }

// TLSBridged reports whether s serves wss through the goroutine bridge, as
// decided at its first wss connection (or now, if none came yet).
func TLSBridged(s *Server) bool { return s.tlsBridged() }

// TLSBuffersHeld returns the capacity crypto/tls's record and handshake
// buffers keep for the wss connection c, read on its loop.
func TLSBuffersHeld(c handler.Conn) (record, hand int) {
	wc := c.(*wsConn)
	ch := make(chan [2]int, 1)
	_ = wc.lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		tc, k := wc.tls().conn, wc.lp.srv.tlsk
		ch <- [2]int{k.RawInput(tc).Cap(), k.Hand(tc).Cap()}
		return nil
	}))
	r := <-ch
	return r[0], r[1]
}
