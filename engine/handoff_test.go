//go:build linux

package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// Tests of a deploy without disconnecting, both processes in this one: an
// old server hands its listener and connections to a new one (HandOff,
// TakeOver, Restore). Each connection counts its messages in its Context;
// the count moves with it, and every reply says which server sent it, so
// a client sees exactly where each message was handled. The transfer layer
// itself (two processes, descriptor counts, failures of either side) is
// tested in internal/handoff.

// movingApp is a handler whose connections move: the state of a
// connection is its path and how many messages it sent.
type movingApp struct {
	handler.Base
	name string

	mu       sync.Mutex
	conns    map[string]handler.Conn
	closed   int
	moved    []uint64 // ConnIDs of the connections OnMoved saw
	ids      map[string]uint64
	restored []uint64
	refuse   string // OnMove (old) or OnRestore (new) fails for this path
}

type connState struct {
	Path  string `json:"path"`
	Count int    `json:"count"`
}

func newMovingApp(name string) *movingApp {
	return &movingApp{name: name, ids: map[string]uint64{}, conns: map[string]handler.Conn{}}
}

func (a *movingApp) OnOpen(c handler.Conn) {
	p := c.Path() + "?" + c.RawQuery()
	c.SetContext(&connState{Path: p})
	a.mu.Lock()
	a.conns[p] = c
	a.mu.Unlock()
}

// conn returns the connection opened with path and query p.
func (a *movingApp) conn(p string) handler.Conn {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.conns[p]
}

func (a *movingApp) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	st := c.Context().(*connState)
	st.Count++
	_ = c.WriteMessage(handler.Text, []byte(fmt.Sprintf("%s %d %s", a.name, st.Count, data)))
}

func (a *movingApp) OnClose(handler.Conn, error) {
	a.mu.Lock()
	a.closed++
	a.mu.Unlock()
}

func (a *movingApp) OnMove(c handler.Conn) ([]byte, error) {
	st := c.Context().(*connState)
	if a.refuse != "" && strings.HasPrefix(st.Path, a.refuse) {
		return nil, errors.New("this one stays")
	}
	a.mu.Lock()
	a.ids[st.Path] = engine.ConnID(c)
	a.mu.Unlock()
	return json.Marshal(st)
}

func (a *movingApp) OnMoved(c handler.Conn) {
	a.mu.Lock()
	a.moved = append(a.moved, engine.ConnID(c))
	a.mu.Unlock()
	if err := c.WriteMessage(handler.Text, []byte("late")); !errors.Is(err, handler.ErrClosed) {
		panic(fmt.Sprintf("a write on a moved connection: %v", err))
	}
}

func (a *movingApp) OnRestore(c handler.Conn, state []byte) (handler.Handler, any, error) {
	var st connState
	if err := json.Unmarshal(state, &st); err != nil {
		return nil, nil, err
	}
	if a.refuse != "" && strings.HasPrefix(st.Path, a.refuse) {
		return nil, nil, errors.New("cannot restore this one")
	}
	if got := c.Path() + "?" + c.RawQuery(); got != st.Path {
		return nil, nil, fmt.Errorf("restored with path %q, the state says %q", got, st.Path)
	}
	a.mu.Lock()
	a.restored = append(a.restored, engine.ConnID(c))
	a.mu.Unlock()
	return nil, &st, nil
}

// deploy runs a whole handoff from old to a new server for app, and
// returns the new server and both sides' results. hook, if set, runs
// during the move.
type deployment struct {
	old, new *engine.Server
	handed   *engine.HandOffResult
	handErr  error
	restored *engine.RestoreResult
	global   string
}

func startOld(t *testing.T, app handler.Handler, opts engine.Options) *engine.Server {
	t.Helper()
	if opts.EventLoops == 0 {
		opts.EventLoops = 2
	}
	srv, _ := startServer(t, app, opts)
	return srv
}

