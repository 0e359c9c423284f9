package interop

import (
	"bytes"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// dialGorilla connects a gorilla/websocket client, offering protocols.
func dialGorilla(t *testing.T, addr string, protocols ...string) (*websocket.Conn, *http.Response) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: protocols}
	c, resp, err := d.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatalf("gorilla dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return c, resp
}

func TestGorillaEcho(t *testing.T) {
	addr, _ := startEcho(t, engine.Options{})
	c, _ := dialGorilla(t, addr)
	for name, p := range payloads() {
		for _, mt := range []int{websocket.TextMessage, websocket.BinaryMessage} {
			if mt == websocket.BinaryMessage {
				p = binaryOf(p)
			}
			if err := c.WriteMessage(mt, p); err != nil {
				t.Fatalf("%s type %d: write: %v", name, mt, err)
			}
			gotType, got, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("%s type %d: read: %v", name, mt, err)
			}
			if gotType != mt || !bytes.Equal(got, p) {
				t.Fatalf("%s: sent type %d, %d bytes; got type %d, %d bytes", name, mt, len(p), gotType, len(got))
			}
		}
	}
}

// TestGorillaFragmentedEcho sends a message through NextWriter with a small
// write buffer, so gorilla fragments it, and expects it echoed whole.
func TestGorillaFragmentedEcho(t *testing.T) {
	addr, _ := startEcho(t, engine.Options{})
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, WriteBufferSize: 512}
	c, _, err := d.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := payloads()["1MiB"]
	w, err := c.NextWriter(websocket.TextMessage)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(p); i += 10000 {
		if _, err := w.Write(p[i:min(i+10000, len(p))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, got, err := c.ReadMessage()
	if err != nil || !bytes.Equal(got, p) {
		t.Fatalf("fragmented 1 MiB echo: %d bytes, %v", len(got), err)
	}
}

func TestGorillaPing(t *testing.T) {
	addr, _ := startEcho(t, engine.Options{})
	c, _ := dialGorilla(t, addr)
	pongs := make(chan string, 1)
	c.SetPongHandler(func(data string) error { pongs <- data; return nil })
	if err := c.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// gorilla handles control frames inside ReadMessage: the pong arrives
	// before the echo of a message sent after the ping.
	if err := c.WriteMessage(websocket.TextMessage, []byte("after ping")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.ReadMessage(); err != nil || string(got) != "after ping" {
		t.Fatalf("echo after ping: %q, %v", got, err)
	}
	select {
	case got := <-pongs:
		if got != "are you there" {
			t.Fatalf("pong payload %q, want the ping's", got)
		}
	default:
		t.Fatal("no pong arrived before the echo of the next message")
	}
}

func TestGorillaClose(t *testing.T) {
	addr, h := startEcho(t, engine.Options{})
	c, _ := dialGorilla(t, addr)
	msg := websocket.FormatCloseMessage(4001, "done here")
	if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("after sending close: %v, want the server's close frame", err)
	}
	if ce.Code != 4001 {
		t.Fatalf("server answered close code %d (%q), want 4001 echoed", ce.Code, ce.Text)
	}
	t.Logf("server answered close %d %q", ce.Code, ce.Text)
	checkServerSawClose(t, h, 4001, "done here")
}

// checkServerSawClose checks that OnClose reported the client's close code
// and reason as a remote *handler.CloseError.
func checkServerSawClose(t *testing.T, h *echoHandler, code uint16, reason string) {
	t.Helper()
	err, ok := h.waitClose(1, 5*time.Second)
	if !ok {
		t.Fatal("OnClose did not run within 5s of the close handshake")
	}
	var ce *handler.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("OnClose err = %v, want a *handler.CloseError", err)
	}
	if ce.Code != code || ce.Reason != reason || !ce.Remote {
		t.Fatalf("OnClose err = %+v, want code %d reason %q from the peer", *ce, code, reason)
	}
}

func TestGorillaSubprotocol(t *testing.T) {
	addr, _ := startEcho(t, engine.Options{Subprotocols: []string{"chat.v2", "chat.v1"}})
	cases := []struct {
		offer []string
		want  string
	}{
		{[]string{"unknown", "chat.v1"}, "chat.v1"},
		{[]string{"chat.v2"}, "chat.v2"},
		{[]string{"mqtt"}, ""},
		{nil, ""},
	}
	for _, tc := range cases {
		c, resp := dialGorilla(t, addr, tc.offer...)
		if got := c.Subprotocol(); got != tc.want {
			t.Errorf("offered %q: client sees subprotocol %q, want %q", tc.offer, got, tc.want)
		}
		if tc.want == "" && resp.Header.Get("Sec-WebSocket-Protocol") != "" {
			t.Errorf("offered %q: server sent Sec-WebSocket-Protocol %q, want none (RFC 6455 §4.2.2)", tc.offer, resp.Header.Get("Sec-WebSocket-Protocol"))
		}
		if err := c.WriteMessage(websocket.TextMessage, []byte(askProtocol)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "subprotocol="+tc.want {
			t.Errorf("offered %q: the server side sees %q, want %q", tc.offer, got, tc.want)
		}
		c.Close()
	}
}

// binaryOf returns p with the high bit flipped, so binary payloads are not
// valid UTF-8 and a server that mistakes them for text would fail.
func binaryOf(p []byte) []byte {
	b := make([]byte, len(p))
	for i := range p {
		b[i] = p[i] ^ 0x80
	}
	return b
}
