package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// startApp runs a chat App on a free loopback port until the test ends.
func startApp(t *testing.T, cfg Config) *App {
	t.Helper()
	app, stop := runApp(t, cfg)
	t.Cleanup(stop)
	return app
}

// runApp starts a chat App and returns it with a func that stops it and
// waits for it to end (idempotent).
func runApp(t *testing.T, cfg Config) (*App, func()) {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	app := NewApp(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	if err := app.Start(ctx); err != nil {
		cancel()
		t.Fatalf("chat server did not start: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- app.Wait() }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("chat server: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("chat server did not stop within 15s")
			}
		})
	}
	return app, stop
}

// wsClient is a minimal WebSocket client for the tests, on gobwas/ws
// primitives: it answers pings and collects the server's JSON messages.
type wsClient struct {
	name  string
	conn  net.Conn
	wmu   sync.Mutex
	msgs  chan map[string]any
	done  chan struct{}
	close ws.StatusCode // valid after done
	text  string        // close reason, valid after done
	bytes atomic.Int64  // payload bytes of the text messages received
}

// dialChat opens /ws?room=ROOM&name=NAME on the app.
func dialChat(t *testing.T, addr net.Addr, room, name string) (*wsClient, error) {
	t.Helper()
	u := "ws://" + addr.String() + "/ws?room=" + url.QueryEscape(room) + "&name=" + url.QueryEscape(name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := ws.Dial(ctx, u)
	if err != nil {
		return nil, err
	}
	if br != nil {
		// The server may have sent frames right behind the 101.
		conn = readConn{Conn: conn, r: io.MultiReader(io.LimitReader(br, int64(br.Buffered())), conn)}
	}
	c := &wsClient{name: name, conn: conn, msgs: make(chan map[string]any, 10000), done: make(chan struct{})}
	go c.readLoop()
	t.Cleanup(func() { _ = c.conn.Close(); <-c.done })
	return c, nil
}

func mustDial(t *testing.T, addr net.Addr, room, name string) *wsClient {
	t.Helper()
	c, err := dialChat(t, addr, room, name)
	if err != nil {
		t.Fatalf("dial %s/%s: %v", room, name, err)
	}
	return c
}

func (c *wsClient) readLoop() {
	defer close(c.done)
	for {
		f, err := ws.ReadFrame(c.conn)
		if err != nil {
			return
		}
		switch f.Header.OpCode {
		case ws.OpText:
			c.bytes.Add(int64(len(f.Payload)))
			var m map[string]any
			if json.Unmarshal(f.Payload, &m) == nil {
				c.msgs <- m
			}
		case ws.OpPing:
			c.write(ws.NewPongFrame(f.Payload))
		case ws.OpClose:
			c.close, c.text = ws.ParseCloseFrameData(f.Payload)
			c.write(ws.NewCloseFrame(ws.NewCloseFrameBody(c.close, "")))
			_ = c.conn.Close()
			return
		}
	}
}

func (c *wsClient) write(f ws.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return ws.WriteFrame(c.conn, ws.MaskFrameInPlace(f))
}

func (c *wsClient) say(t *testing.T, text string) {
	t.Helper()
	if err := c.write(ws.NewTextFrame(mustJSON(clientMsg{Type: "message", Text: text}))); err != nil {
		t.Fatalf("%s: send: %v", c.name, err)
	}
}

// expect returns the next message for which match is true, skipping
// others, and fails the test after timeout.
func (c *wsClient) expect(t *testing.T, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		select {
		case m := <-c.msgs:
			if match(m) {
				return m
			}
		case <-c.done:
			// drain what was read before the close
			select {
			case m := <-c.msgs:
				if match(m) {
					return m
				}
				continue
			default:
			}
			t.Fatalf("%s: connection closed (%d %q) while waiting for %s", c.name, c.close, c.text, what)
		case <-timer.C:
			t.Fatalf("%s: timed out waiting for %s", c.name, what)
		}
	}
}

func typeIs(typ string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["type"] == typ }
}

// joined matches the notice of name's join: a "join", or a "presence"
// that lists it among those who joined.
func joined(name string) func(map[string]any) bool { return noticeOf("join", "joined", name) }

// left matches the notice of name's leave.
func left(name string) func(map[string]any) bool { return noticeOf("leave", "left", name) }

func noticeOf(typ, key, name string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		switch m["type"] {
		case typ:
			return m["name"] == name
		case "presence":
			list, _ := m[key].([]any)
			return slices.Contains(list, any(name))
		}
		return false
	}
}

func textIs(text string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["type"] == "message" && m["text"] == text }
}

// waitClosed waits for the server's close frame and returns its code.
func (c *wsClient) waitClosed(t *testing.T) ws.StatusCode {
	t.Helper()
	select {
	case <-c.done:
		return c.close
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not closed within 10s", c.name)
		return 0
	}
}

// readConn reads the bytes gobwas buffered during the handshake first.
type readConn struct {
	net.Conn
	r io.Reader
}

func (c readConn) Read(b []byte) (int, error) { return c.r.Read(b) }
