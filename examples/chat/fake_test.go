package main

import (
	"encoding/binary"
	"encoding/json"
	"io"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// fakeConn is a handler.Conn that records what the hub writes to it.
type fakeConn struct {
	name    string
	discard bool // count writes without keeping them (big rooms under -race)
	written int

	mu      sync.Mutex
	ctx     any
	msgs    []map[string]any
	closed  bool
	code    uint16
	reason  string
	changed chan struct{} // gets a token after every write or close
}

func newFakeConn(name string) *fakeConn {
	return &fakeConn{name: name, changed: make(chan struct{}, 1)}
}

func (c *fakeConn) record(payload []byte) error {
	if c.discard {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.written++
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		panic("hub wrote invalid JSON: " + string(payload))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return handler.ErrClosed
	}
	c.msgs = append(c.msgs, m)
	c.signal()
	return nil
}

func (c *fakeConn) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *fakeConn) WriteMessage(op handler.Op, data []byte) error {
	if op != handler.Text {
		panic("hub wrote a binary message")
	}
	return c.record(data)
}

func (c *fakeConn) WritePrepared(f *codec.PreparedFrame) error {
	b := f.Bytes()
	n, hdr := int(b[1]&0x7f), 2
	switch n {
	case 126:
		n, hdr = int(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		n, hdr = int(binary.BigEndian.Uint64(b[2:])), 10
	}
	if b[0] != 0x81 || len(b) != hdr+n {
		panic("bad prepared frame")
	}
	return c.record(b[hdr:])
}

func (c *fakeConn) NextWriter(handler.Op) (io.WriteCloser, error) { panic("unused") }
func (c *fakeConn) Ping([]byte) error                             { return nil }
func (c *fakeConn) Pong([]byte) error                             { return nil }
func (c *fakeConn) Backlog() int                                  { return 0 }
func (c *fakeConn) NotifyBacklog(_ int, f func())                 { f() }
func (c *fakeConn) PauseReading()                                 {}
func (c *fakeConn) ResumeReading()                                {}

func (c *fakeConn) Close(code uint16, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed, c.code, c.reason = true, code, reason
		c.signal()
	}
	return nil
}

func (c *fakeConn) Context() any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ctx
}

func (c *fakeConn) SetContext(v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ctx = v
}

func (c *fakeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000} }
func (c *fakeConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080} }
func (c *fakeConn) Subprotocol() string  { return "" }
func (c *fakeConn) Path() string         { return "/ws" }
func (c *fakeConn) RawQuery() string     { return "" }

// messages returns a copy of what was written so far.
func (c *fakeConn) messages() []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]map[string]any(nil), c.msgs...)
}

// ofType returns the written messages of one type.
func (c *fakeConn) ofType(typ string) []map[string]any {
	var out []map[string]any
	for _, m := range c.messages() {
		if m["type"] == typ {
			out = append(out, m)
		}
	}
	return out
}

// last returns the last written message of a type, or nil.
func (c *fakeConn) last(typ string) map[string]any {
	ms := c.ofType(typ)
	if len(ms) == 0 {
		return nil
	}
	return ms[len(ms)-1]
}

func (c *fakeConn) closeCode() (bool, uint16, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed, c.code, c.reason
}

// waitFor waits until cond holds for c, failing the test after a bound.
func (c *fakeConn) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-c.changed:
		case <-deadline.C:
			t.Fatalf("%s: timed out waiting for %s; got %v", c.name, what, c.messages())
		}
	}
}

// fakeServer implements Broadcaster the way the engine does: the same
// prepared frame to every connection, errors ignored (the engine closes a
// slow consumer itself).
type fakeServer struct{}

func (fakeServer) Broadcast(conns []handler.Conn, f *codec.PreparedFrame) {
	for _, c := range conns {
		_ = c.WritePrepared(f)
	}
}

// connect runs the upgrade hook and OnOpen for a fake connection, as the
// engine would.
func connect(t *testing.T, h *Hub, room, name string) *fakeConn {
	t.Helper()
	return connectConn(t, h, room, newFakeConn(name))
}

// connectQuiet is connect for a member whose messages the test ignores.
func connectQuiet(t *testing.T, h *Hub, room, name string) *fakeConn {
	t.Helper()
	c := newFakeConn(name)
	c.discard = true
	return connectConn(t, h, room, c)
}

func connectConn(t *testing.T, h *Hub, room string, c *fakeConn) *fakeConn {
	t.Helper()
	name := c.name
	var res handler.UpgradeResponse
	if err := h.OnUpgrade(&handler.Request{Method: "GET", Path: "/ws", RawQuery: "room=" + room + "&name=" + name}, &res); err != nil {
		t.Fatalf("upgrade %s/%s: %v", room, name, err)
	}
	c.SetContext(res.Context)
	h.OnOpen(c)
	return c
}

func say(h *Hub, c *fakeConn, text string) {
	h.OnMessage(c, handler.Text, mustJSON(clientMsg{Type: "message", Text: text}))
}

func names(m map[string]any) []string {
	if m == nil {
		return nil
	}
	var out []string
	for _, n := range m["names"].([]any) {
		out = append(out, n.(string))
	}
	return out
}

// memberView is a room's member list as a client keeps it: the last
// "members" message, then every join and leave after it, as the page does.
type memberView struct {
	names map[string]bool
	count int
}

// view replays what c received into the member list a client would show.
func (c *fakeConn) view() memberView {
	return replayView(c.messages())
}

func replayView(msgs []map[string]any) memberView {
	v := memberView{names: map[string]bool{}}
	for _, m := range msgs {
		v = replayInto(v, m)
	}
	return v
}

// replayInto applies one received message to a member view.
func replayInto(v memberView, m map[string]any) memberView {
	switch m["type"] {
	case "members":
		v.names = map[string]bool{}
		for _, n := range names(m) {
			v.names[n] = true
		}
	case "join":
		v.names[m["name"].(string)] = true
	case "leave":
		delete(v.names, m["name"].(string))
	case "presence":
		for _, n := range m["left"].([]any) {
			delete(v.names, n.(string))
		}
		for _, n := range m["joined"].([]any) {
			v.names[n.(string)] = true
		}
	default:
		return v
	}
	v.count = int(m["count"].(float64))
	return v
}

// sorted returns the view's names in order.
func (v memberView) sorted() []string {
	return slices.Sorted(maps.Keys(v.names))
}
