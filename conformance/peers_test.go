package conformance

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// Tests in this file are not in Autobahn: they cover peers that behave in
// legal but unusual ways, or vanish.

// TestByteAtATime sends the handshake and then frames one byte per write:
// the server must assemble the request (RFC 6455 §4.1 does not promise it
// arrives in one read) and every frame header and payload across reads.
func TestByteAtATime(t *testing.T) {
	addr := startEcho(t, engineOptions())
	conn, err := dialNet(&net.Dialer{Timeout: 5 * time.Second}, addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, conn: conn, br: newReader(conn)}
	defer c.Close()
	req, accept := handshakeRequest(addr)
	if err := c.write(req, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.readHandshake(accept); err != nil {
		t.Fatal(err)
	}
	msgs := []frame{text("a"), textB(repeat("0123456789", 200)), bin(pattern(70000)), ping([]byte("p"))}
	for _, f := range msgs {
		if err := c.write(encodeFrame(f), 1); err != nil {
			t.Fatal(err)
		}
		want := f
		if f.op == opPing {
			want = pong(f.payload)
		}
		got, err := c.readMessage(largeTimeout)
		if err != nil {
			t.Fatalf("after %v sent byte by byte: %v", f, err)
		}
		if !equalFrame(want, got) {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if err := c.closeNormally(); err != nil {
		t.Fatal(err)
	}
}

// TestPipelinedFrame sends the handshake and the first frames in one
// write. §4.1 tells a client to wait for the 101 before sending data, but
// load generators and some clients pipeline anyway, and a server that
// drops or misparses the bytes following the header in the same read
// loses data silently; the robust answer is to accept them.
func TestPipelinedFrame(t *testing.T) {
	addr := startEcho(t, engineOptions())
	first := text("pipelined with the handshake")
	second := bin(pattern(3000))
	pipelined := append(encodeFrame(first), encodeFrame(second)...)
	c, err := dialErr(t, &net.Dialer{Timeout: 5 * time.Second}, addr, pipelined)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, want := range []frame{first, second} {
		got, err := c.readMessage(readTimeout)
		if err != nil {
			t.Fatalf("waiting for the echo of %v: %v", want, err)
		}
		if !equalFrame(want, got) {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if err := c.closeNormally(); err != nil {
		t.Fatal(err)
	}
}

// TestVanishingPeer drops TCP connections at awkward moments, without a
// close frame: in the handshake, inside a frame header, inside a payload,
// inside a fragmented message, with a reset instead of a FIN. The server
// must survive, run OnClose exactly once for every connection whose OnOpen
// ran, and keep serving.
func TestVanishingPeer(t *testing.T) {
	addr, h := startEchoHooks(t, engineOptions())
	big := encodeFrame(bin(pattern(1000)))
	cases := []struct {
		name     string
		upgraded bool   // the handshake completes before the peer vanishes
		partial  []byte // written after the handshake, then the peer vanishes
		reset    bool   // close with RST (SO_LINGER 0) instead of FIN
	}{
		{name: "mid-handshake", partial: nil},
		{name: "after-handshake", upgraded: true},
		{name: "mid-header", upgraded: true, partial: big[:1]},
		{name: "mid-extended-length", upgraded: true, partial: big[:3]},
		{name: "mid-mask-key", upgraded: true, partial: big[:6]},
		{name: "mid-payload", upgraded: true, partial: big[:500]},
		{name: "mid-payload-reset", upgraded: true, partial: big[:500], reset: true},
		{name: "mid-fragmented-message", upgraded: true,
			partial: append(encodeFrame(frag(opText, false, "first")), encodeFrame(frag(opCont, false, "second"))...)},
		{name: "mid-close-frame", upgraded: true, partial: encodeFrame(closeFrame(closeNormal, "bye"))[:4]},
	}
	var upgraded int64
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := dialNet(&net.Dialer{Timeout: 5 * time.Second}, addr)
			if err != nil {
				t.Fatal(err)
			}
			req, accept := handshakeRequest(addr)
			if !tc.upgraded {
				// Half a request line, then gone.
				if _, err := conn.Write(req[:len(req)/2]); err != nil {
					t.Fatal(err)
				}
			} else {
				c := &client{t: t, conn: conn, br: newReader(conn)}
				if err := c.write(req, 0); err != nil {
					t.Fatal(err)
				}
				if err := c.readHandshake(accept); err != nil {
					t.Fatal(err)
				}
				upgraded++
				if err := c.write(tc.partial, 0); err != nil {
					t.Fatal(err)
				}
			}
			if tc.reset {
				tcpConn(conn).SetLinger(0)
			}
			conn.Close()
			if h == nil {
				t.Logf("external server (%s): OnClose cannot be observed, checking it still serves", addrEnv)
				return
			}
			if !h.waitCloses(upgraded, 5*time.Second) {
				t.Fatalf("OnClose ran %d times for %d upgraded connections 5s after the peer vanished", h.closes.Load(), upgraded)
			}
		})
	}
	if h != nil {
		if o, c := h.opens.Load(), h.closes.Load(); o != upgraded || c != upgraded {
			t.Errorf("OnOpen ran %d times, OnClose %d times, want %d each", o, c, upgraded)
		}
		for i, err := range h.closeErrs() {
			if err == nil {
				t.Errorf("OnClose %d had a nil error; want why the connection ended", i)
			}
		}
	}
	// The server still works.
	c := dial(t, addr)
	defer c.Close()
	if err := c.writeFrame(text("still there?")); err != nil {
		t.Fatal(err)
	}
	got, err := c.readMessage(readTimeout)
	if err != nil || !equalFrame(text("still there?"), got) {
		t.Fatalf("after the vanishing peers: got %v, %v", got, err)
	}
	if err := c.closeNormally(); err != nil {
		t.Fatal(err)
	}
}

// TestServerFramesUnmasked is a guard on the client itself: it must reject
// a masked server frame (§5.1), or every other test could pass against a
// server that masks.
func TestServerFramesUnmasked(t *testing.T) {
	masked := encodeFrame(text("x"))
	server, clientEnd := net.Pipe()
	defer server.Close()
	defer clientEnd.Close()
	go server.Write(masked)
	c := &client{t: t, conn: clientEnd, br: newReader(clientEnd)}
	if _, err := c.readFrame(readTimeout); err == nil {
		t.Fatal("the test client accepted a masked frame from the server")
	}
	// And the length encodings it reads back are the ones it writes.
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		f := bin(pattern(n))
		enc := encodeFrame(f)
		// Unmask into a server frame: clear the mask bit and drop the key.
		hdr := len(enc) - n - 4
		key := [4]byte(enc[hdr : hdr+4])
		srv := append(bytes.Clone(enc[:hdr]), enc[hdr+4:]...)
		srv[1] &^= 0x80
		maskBytes(srv[hdr:], key)
		a, b := net.Pipe()
		go func() { a.Write(srv); a.Close() }()
		c := &client{t: t, conn: b, br: newReader(b)}
		got, err := c.readFrame(readTimeout)
		b.Close()
		if err != nil || !equalFrame(f, got) {
			t.Fatalf("length %d: round trip through the client's encoder and reader: %v, %v", n, got, err)
		}
		if n == 126 && binary.BigEndian.Uint16(srv[2:]) != 126 {
			t.Fatalf("length 126 encoded as %x", srv[:4])
		}
	}
}
