//go:build !nowsloop

package servers

import (
	"context"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// wsloop: this repository's engine (gnet/v2 event loops), linked through the
// bench module's replace directive, with default options (the engine's
// defaults are its production settings). Echo writes from inside OnMessage;
// broadcast encodes one PreparedFrame and hands it to Server.Broadcast.
func init() {
	register(Info{
		Name: "wsloop", Module: "github.com/wsloop/wsloop", Version: "(this repository)",
		Notes: "engine.New with default Options, Server.Broadcast with a PreparedFrame",
	}, runWsloop)
}

type wsloopHandler struct {
	handler.Base
	srv   *engine.Server
	conns *connSet[handler.Conn]
}

func (h *wsloopHandler) OnOpen(c handler.Conn)           { h.conns.add(c) }
func (h *wsloopHandler) OnClose(c handler.Conn, _ error) { h.conns.remove(c) }

func (h *wsloopHandler) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	if rest, ok := isBroadcast(op == handler.Text, data); ok {
		f := codec.NewPreparedFrame(codec.OpText, rest)
		// A fresh slice each time: Broadcast may hand it to the loops and
		// return before they are done with it.
		h.srv.Broadcast(h.conns.snapshot(nil), f)
		return
	}
	_ = c.WriteMessage(op, data)
}

func runWsloop(addr string, ready func()) error {
	h := &wsloopHandler{conns: newConnSet[handler.Conn]()}
	h.srv = engine.New(h, engine.Options{Addr: addr})
	errc := make(chan error, 1)
	go func() { errc <- h.srv.ListenAndServe(context.Background()) }()
	select {
	case <-h.srv.Ready():
		ready()
	case err := <-errc:
		return err
	}
	return <-errc
}
