//go:build linux

package engine_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
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
	refuse   string        // OnMove (old) or OnRestore (new) fails for this path
	release  chan struct{} // a message "nw" sends its reply through a NextWriter, finished once this is closed
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
	if string(data) == "nw" {
		w, err := c.NextWriter(handler.Text)
		if err != nil {
			panic(err)
		}
		_, _ = w.Write([]byte("part1 "))
		go func() {
			<-a.release
			_, _ = w.Write([]byte("part2"))
			_ = w.Close()
		}()
		return
	}
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
	a.conns[st.Path] = c
	a.mu.Unlock()
	return nil, &st, nil
}

// deploy runs a whole handoff from old to a new server for app, and
// returns the new server and both sides' results once the old server's
// HandOff returned.
type deployment struct {
	old, new *engine.Server
	ctx      context.Context
	tk       *engine.Takeover
	done     chan struct{} // closed when HandOff returned
	handed   *engine.HandOffResult
	handErr  error
	restored *engine.RestoreResult
	mu       sync.Mutex
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
	d := beginDeploy(t, old, ho)
	d.finish(t, app, opts)
	d.waitHandOff(t)
	if d.handErr != nil {
		t.Fatalf("HandOff: %v", d.handErr)
	}
	return d
}

// beginDeploy starts old's HandOff and takes its listeners over.
func beginDeploy(t *testing.T, old *engine.Server, ho *engine.HandOffOptions) *deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	dir := filepath.Join(t.TempDir(), "handoff")
	d := &deployment{old: old, ctx: ctx, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		d.handed, d.handErr = old.HandOff(ctx, dir, ho)
	}()
	var err error
	d.tk, err = engine.TakeOver(ctx, dir, &engine.TakeOverOptions{
		Logger: discardLogger,
		State: func(st []byte, ok bool) error {
			d.mu.Lock()
			defer d.mu.Unlock()
			if ok {
				d.global = string(st)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// finish starts the new server on the listener taken over and restores
// the connections onto it.
func (d *deployment) finish(t *testing.T, app handler.Handler, opts engine.Options) {
	t.Helper()
	if opts.EventLoops == 0 {
		opts.EventLoops = 2
	}
	opts.Logger = discardLogger
	ln := d.tk.Listener("")
	if ln == nil {
		t.Fatal("the old server's listener did not come")
	}
	opts.Listener = ln
	d.new = engine.New(app, opts)
	if err := d.new.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, d.new)
	var err error
	d.restored, err = d.tk.Restore(d.ctx, d.new)
	if err != nil {
		t.Fatal(err)
	}
}

// waitHandOff waits until the old server's HandOff returned.
func (d *deployment) waitHandOff(t *testing.T) {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		t.Fatal("HandOff did not return")
	}
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
	d := beginDeploy(t, old, &engine.HandOffOptions{State: func() ([]byte, error) { return []byte("rooms"), nil }})
	// A client connecting in the middle of the deploy is not refused: it
	// waits in the listen queue and is served by the new server once the
	// moved connections are in place.
	early, err := dialRaw(addr)
	if err != nil {
		t.Fatalf("connecting during the deploy: %v", err)
	}
	if _, err := early.conn.Write([]byte(upgradeRequest(addr, "/early"))); err != nil {
		t.Fatal(err)
	}
	d.finish(t, newApp, engine.Options{})
	d.waitHandOff(t)
	if d.handErr != nil {
		t.Fatal(d.handErr)
	}
	if err := early.readResponse(); err != nil || early.resp.StatusCode != 101 {
		t.Fatalf("the client that connected during the deploy: %v %v", early.resp, err)
	}
	if err := early.send(codec.OpText, []byte("e")); err != nil {
		t.Fatal(err)
	}
	early.expect(t, codec.OpText, "B 1 e")
	early.conn.Close()
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

// What cannot move stays and is served until it closes: a connection whose
// OnMove fails, one still in its handshake. The old server's HandOff
// returns once they are gone; with a negative DrainTimeout they get 1001
// at once.
func TestHandOffWhatStays(t *testing.T) {
	for _, drain := range []time.Duration{0, -1} {
		t.Run(fmt.Sprintf("drain=%v", drain), func(t *testing.T) {
			oldApp := newMovingApp("A")
			oldApp.refuse = "/stay"
			old := startOld(t, oldApp, engine.Options{})
			addr := old.Addr().String()
			mover := dialWS(t, addr, "/go")
			stay := dialWS(t, addr, "/stay")
			half, err := dialRaw(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer half.conn.Close()
			if _, err := half.conn.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
				t.Fatal(err)
			}
			for _, c := range []*wsClient{mover, stay} {
				if err := c.send(codec.OpText, []byte("w")); err != nil {
					t.Fatal(err)
				}
				c.expect(t, codec.OpText, "A 1 w")
			}
			d := beginDeploy(t, old, &engine.HandOffOptions{DrainTimeout: drain})
			d.finish(t, newMovingApp("B"), engine.Options{})
			if err := mover.send(codec.OpText, []byte("x")); err != nil {
				t.Fatal(err)
			}
			mover.expect(t, codec.OpText, "B 2 x")
			if drain < 0 {
				stay.expectClose(t, codec.CloseGoingAway)
				if err := stay.sendClose(codec.CloseGoingAway, ""); err != nil {
					t.Fatal(err)
				}
				if err := half.waitEOF(readTimeout); err != nil {
					t.Fatalf("the connection in its handshake: %v", err)
				}
			} else {
				// Served by the old server until it leaves.
				if err := stay.send(codec.OpText, []byte("x")); err != nil {
					t.Fatal(err)
				}
				stay.expect(t, codec.OpText, "A 2 x")
				stay.closeCleanly(t)
				half.conn.Close()
			}
			d.waitHandOff(t)
			if d.handErr != nil {
				t.Fatal(d.handErr)
			}
			if d.handed.Moved != 1 || d.handed.Stayed["application"] != 1 || d.handed.Stayed["handshake"] != 1 {
				t.Errorf("HandOff: moved %d, stayed %v", d.handed.Moved, d.handed.Stayed)
			}
			if want := int64(0); drain < 0 {
				if d.handed.Drained != 2 {
					t.Errorf("Drained %d, want 2", d.handed.Drained)
				}
			} else if d.handed.Drained != want {
				t.Errorf("Drained %d, want %d", d.handed.Drained, want)
			}
			oldApp.mu.Lock()
			if oldApp.closed != 1 || len(oldApp.moved) != 1 {
				t.Errorf("old server: %d OnClose, %d OnMoved; want 1 and 1", oldApp.closed, len(oldApp.moved))
			}
			oldApp.mu.Unlock()
			mover.conn.Close()
		})
	}
}

// A successor that gives up after taking the listener leaves everything
// with the old server: the connections are put back as they were (a
// message sent during the move is delivered once, by the old server), the
// old listener accepts again, and HandOff says why.
func TestHandOffCalledOff(t *testing.T) {
	oldApp := newMovingApp("A")
	old := startOld(t, oldApp, engine.Options{})
	addr := old.Addr().String()
	clients := make([]*wsClient, 6)
	for i := range clients {
		clients[i] = dialWS(t, addr, fmt.Sprintf("/p?i=%d", i))
		if err := clients[i].send(codec.OpText, []byte("w")); err != nil {
			t.Fatal(err)
		}
		clients[i].expect(t, codec.OpText, "A 1 w")
	}
	// The successor gives up during the move, after a message arrived.
	var d *deployment
	taken := make(chan struct{})
	engine.SetHandOffMarkedHook(old, func() {
		_ = clients[1].send(codec.OpText, []byte("during"))
		<-taken
		d.tk.Listener("").Close() // that process will not serve after all
		d.tk.Close()
	})
	d = beginDeploy(t, old, nil)
	close(taken)
	d.waitHandOff(t)
	if d.handErr == nil {
		t.Fatalf("HandOff succeeded with a successor that gave up: %+v", d.handed)
	}
	clients[1].expect(t, codec.OpText, "A 2 during")
	for i, c := range clients {
		want := 2
		if i == 1 {
			want = 3
		}
		if err := c.send(codec.OpText, []byte("x")); err != nil {
			t.Fatal(err)
		}
		c.expect(t, codec.OpText, fmt.Sprintf("A %d x", want))
	}
	c := dialWS(t, addr, "/late")
	if err := c.send(codec.OpText, []byte("y")); err != nil {
		t.Fatal(err)
	}
	c.expect(t, codec.OpText, "A 1 y")
	oldApp.mu.Lock()
	if oldApp.closed != 0 || len(oldApp.moved) != 0 {
		t.Errorf("old server: %d OnClose, %d OnMoved after a called-off handoff", oldApp.closed, len(oldApp.moved))
	}
	oldApp.mu.Unlock()
	if st := old.Stats(); st.MovedOut != 0 || st.Open != int64(len(clients)+1) {
		t.Errorf("old server: MovedOut %d Open %d", st.MovedOut, st.Open)
	}
	for _, c := range append(clients, c) {
		c.conn.Close()
	}
}

// A connection the new server cannot restore is closed with 1012 Service
// Restart, after whatever the old server had written to it; the others
// are served.
func TestHandOffRestoreRefused(t *testing.T) {
	old := startOld(t, newMovingApp("A"), engine.Options{})
	addr := old.Addr().String()
	good, bad := dialWS(t, addr, "/good"), dialWS(t, addr, "/bad")
	for _, c := range []*wsClient{good, bad} {
		if err := c.send(codec.OpText, []byte("w")); err != nil {
			t.Fatal(err)
		}
		c.expect(t, codec.OpText, "A 1 w")
	}
	newApp := newMovingApp("B")
	newApp.refuse = "/bad"
	d := deploy(t, old, newApp, nil, engine.Options{})
	if d.restored.Restored != 1 || d.restored.Refused != 1 {
		t.Errorf("Restore: %+v", d.restored)
	}
	bad.expectClose(t, codec.CloseServiceRestart)
	if err := good.send(codec.OpText, []byte("x")); err != nil {
		t.Fatal(err)
	}
	good.expect(t, codec.OpText, "B 2 x")
	good.conn.Close()
	bad.conn.Close()
}

// With no successor, HandOff gives up when its context ends, and the
// server serves on.
func TestHandOffNoSuccessor(t *testing.T) {
	old := startOld(t, newMovingApp("A"), engine.Options{})
	c := dialWS(t, old.Addr().String(), "/")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := old.HandOff(ctx, filepath.Join(t.TempDir(), "ho"), nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("HandOff with nobody taking over: %v", err)
	}
	if err := c.send(codec.OpText, []byte("x")); err != nil {
		t.Fatal(err)
	}
	c.expect(t, codec.OpText, "A 1 x")
	c2 := dialWS(t, old.Addr().String(), "/")
	if err := c2.send(codec.OpText, []byte("y")); err != nil {
		t.Fatal(err)
	}
	c2.expect(t, codec.OpText, "A 1 y")
	c.conn.Close()
	c2.conn.Close()
}

// dialApp is the handler of a connection its server dialed; it moves too.
type dialApp struct {
	handler.Base
	got  chan string
	mu   sync.Mutex
	conn handler.Conn
}

func (a *dialApp) OnOpen(c handler.Conn) { a.mu.Lock(); a.conn = c; a.mu.Unlock() }
func (a *dialApp) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	a.got <- string(data)
}
func (a *dialApp) OnMove(handler.Conn) ([]byte, error) { return []byte("dialed"), nil }
func (a *dialApp) OnMoved(handler.Conn)                {}
func (a *dialApp) OnRestore(c handler.Conn, st []byte) (handler.Handler, any, error) {
	if string(st) != "dialed" {
		return nil, nil, fmt.Errorf("state %q", st)
	}
	a.mu.Lock()
	a.conn = c
	a.mu.Unlock()
	return nil, nil, nil
}

// A connection the old server dialed moves like the others: the new
// server writes on it (masked, as a client must) and gets the answers,
// and the remote server never notices.
func TestHandOffMovesDialedConnections(t *testing.T) {
	remote := startOld(t, newMovingApp("S"), engine.Options{})
	oldApp := &dialApp{got: make(chan string, 4)}
	old := startOld(t, oldApp, engine.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := old.Dial(ctx, "ws://"+remote.Addr().String()+"/up", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMessage(handler.Text, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if got := waitN(t, oldApp.got, 1, readTimeout)[0]; got != "S 1 hi" {
		t.Fatalf("before the move: %q", got)
	}
	newApp := &dialApp{got: make(chan string, 4)}
	d := deploy(t, old, newApp, nil, engine.Options{})
	if d.handed.Moved != 1 {
		t.Fatalf("HandOff: %+v", d.handed)
	}
	newApp.mu.Lock()
	nc := newApp.conn
	newApp.mu.Unlock()
	if nc == nil || engine.ConnID(nc) != engine.ConnID(c) {
		t.Fatalf("restored dialed connection %v", nc)
	}
	if err := nc.WriteMessage(handler.Text, []byte("again")); err != nil {
		t.Fatal(err)
	}
	if got := waitN(t, newApp.got, 1, readTimeout)[0]; got != "S 2 again" {
		t.Fatalf("after the move: %q", got)
	}
	_ = nc.Close(1000, "")
}

// The time left on a connection's timers moves with it: a connection idle
// for 6 of its 10 seconds, its probe ping sent, is closed for idleness 4
// seconds after the move, not 10, and gets no second probe.
func TestHandOffKeepsTimers(t *testing.T) {
	clk := enginetest.NewClock()
	opts := engine.Options{Clock: clk, IdleTimeout: 10 * time.Second}
	old := startOld(t, newMovingApp("A"), opts)
	c := dialWS(t, old.Addr().String(), "/")
	if err := c.send(codec.OpText, []byte("w")); err != nil {
		t.Fatal(err)
	}
	c.expect(t, codec.OpText, "A 1 w")
	clk.Advance(6 * time.Second)
	if f, err := c.read(readTimeout); err != nil || f.op != codec.OpPing {
		t.Fatalf("want the idle probe, got %v %v", f, err)
	}
	d := deploy(t, old, newMovingApp("B"), nil, opts)
	clk.Advance(3 * time.Second)
	if st := d.new.Stats(); st.Open != 1 {
		t.Fatalf("closed after 9 s idle: %+v", st)
	}
	clk.Advance(2 * time.Second)
	f := c.expectClose(t, codec.CloseGoingAway)
	if f.reason != "idle timeout" {
		t.Errorf("closed with %q", f.reason)
	}
	c.conn.Close()
}

func TestMain(m *testing.M) {
	if os.Getenv("ENGINE_HANDOFF_ROLE") == "dying-old" {
		os.Exit(runDyingOld())
	}
	os.Exit(m.Run())
}

// runDyingOld is an old server in a process of its own that dies (SIGKILL)
// in the middle of a handoff, right after its first batch of connections
// went out. It prints its address, then waits for "go DIR" on stdin.
func runDyingOld() int {
	srv := engine.New(newMovingApp("A"), engine.Options{Addr: "127.0.0.1:0", EventLoops: 2, Logger: discardLogger})
	if err := srv.Start(context.Background()); err != nil {
		return 2
	}
	fmt.Printf("addr %s\n", srv.Addr())
	var dir string
	if _, err := fmt.Scanf("go %s\n", &dir); err != nil {
		return 2
	}
	engine.SetHandOffBatchHook(srv, func(n int) {
		if n == 1 {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	})
	_, err := srv.HandOff(context.Background(), dir, nil)
	fmt.Println("handoff returned", err)
	return 1
}

// An old process that dies in the middle of a handoff leaves the
// connections it had given to the new one, which serves them
// (RestoreResult.Partial); the others die with it.
func TestHandOffOldDies(t *testing.T) {
	const n = 300 // a first batch of 253, then one of 47
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "ENGINE_HANDOFF_ROLE=dying-old")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var addr string
	if _, err := fmt.Fscanf(stdout, "addr %s\n", &addr); err != nil {
		t.Fatal(err)
	}
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = dialWS(t, addr, fmt.Sprintf("/p?i=%d", i))
		if err := clients[i].send(codec.OpText, []byte("w")); err != nil {
			t.Fatal(err)
		}
		clients[i].expect(t, codec.OpText, "A 1 w")
	}
	dir := filepath.Join(t.TempDir(), "ho")
	if _, err := fmt.Fprintf(stdin, "go %s\n", dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var global bool
	tk, err := engine.TakeOver(ctx, dir, &engine.TakeOverOptions{Logger: discardLogger, State: func(_ []byte, ok bool) error {
		global = ok
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := engine.New(newMovingApp("B"), engine.Options{EventLoops: 2, Logger: discardLogger, Listener: tk.Listener("")})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, srv)
	res, err := tk.Restore(ctx, srv)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Partial || res.Restored != 253 || global {
		t.Fatalf("Restore after the old process died: %+v (global state: %v)", res, global)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("the old process did not die")
	}
	alive, gone := 0, 0
	for _, c := range clients {
		if err := c.send(codec.OpText, []byte("x")); err != nil {
			gone++
			continue
		}
		f, err := c.read(readTimeout)
		switch {
		case err == nil && f.op == codec.OpText && string(f.data) == "B 2 x":
			alive++
		case err != nil:
			gone++
		default:
			t.Fatalf("got %v", f)
		}
	}
	if alive != 253 || gone != n-253 {
		t.Errorf("%d connections served by the new process, %d gone; want 253 and %d", alive, gone, n-253)
	}
	for _, c := range clients {
		c.conn.Close()
	}
}

// The application's own listeners move too, by name: an http.Server's
// TCP listener and a Unix one. The old process accepts nothing more on
// them once the successor has them; the Unix socket's file is left for the
// successor, which serves both.
func TestHandOffApplicationListeners(t *testing.T) {
	old := startOld(t, newMovingApp("A"), engine.Options{})
	tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "app.sock")
	unixLn, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	answer := func(who string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, who) })
	}
	oldHTTP := &http.Server{Handler: answer("old"), ErrorLog: log.New(io.Discard, "", 0)}
	go oldHTTP.Serve(tcpLn)
	oldUnix := &http.Server{Handler: answer("old"), ErrorLog: log.New(io.Discard, "", 0)}
	go oldUnix.Serve(unixLn)
	get := func(c *http.Client, url string) string {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	tcpClient := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	unixClient := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	tcpURL := "http://" + tcpLn.Addr().String() + "/"
	if got := get(tcpClient, tcpURL); got != "old" {
		t.Fatalf("before: %q", got)
	}
	d := beginDeploy(t, old, &engine.HandOffOptions{Listeners: map[string]net.Listener{"http": tcpLn, "unix": unixLn}})
	d.finish(t, newMovingApp("B"), engine.Options{})
	d.waitHandOff(t)
	if d.handErr != nil || d.handed.Listeners != 3 {
		t.Fatalf("HandOff: %+v %v", d.handed, d.handErr)
	}
	// The old process's servers stop; their listeners' files stay.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = oldHTTP.Shutdown(sctx)
	_ = oldUnix.Shutdown(sctx)
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the old process removed the Unix socket the successor serves: %v", err)
	}
	newHTTP := &http.Server{Handler: answer("new")}
	go newHTTP.Serve(d.tk.Listener("http"))
	newUnix := &http.Server{Handler: answer("new")}
	go newUnix.Serve(d.tk.Listener("unix"))
	defer newHTTP.Close()
	defer newUnix.Close()
	for i := 0; i < 3; i++ {
		if got := get(tcpClient, tcpURL); got != "new" {
			t.Fatalf("after the handoff the TCP listener is served by %q", got)
		}
		if got := get(unixClient, "http://unix/"); got != "new" {
			t.Fatalf("after the handoff the Unix listener is served by %q", got)
		}
	}
}

// A wss connection terminated in the old process stays there (crypto/tls
// cannot export a live session's keys): it is served until it leaves,
// while its listener and the plain connections move.
func TestHandOffTLSStays(t *testing.T) {
	cert, _ := enginetest.Certificate(t)
	opts := engine.Options{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	old := startOld(t, newMovingApp("A"), opts)
	addr := old.Addr().String()
	// say opens a wss connection on path and checks the echo of one
	// message: which process answers, and how many it counted.
	say := func(path, msg, want string) *wsClient {
		t.Helper()
		tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		c, err := upgrade(tc, addr, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.conn.Close() })
		if err := c.send(codec.OpText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		c.expect(t, codec.OpText, want)
		return c
	}
	c := say("/secure", "w", "A 1 w")
	d := beginDeploy(t, old, nil)
	d.finish(t, newMovingApp("B"), opts)
	if d.restored.Restored != 0 {
		t.Fatalf("Restore: %+v", d.restored)
	}
	// Still the old process's, after the commit.
	if err := c.send(codec.OpText, []byte("x")); err != nil {
		t.Fatal(err)
	}
	c.expect(t, codec.OpText, "A 2 x")
	// New wss clients reach the new process.
	say("/late", "y", "B 1 y")
	c.closeCleanly(t)
	d.waitHandOff(t)
	if d.handErr != nil || d.handed.Moved != 0 || d.handed.Stayed["tls"] != 1 || d.handed.Drained != 0 {
		t.Fatalf("HandOff: %+v %v", d.handed, d.handErr)
	}
}

// A connection with a NextWriter open when the move starts waits until it
// is closed: the fragmented message arrives whole, from the old process,
// and the connection moves after it.
func TestHandOffWaitsForNextWriter(t *testing.T) {
	oldApp := newMovingApp("A")
	oldApp.release = make(chan struct{})
	old := startOld(t, oldApp, engine.Options{})
	c := dialWS(t, old.Addr().String(), "/")
	if err := c.send(codec.OpText, []byte("nw")); err != nil {
		t.Fatal(err)
	}
	if fin, op, p, err := c.rawFrame(readTimeout); err != nil || fin || op != codec.OpText || string(p) != "part1 " {
		t.Fatalf("first fragment: %v %v %q %v", fin, op, p, err)
	}
	// The writer finishes only after a first pass found it open.
	engine.SetHandOffPassHook(old, func(n int) {
		if n == 1 {
			close(oldApp.release)
		}
	})
	d := deploy(t, old, newMovingApp("B"), nil, engine.Options{})
	if d.handed.Moved != 1 {
		t.Fatalf("HandOff: %+v", d.handed)
	}
	if fin, op, p, err := c.rawFrame(readTimeout); err != nil || op != codec.OpContinuation || string(p) != "part2" {
		t.Fatalf("second fragment: %v %v %q %v", fin, op, p, err)
	} else if !fin {
		if fin, op, p, err := c.rawFrame(readTimeout); err != nil || !fin || op != codec.OpContinuation || len(p) != 0 {
			t.Fatalf("final fragment: %v %v %q %v", fin, op, p, err)
		}
	}
	if err := c.send(codec.OpText, []byte("x")); err != nil {
		t.Fatal(err)
	}
	c.expect(t, codec.OpText, "B 2 x")
	c.conn.Close()
}

// What the application set up on a connection survives the move: a paused
// connection stays paused on the new server (nothing the client sends is
// delivered until the application resumes it), and a client a PROXY
// protocol header named keeps its address, which the new process could
// not learn from the socket.
func TestHandOffKeepsPauseAndProxiedAddress(t *testing.T) {
	oldApp, newApp := newMovingApp("A"), newMovingApp("B")
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	old := startOld(t, oldApp, engine.Options{ProxyProtocol: trusted})
	addr := old.Addr().String()
	dial := func(path, hdr string) *wsClient {
		t.Helper()
		conn, err := net.DialTimeout("tcp", addr, readTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := io.WriteString(conn, hdr); err != nil {
			t.Fatal(err)
		}
		c, err := upgrade(conn, addr, path)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	paused := dial("/paused?", "PROXY TCP4 203.0.113.7 192.0.2.1 5555 443\r\n")
	other := dial("/other?", "PROXY TCP4 203.0.113.8 192.0.2.1 6666 443\r\n")
	for _, c := range []*wsClient{paused, other} {
		if err := c.send(codec.OpText, []byte("w")); err != nil {
			t.Fatal(err)
		}
		c.expect(t, codec.OpText, "A 1 w")
	}
	oldApp.conn("/paused?").PauseReading()

	d := deploy(t, old, newApp, nil, engine.Options{ProxyProtocol: trusted})
	if d.restored.Restored != 2 {
		t.Fatalf("restored %d connections, want 2", d.restored.Restored)
	}
	pc, oc := newApp.conn("/paused?"), newApp.conn("/other?")
	if pc == nil || oc == nil {
		t.Fatal("a connection was not restored under its path")
	}
	if got := pc.RemoteAddr().String(); got != "203.0.113.7:5555" {
		t.Errorf("RemoteAddr after the move = %s, want the client the PROXY header named (203.0.113.7:5555)", got)
	}
	if got := oc.LocalAddr().String(); got != "192.0.2.1:443" {
		t.Errorf("LocalAddr after the move = %s, want 192.0.2.1:443", got)
	}
	// The unpaused one is read at once; the paused one only once resumed.
	if err := paused.send(codec.OpText, []byte("held")); err != nil {
		t.Fatal(err)
	}
	if err := other.send(codec.OpText, []byte("x")); err != nil {
		t.Fatal(err)
	}
	other.expect(t, codec.OpText, "B 2 x")
	// A round trip through the paused connection's own loop: a ping the
	// server sends comes back before anything else would.
	_ = pc.Ping([]byte("p"))
	if f, err := paused.read(readTimeout); err != nil || f.op != codec.OpPing {
		t.Fatalf("ping: %v %v", f, err)
	}
	if n := newApp.count("/paused?"); n != 1 {
		t.Fatalf("the paused connection delivered a message on the new server before its resume (count %d)", n)
	}
	pc.ResumeReading()
	paused.expect(t, codec.OpText, "B 2 held")
}

// count returns how many messages the connection opened with path and
// query p has delivered, old server's included.
func (a *movingApp) count(p string) int {
	c := a.conn(p)
	if c == nil {
		return -1
	}
	return c.Context().(*connState).Count
}

// TestHandOffKeepsPerClientCounts: the new server counts the connections
// it took over against MaxConnsPerClient, so a client at its limit before
// the deploy is still at it after; a moved connection that closes frees
// its place.
func TestHandOffKeepsPerClientCounts(t *testing.T) {
	const src = "127.0.9.1"
	opts := engine.Options{MaxConnsPerClient: 2}
	oldApp, newApp := newMovingApp("A"), newMovingApp("B")
	old := startOld(t, oldApp, opts)
	addr := old.Addr().String()
	var moved []*wsClient
	for _, p := range []string{"/a", "/b"} {
		c := dialFrom(t, src, addr)
		if err := c.request(upgradeRequest(addr, p)); err != nil {
			t.Fatal(err)
		}
		expectStatus(t, c, http.StatusSwitchingProtocols, "", "")
		moved = append(moved, c)
	}
	expectStatus(t, tryUpgrade(t, src, addr), http.StatusTooManyRequests, "5", "too many connections")

	d := deploy(t, old, newApp, nil, opts)
	if d.restored.Restored != 2 {
		t.Fatalf("restored %d connections, want 2", d.restored.Restored)
	}
	if st := d.new.Stats(); st.TrackedClients != 1 {
		t.Fatalf("the new server tracks %d clients, want 1 (the moved connections' client)", st.TrackedClients)
	}
	// Still at its limit on the new server.
	expectStatus(t, tryUpgrade(t, src, addr), http.StatusTooManyRequests, "5", "too many connections")
	if st := d.new.Stats(); st.ClientConnLimited != 1 {
		t.Fatalf("ClientConnLimited %d on the new server, want 1", st.ClientConnLimited)
	}

	moved[0].closeCleanly(t)
	waitFor(t, "the moved connection's close", func() bool { return d.new.Stats().Open == 1 })
	expectStatus(t, tryUpgrade(t, src, addr), http.StatusSwitchingProtocols, "", "")
}
