// Package engine serves WebSocket connections from gnet event loops.
package engine

import (
	"context"
	"net"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Server is a WebSocket server. Create it with [New].
type Server struct {
	h    handler.Handler
	opts Options
}

// New returns a server that delivers the events of its connections to h.
func New(h handler.Handler, opts Options) *Server {
	return &Server{h: h, opts: opts.withDefaults()}
}

// ListenAndServe listens on Options.Addr and serves until ctx is done or
// Shutdown is called. When ctx ends it drains like Shutdown with a grace
// period of CloseTimeout.
func (s *Server) ListenAndServe(ctx context.Context) error { panic("todo") }

// Ready is closed once the server listens; Addr is valid from then on.
func (s *Server) Ready() <-chan struct{} { panic("todo") }

// Addr returns the bound listen address (with the real port for ":0").
func (s *Server) Addr() net.Addr { panic("todo") }

// Shutdown drains the server: stop accepting, send 1001 to every connection,
// flush queued writes, wait for close replies until ctx ends, stop the loops.
func (s *Server) Shutdown(ctx context.Context) error { panic("todo") }

// Broadcast writes f to every connection in conns with one task per loop.
func (s *Server) Broadcast(conns []handler.Conn, f *codec.PreparedFrame) { panic("todo") }

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats { panic("todo") }

// Stats is a snapshot of a server's counters.
type Stats struct {
	Open, Accepted                       int64
	Rejected                             map[string]int64
	MessagesIn, MessagesOut              int64
	BytesIn, BytesOut                    int64
	ClosesByCode                         map[uint16]int64
	SlowConsumers, Timeouts, ConnLimited int64
}
