package main

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
)

// When the test binary is started with this variable set, it is the echo
// server itself: main() with the flags that follow "--".
func TestMain(m *testing.M) {
	if os.Getenv("WSLOOP_ECHO_MAIN") == "1" {
		for i, a := range os.Args {
			if a == "--" {
				os.Args = append([]string{os.Args[0]}, os.Args[i+1:]...)
				break
			}
		}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestSignalDrain runs the real main in a child process, sends it SIGTERM
// with connections open, and checks each client gets a 1001 close frame,
// after the echo it asked for, before its TCP connection ends, and that the
// process exits by itself.
func TestSignalDrain(t *testing.T) {
	addr := freeAddr(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$", "--", "-addr", addr, "-drain", "3s")
	cmd.Env = append(os.Environ(), "WSLOOP_ECHO_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	// Wait for the listening log line: a signal, not a sleep.
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "wsloop: listening") {
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stderr); exited <- cmd.Wait() }()

	const n = 5
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	for i := range conns {
		conns[i], readers[i] = upgrade(t, addr)
		defer conns[i].Close()
	}
	for i, c := range conns {
		msg := []byte{'m', byte('0' + i)}
		if _, err := c.Write(codec.AppendMaskedFrame(nil, true, codec.OpText, 0, [4]byte{9, 8, 7, 6}, msg)); err != nil {
			t.Fatal(err)
		}
		if op, p := readFrame(t, readers[i]); op != codec.OpText || string(p) != string(msg) {
			t.Fatalf("conn %d: echo = %v %q", i, op, p)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		op, p := readFrame(t, readers[i])
		if op != codec.OpClose || len(p) < 2 || binary.BigEndian.Uint16(p) != codec.CloseGoingAway {
			t.Fatalf("conn %d: after SIGTERM got %v %q, want close 1001", i, op, p)
		}
		// Answer as a well-behaved client does; then the server closes TCP.
		if _, err := c.Write(codec.AppendMaskedFrame(nil, true, codec.OpClose, 0, [4]byte{1, 2, 3, 4}, p[:2])); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := readers[i].ReadByte(); err != io.EOF {
			t.Fatalf("conn %d: after the close handshake: %v, want EOF", i, err)
		}
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("echo exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("echo did not exit after draining")
	}
}

func upgrade(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 101") {
		t.Fatalf("handshake: %q %v", status, err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			return c, br
		}
	}
}

// readFrame reads one unfragmented server frame.
func readFrame(t *testing.T, br *bufio.Reader) (codec.OpCode, []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatal(err)
	}
	n := int(h[1] & 0x7F)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(br, e[:]); err != nil {
			t.Fatal(err)
		}
		n = int(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(br, e[:]); err != nil {
			t.Fatal(err)
		}
		n = int(binary.BigEndian.Uint64(e[:]))
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatal(err)
	}
	return codec.OpCode(h[0] & 0x0F), p
}
