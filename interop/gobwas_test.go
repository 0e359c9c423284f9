package interop

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/wsloop/wsloop/engine"
)

// dialGobwas connects a gobwas/ws client, offering protocols. Bytes the
// dialer read past the handshake come back in br and must be read first.
func dialGobwas(t *testing.T, addr string, protocols ...string) (net.Conn, io.Reader, ws.Handshake) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := ws.Dialer{Protocols: protocols}
	conn, br, hs, err := d.Dial(ctx, "ws://"+addr+"/ws")
	if err != nil {
		t.Fatalf("gobwas dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn)
		t.Cleanup(func() { ws.PutReader(br) })
	}
	return conn, r, hs
}

// readServerFrame reads one whole frame from the server.
func readServerFrame(r io.Reader) (ws.Frame, error) {
	return ws.ReadFrame(r)
}

func TestGobwasEcho(t *testing.T) {
	addr, _ := startEcho(t, engine.Options{})
	conn, r, _ := dialGobwas(t, addr)
	rw := struct {
		io.Reader
		io.Writer
	}{r, conn}
	for name, p := range payloads() {
		for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary} {
			if op == ws.OpBinary {
				p = binaryOf(p)
			}
			if err := wsutil.WriteClientMessage(conn, op, p); err != nil {
				t.Fatalf("%s %v: write: %v", name, op, err)
			}
			got, gotOp, err := wsutil.ReadServerData(rw)
			if err != nil {
				t.Fatalf("%s %v: read: %v", name, op, err)
			}
			if gotOp != op || !bytes.Equal(got, p) {
				t.Fatalf("%s: sent %v %d bytes, got %v %d bytes", name, op, len(p), gotOp, len(got))
			}
		}
	}
}

func TestGobwasPing(t *testing.T) {
	addr, _ := startEcho(t, engine.Options{})
	conn, r, _ := dialGobwas(t, addr)
	if err := ws.WriteFrame(conn, ws.MaskFrameInPlace(ws.NewPingFrame([]byte("are you there")))); err != nil {
		t.Fatal(err)
	}
	f, err := readServerFrame(r)
	if err != nil {
		t.Fatal(err)
	}
	if f.Header.OpCode != ws.OpPong || string(f.Payload) != "are you there" || f.Header.Masked {
		t.Fatalf("got %+v %q, want an unmasked pong with the ping's payload", f.Header, f.Payload)
	}
}

func TestGobwasClose(t *testing.T) {
	addr, h := startEcho(t, engine.Options{})
	conn, r, _ := dialGobwas(t, addr)
	body := ws.NewCloseFrameBody(4002, "gobwas says bye")
	if err := ws.WriteFrame(conn, ws.MaskFrameInPlace(ws.NewCloseFrame(body))); err != nil {
		t.Fatal(err)
	}
	f, err := readServerFrame(r)
	if err != nil {
		t.Fatal(err)
	}
	if f.Header.OpCode != ws.OpClose {
		t.Fatalf("got %v, want the close reply", f.Header.OpCode)
	}
	code, reason := ws.ParseCloseFrameData(f.Payload)
	if code != 4002 {
		t.Fatalf("server answered close %d %q, want 4002 echoed", code, reason)
	}
	// After the close handshake the server closes the TCP connection
	// first (RFC 6455 §7.1.1).
	if n, err := bufio.NewReader(r).Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("after the close reply: read %d bytes, %v; want EOF", n, err)
	}
	checkServerSawClose(t, h, 4002, "gobwas says bye")
}

func TestGobwasSubprotocol(t *testing.T) {
	addr, _ := startEcho(t, engine.Options{Subprotocols: []string{"chat.v2", "chat.v1"}})
	cases := []struct {
		offer []string
		want  string
	}{
		{[]string{"unknown", "chat.v1"}, "chat.v1"},
		{[]string{"chat.v2", "chat.v1"}, "chat.v2"},
		{[]string{"mqtt"}, ""},
	}
	for _, tc := range cases {
		conn, r, hs := dialGobwas(t, addr, tc.offer...)
		if hs.Protocol != tc.want {
			t.Errorf("offered %q: client sees subprotocol %q, want %q", tc.offer, hs.Protocol, tc.want)
		}
		if err := wsutil.WriteClientText(conn, []byte(askProtocol)); err != nil {
			t.Fatal(err)
		}
		got, err := wsutil.ReadServerText(struct {
			io.Reader
			io.Writer
		}{r, conn})
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "subprotocol="+tc.want {
			t.Errorf("offered %q: the server side sees %q, want %q", tc.offer, got, tc.want)
		}
		conn.Close()
	}
}
