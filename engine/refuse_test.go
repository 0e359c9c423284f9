package engine

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// refuse answers with the whole response and a clean end of stream, not a
// reset, when the client's request already sits unread in the socket:
// whichever road the build takes (refuse_unix.go's raw calls, or
// refuse_portable.go's net.Conn road on Windows and with -tags
// wsloop_portable).
func TestRefuseAnswersWithoutReset(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	resp := limitResponse
	for _, size := range []int{200, 5000} {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		req := bytes.Repeat([]byte("x"), size)
		if _, err := client.Write(req); err != nil {
			t.Fatal(err)
		}
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		refuse(c, resp)
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(client)
		if err != nil {
			t.Errorf("request of %d bytes: reading the refusal: %v after %d bytes", size, err, len(got))
		}
		if !bytes.Equal(got, resp) {
			t.Errorf("request of %d bytes: got %q, want %q", size, got, resp)
		}
		// A socket closed with unread bytes answers with a reset, which
		// over a real network can overtake the response. Over loopback the
		// response arrives anyway, but the reset shows: the client's
		// socket is dead, and its next write fails at once. After a clean
		// close (FIN, no reset yet) that write is still taken.
		if _, err := client.Write([]byte("x")); err != nil {
			t.Errorf("request of %d bytes: the server reset the connection instead of closing it: %v", size, err)
		}
		client.Close()
	}
}
