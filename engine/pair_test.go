package engine

import (
	"io"
	"net"
	"testing"
	"time"
)

// The bridge's pair carries bytes both ways and passes a half-close on,
// and both ends are sockets gnet can adopt: a socketpair on Unix
// (pair_unix.go), a loopback TCP pair on Windows and with -tags
// wsloop_portable (pair_portable.go).
func TestBridgePair(t *testing.T) {
	loopEnd, pumpEnd, err := bridgePair()
	if err != nil {
		t.Fatal(err)
	}
	defer loopEnd.Close()
	defer pumpEnd.Close()
	for _, c := range []net.Conn{loopEnd, pumpEnd} {
		switch c.(type) {
		case *net.TCPConn, *net.UnixConn:
		default:
			t.Fatalf("a pair end is a %T, which gnet cannot adopt", c)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	send := func(from, to net.Conn, msg string) {
		t.Helper()
		if _, err := from.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(to, buf); err != nil || string(buf) != msg {
			t.Fatalf("sent %q, read %q, %v", msg, buf, err)
		}
	}
	send(pumpEnd, loopEnd, "to the loop")
	send(loopEnd, pumpEnd, "from the loop")
	if err := pumpEnd.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := loopEnd.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after the pump end's half-close the loop end read %d, %v; want EOF", n, err)
	}
	send(loopEnd, pumpEnd, "still open this way")
}
