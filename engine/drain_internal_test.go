package engine

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// A socket accepted just before Shutdown began but registered by its loop
// only after the drain swept the loops (here: handed to adopt once the
// drain is under way, as the accept loop does when it loses that race) is
// closed at once, not left in its handshake until HandshakeTimeout while
// Shutdown waits for it.
func TestLateRegistrationDuringDrain(t *testing.T) {
	h := &echoRecorder{opened: make(chan *wsConn, 1)}
	srv := startLocal(t, h, Options{EventLoops: 2, HandshakeTimeout: time.Hour})
	ws, br := upgradeLocal(t, srv.Addr().String()) // keeps the drain waiting: it answers the 1001 only at the end
	<-h.opened

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil || hdr[0] != 0x88 {
		t.Fatalf("want the drain's close frame: % x, %v", hdr, err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Write([]byte("GET / HTTP/1.1\r\n")); err != nil { // a handshake begun
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	srv.stats.conns.Add(1) // as acceptLoop counts it before adopt
	if err := srv.adopt(c, nil); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Closed as the drain closes a handshake: at once, with a reset when
	// the request's bytes were still unread in the socket.
	if n, err := client.Read(make([]byte, 512)); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the late connection read %d bytes, %v; want it closed at once", n, err)
	}

	// Answer the 1001 (masked with a zero key): Shutdown completes.
	if _, err := ws.Write([]byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe9}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown still waits")
	}
}
