package engine

import (
	"context"
	"net"

	"github.com/panjf2000/gnet/v2"
)

// HandOff returns ErrHandOffUnsupported: Windows cannot pass sockets
// between processes here.
func (s *Server) HandOff(context.Context, string, *HandOffOptions) (*HandOffResult, error) {
	return nil, ErrHandOffUnsupported
}

// Takeover is the new process's side of a deploy; see the Unix build.
type Takeover struct{}

// TakeOver returns ErrHandOffUnsupported: Windows cannot pass sockets
// between processes here.
func TakeOver(context.Context, string, *TakeOverOptions) (*Takeover, error) {
	return nil, ErrHandOffUnsupported
}

// Listener returns nil.
func (*Takeover) Listener(string) net.Listener { return nil }

// Predecessor returns 0.
func (*Takeover) Predecessor() int { return 0 }

// Restore returns ErrHandOffUnsupported.
func (*Takeover) Restore(context.Context, *Server) (*RestoreResult, error) {
	return nil, ErrHandOffUnsupported
}

// Close does nothing.
func (*Takeover) Close() {}

// Never reached: no connection is ever detached, taken back or restored.
func (wc *wsConn) detached()          {}
func (m *moveRec) retaken(gnet.Conn)  {}
func (wc *wsConn) restored(*adoption) {}
