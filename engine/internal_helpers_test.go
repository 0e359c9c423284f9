package engine

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/wsloop/wsloop/handler"
)

// startLocal starts a server for an internal test on a loopback port with
// a silent logger, and drains it when the test ends. (Tests of the public
// API use enginetest.Start; these need the unexported state.)
func startLocal(t testing.TB, h handler.Handler, opts Options) *Server {
	t.Helper()
	opts.Addr = "127.0.0.1:0"
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := New(h, opts)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv
}

// upgradeLocal opens a WebSocket connection to addr on path "/" and returns
// it with a reader positioned after the 101 response. The connection is
// closed when the test ends and has a 5-second deadline.
func upgradeLocal(t testing.TB, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	return upgradeTarget(t, addr, "/")
}

// upgradeTarget is upgradeLocal for target (path and query).
func upgradeTarget(t testing.TB, addr, target string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade %s: %v %v", target, resp, err)
	}
	return c, br
}
