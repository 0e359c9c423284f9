package engine_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// echo sends every message back to its sender.
type echo struct{ handler.Base }

func (echo) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	// data is valid only during the call; WriteMessage copies it.
	_ = c.WriteMessage(op, data)
}

// A WebSocket echo server that drains on SIGINT or SIGTERM: every open
// connection receives a 1001 close frame before the process exits.
func ExampleServer() {
	srv := engine.New(echo{}, engine.Options{
		Addr:        "127.0.0.1:9001",
		IdleTimeout: time.Minute,
	})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-srv.Ready()
		log.Printf("listening on ws://%s/", srv.Addr())
	}()
	// ListenAndServe returns after ctx is done and the drain finished.
	if err := srv.ListenAndServe(ctx); err != nil {
		log.Fatal(err)
	}
}

// room is a chat room: every message goes to every member.
type room struct {
	handler.Base
	srv *engine.Server

	mu      sync.Mutex
	members map[handler.Conn]struct{}
}

func (r *room) OnOpen(c handler.Conn) {
	r.mu.Lock()
	r.members[c] = struct{}{}
	r.mu.Unlock()
}

func (r *room) OnClose(c handler.Conn, err error) {
	r.mu.Lock()
	delete(r.members, c)
	r.mu.Unlock()
}

func (r *room) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	// Encode the frame once; Broadcast writes the same bytes to every
	// member with one task per event loop.
	f := codec.NewPreparedFrame(op, data)
	r.mu.Lock()
	conns := make([]handler.Conn, 0, len(r.members))
	for m := range r.members {
		conns = append(conns, m)
	}
	r.mu.Unlock()
	r.srv.Broadcast(conns, f)
}

// A chat room that relays each message to every member with Broadcast, and
// announces the time to all connections once a minute with BroadcastAll.
// A member too slow to keep up is dropped by the outbound cap instead of
// slowing the others.
func ExampleServer_Broadcast() {
	r := &room{members: map[handler.Conn]struct{}{}}
	r.srv = engine.New(r, engine.Options{Addr: "127.0.0.1:9002", MaxOutboundBytes: 1 << 20})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		tick := time.NewTicker(time.Minute)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				r.srv.BroadcastAll(codec.NewPreparedFrame(codec.OpText, []byte(now.Format(time.Kitchen))))
			}
		}
	}()
	if err := r.srv.ListenAndServe(ctx); err != nil {
		log.Fatal(err)
	}
}
