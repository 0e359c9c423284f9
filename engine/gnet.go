package engine

import (
	"github.com/panjf2000/gnet/v2"
)

// gnetEvents is the server's gnet.EventHandler. It is a type of its own so
// that gnet's callbacks, which share names with the Handler's (OnOpen,
// OnClose), are not methods of Server: nobody but gnet may call them.
type gnetEvents struct {
	gnet.BuiltinEventEngine
	s *Server
}

// OnOpen runs on the loop when a socket handed over by adopt (accept.go) has
// been registered with it.
func (g *gnetEvents) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	g.s.opened(c)
	return nil, gnet.None
}

// OnTraffic runs on the loop when bytes arrived for c.
func (g *gnetEvents) OnTraffic(c gnet.Conn) gnet.Action {
	wc, _ := c.Context().(*wsConn)
	if wc == nil {
		return gnet.Close
	}
	return wc.traffic()
}

// OnClose runs on the loop once the socket is closed, whoever closed it,
// before gnet releases its state and the descriptor.
func (g *gnetEvents) OnClose(c gnet.Conn, err error) gnet.Action {
	if wc, _ := c.Context().(*wsConn); wc != nil {
		c.SetContext(nil)
		wc.onClosed(err)
	}
	return gnet.None
}
