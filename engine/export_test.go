package engine

import (
	"context"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsloop/wsloop/engine/internal/tlsbuf"
	"github.com/wsloop/wsloop/handler"
)

// SetOpenedHook makes s call f on the event loop each time it has taken a
// new connection in (before its handshake), so that a test can move a fake
// clock only once the connection's timers run. Call it before Start.
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

// onLoop runs f on c's loop and waits for it.
func onLoop(c handler.Conn, f func(wc *wsConn)) {
	wc := c.(*wsConn)
	done := make(chan struct{})
	_ = wc.lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		f(wc)
		close(done)
		return nil
	}))
	<-done
}

// GnetPollerFound reports whether the poller of c's loop was found in
// gnet's connection (gnetpoll_unix.go), so that reads pause at the poller.
func GnetPollerFound(c handler.Conn) (found bool) {
	onLoop(c, func(wc *wsConn) { found = gnetPollerFD(wc.c) >= 0 })
	return found
}

// InboundBuffered returns what gnet holds unread for c, read on its loop.
func InboundBuffered(c handler.Conn) (n int) {
	onLoop(c, func(wc *wsConn) { n = wc.c.InboundBuffered() })
	return n
}

// PortableBuild is true where reads cannot pause at gnet's poller.
const PortableBuild = portableBuild

// PauseFallbackCap is what a paused connection may hold when reads cannot
// pause at the poller.
const PauseFallbackCap = pauseFallbackCap

// SetProxyAddrsInGnet makes the addresses of a PROXY protocol header go to
// gnet's connection (on) or to the connection's own info (off, as where
// gnet's fields are not found), and returns a function that restores the
// setting. Not for parallel tests.
func SetProxyAddrsInGnet(on bool) (restore func()) {
	old := proxyAddrsInGnet
	proxyAddrsInGnet = on
	return func() { proxyAddrsInGnet = old }
}