func deploy(t *testing.T, old *engine.Server, app handler.Handler, ho *engine.HandOffOptions, opts engine.Options) *deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "handoff")
	d := &deployment{old: old}
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.handed, d.handErr = old.HandOff(ctx, dir, ho)
	}()
	var gmu sync.Mutex
	tk, err := engine.TakeOver(ctx, dir, &engine.TakeOverOptions{
		Logger: discardLogger,
		State: func(st []byte, ok bool) error {
			gmu.Lock()
			defer gmu.Unlock()
			if ok {
				d.global = string(st)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if opts.EventLoops == 0 {
		opts.EventLoops = 2
	}
	opts.Logger = discardLogger
	d.new = engine.New(app, opts)
	errc := make(chan error, 1)
	ln := tk.Listener("")
	if ln == nil {
		t.Fatal("the old server's listener did not come")
	}
	go func() { errc <- d.new.Serve(context.Background(), ln) }()
	<-d.new.Ready()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.new.Shutdown(sctx)
		<-errc
	})
	d.restored, err = tk.Restore(ctx, d.new)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	if d.handErr != nil {
		t.Fatalf("HandOff: %v", d.handErr)
	}
	return d
}

// The whole deploy: every connection moves with its state, Context and
// ID; a message being received when the move starts completes where it
// started; messages sent during the move are delivered once, by the new
// server; what the old server wrote during the move arrives once; the old
// server runs OnMoved and no OnClose; the listener serves new clients from
// the new server; the old server stops.
func TestHandOffMovesConnections(t *testing.T) {
	const n = 20
	oldApp, newApp := newMovingApp("A"), newMovingApp("B")
	old := startOld(t, oldApp, engine.Options{})
	addr := old.Addr().String()
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = dialWS(t, addr, fmt.Sprintf("/p?i=%d", i))
		if err := clients[i].send(codec.OpText, []byte("w")); err != nil {
			t.Fatal(err)
		}
		clients[i].expect(t, codec.OpText, "A 1 w")
	}
	// Client 0 is in the middle of a message when the move starts.
	if err := clients[0].sendFrame(false, codec.OpText, []byte("par")); err != nil {
		t.Fatal(err)
	}
	var hookErr error
	engine.SetHandOffMarkedHook(old, func() {
		// During the move: client 0 finishes its message, client 1
		// sends one, and the old server writes to client 2.
		if err := clients[0].sendFrame(true, codec.OpContinuation, []byte("tial")); err != nil {
			hookErr = err
		}
		if err := clients[1].send(codec.OpText, []byte("during")); err != nil {
			hookErr = err
		}
		if err := oldApp.conn("/p?i=2").WriteMessage(handler.Text, []byte("A wrote")); err != nil {
			hookErr = err
		}
	})
	d := deploy(t, old, newApp, &engine.HandOffOptions{State: func() ([]byte, error) { return []byte("rooms"), nil }}, engine.Options{})
	if hookErr != nil {
		t.Fatal(hookErr)
	}
	if d.handed.Moved != n || d.handed.Listeners != 1 || len(d.handed.Stayed) != 0 {
		t.Errorf("HandOff: %+v", d.handed)
	}
	if d.restored.Restored != n || d.restored.Refused != 0 || d.restored.Partial {
		t.Errorf("Restore: %+v", d.restored)
	}
	if d.global != "rooms" {
		t.Errorf("global state %q", d.global)
	}
	// The message that was being received completed on the old server;
	// the one sent during the move is delivered by the new one; what the
	// old one wrote arrives once.
	clients[0].expect(t, codec.OpText, "A 2 partial")
	clients[1].expect(t, codec.OpText, "B 2 during")
	clients[2].expect(t, codec.OpText, "A wrote")
	for i, c := range clients {
		want := 2
		if i < 2 {
			want = 3
		}
		if err := c.send(codec.OpText, []byte("x")); err != nil {
			t.Fatal(err)
		}
		c.expect(t, codec.OpText, fmt.Sprintf("B %d x", want)) // anything else first fails: a close, a duplicate
	}
	// The old server saw every connection go, none close.
	oldApp.mu.Lock()
	if oldApp.closed != 0 || len(oldApp.moved) != n {
		t.Errorf("old server: %d OnClose, %d OnMoved; want 0 and %d", oldApp.closed, len(oldApp.moved), n)
	}
	movedIDs := map[uint64]bool{}
	for _, id := range oldApp.moved {
		movedIDs[id] = true
	}
	oldApp.mu.Unlock()
	newApp.mu.Lock()
	for _, id := range newApp.restored {
		if !movedIDs[id] {
			t.Errorf("connection %d restored with an ID the old server did not have", id)
		}
	}
	if len(newApp.restored) != n {
		t.Errorf("%d restored", len(newApp.restored))
	}
	newApp.mu.Unlock()
	if st := old.Stats(); st.MovedOut != n || st.Conns != 0 {
		t.Errorf("old server stats: MovedOut %d Conns %d", st.MovedOut, st.Conns)
	}
	if st := d.new.Stats(); st.MovedIn != n || st.Open != n {
		t.Errorf("new server stats: MovedIn %d Open %d", st.MovedIn, st.Open)
	}
	// New clients reach the new server through the same listener.
	c := dialWS(t, addr, "/late")
	if err := c.send(codec.OpText, []byte("y")); err != nil {
		t.Fatal(err)
	}
	c.expect(t, codec.OpText, "B 1 y")
	for _, c := range append(clients, c) {
		c.conn.Close() // before the new server's drain, which would wait for their answers
	}
}
