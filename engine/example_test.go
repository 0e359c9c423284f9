package engine_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
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

// inbox is a client's handler: it hands every message it receives to a
// channel. It copies data, which is valid only during the call, and never
// blocks the loop (the channel has room for what an example expects).
type inbox struct {
	handler.Base
	msgs chan string
}

func newInbox() *inbox { return &inbox{msgs: make(chan string, 16)} }

// next returns the next message the client received, or says that none
// came: an example whose writes are broken then fails on its output
// instead of hanging.
func (in *inbox) next() string {
	select {
	case m := <-in.msgs:
		return m
	case <-time.After(5 * time.Second):
		return "(nothing received)"
	}
}

func (in *inbox) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	select {
	case in.msgs <- string(data):
	default:
	}
}

// silent keeps the examples' output to what they print.
var silent = slog.New(slog.NewTextHandler(io.Discard, nil))

// An echo server on the engine's own listener. Start returns once the
// server listens, or with the reason it cannot (a port that is taken, an
// invalid option); it serves until ctx ends, and Wait returns once it has
// drained. A client (a second engine, without a listener) checks the echo.
func ExampleServer_Start() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	srv := engine.New(echo{}, engine.Options{Addr: "127.0.0.1:0", Logger: silent})
	if err := srv.Start(ctx); err != nil {
		log.Fatal(err) // e.g. "listen tcp 127.0.0.1:8080: bind: address already in use"
	}

	in := newInbox()
	cli := engine.New(in, engine.Options{Logger: silent})
	if err := cli.Start(ctx); err != nil {
		log.Fatal(err)
	}
	c, _, err := cli.Dial(ctx, "ws://"+srv.Addr().String()+"/", nil)
	if err != nil {
		log.Fatal(err)
	}
	_ = c.WriteMessage(handler.Text, []byte("hello"))
	fmt.Println("echoed:", in.next())

	stop() // both drain: every connection gets 1001 Going Away
	fmt.Println(srv.Wait(), cli.Wait())
	// Output:
	// echoed: hello
	// <nil> <nil>
}

// A WebSocket endpoint in a net/http program: the handler calls Upgrade
// behind the program's own mux (and whatever middleware and auth it has),
// and the connection moves onto the engine's event loops. The engine has no
// listener of its own: net/http owns the port.
func ExampleServer_Upgrade() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ws := engine.New(echo{}, engine.Options{Logger: silent})
	if err := ws.Start(ctx); err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /echo", func(w http.ResponseWriter, r *http.Request) {
		// On failure Upgrade has answered the request (400, 403, 503...).
		_, _ = ws.Upgrade(w, r, nil)
	})
	web := httptest.NewServer(mux)
	defer web.Close()

	in := newInbox()
	c, _, err := ws.Dial(ctx, "ws://"+web.Listener.Addr().String()+"/echo", &engine.DialOptions{Handler: in})
	if err != nil {
		log.Fatal(err)
	}
	_ = c.WriteMessage(handler.Text, []byte("through net/http"))
	fmt.Println("echoed:", in.next())
	// Output: echoed: through net/http
}

// Dial opens a client connection served by the same event loops. Its
// events go to DialOptions.Handler; the 101 response says what the server
// chose.
func ExampleServer_Dial() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	srv := engine.New(echo{}, engine.Options{Addr: "127.0.0.1:0", Subprotocols: []string{"chat.v2"}, Logger: silent})
	if err := srv.Start(ctx); err != nil {
		log.Fatal(err)
	}
	in := newInbox()
	c, resp, err := srv.Dial(ctx, "ws://"+srv.Addr().String()+"/", &engine.DialOptions{
		Handler:      in,
		Subprotocols: []string{"chat.v2", "chat.v1"},
	})
	if err != nil {
		log.Fatal(err) // a *DialError names the phase; an *UpgradeStatusError the status
	}
	fmt.Println(resp.StatusCode, c.Subprotocol())
	_ = c.WriteMessage(handler.Binary, []byte{1, 2, 3})
	fmt.Printf("echoed: %v\n", []byte(in.next()))
	_ = c.Close(codec.CloseNormal, "done")
	// Output:
	// 101 chat.v2
	// echoed: [1 2 3]
}

// room is a chat room: every message goes to every member.
type room struct {
	handler.Base
	srv *engine.Server

	mu      sync.Mutex
	members map[handler.Conn]struct{}
	joined  chan struct{}
}

func (r *room) OnOpen(c handler.Conn) {
	r.mu.Lock()
	r.members[c] = struct{}{}
	r.mu.Unlock()
	r.joined <- struct{}{} // buffered: never blocks the loop here
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

// A chat room that relays each message to every member with Broadcast. A
// member too slow to keep up is dropped by the outbound cap instead of
// slowing the others.
func ExampleServer_Broadcast() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	r := &room{members: map[handler.Conn]struct{}{}, joined: make(chan struct{}, 2)}
	srv := engine.New(r, engine.Options{Addr: "127.0.0.1:0", MaxOutboundBytes: 1 << 20, Logger: silent})
	if err := srv.Start(ctx); err != nil {
		log.Fatal(err)
	}
	r.srv = srv

	cli := engine.New(handler.Base{}, engine.Options{Logger: silent})
	if err := cli.Start(ctx); err != nil {
		log.Fatal(err)
	}
	ann, bob := newInbox(), newInbox()
	a, _, err := cli.Dial(ctx, "ws://"+srv.Addr().String()+"/", &engine.DialOptions{Handler: ann})
	if err != nil {
		log.Fatal(err)
	}
	if _, _, err := cli.Dial(ctx, "ws://"+srv.Addr().String()+"/", &engine.DialOptions{Handler: bob}); err != nil {
		log.Fatal(err)
	}
	<-r.joined
	<-r.joined // both are members before ann speaks
	_ = a.WriteMessage(handler.Text, []byte("hi all"))
	got := []string{"ann: " + ann.next(), "bob: " + bob.next()}
	sort.Strings(got)
	fmt.Println(got)
	// Output: [ann: hi all bob: hi all]
}
