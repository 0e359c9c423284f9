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
// broadcast encodes one PreparedFrame and hands it to Server.BroadcastAll,
// which walks the engine's own per-loop connection lists.
func init() {
	register(Info{
		Name: "wsloop", Module: "github.com/wsloop/wsloop", Version: "(this repository)",
		Notes: "engine.New with default Options, Server.BroadcastAll with a PreparedFrame",
	}, runWsloop)
}

type wsloopHandler struct {
	handler.Base
	srv *engine.Server
}

func (h *wsloopHandler) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	if rest, ok := isBroadcast(op == handler.Text, data); ok {
		// The engine already lists its connections per event loop: no
		// set of our own, no snapshot per broadcast.
		h.srv.BroadcastAll(codec.NewPreparedFrame(codec.OpText, rest))
		return
	}
	_ = c.WriteMessage(op, data)
}

func runWsloop(addr string, ready func()) error {
	h := &wsloopHandler{}
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
