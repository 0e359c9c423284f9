package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// TestEmbed routes two paths to two handlers, reads /healthz and /metrics,
// and checks that cancelling the context drains clients with 1001.
func TestEmbed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type addrs struct{ ws, admin net.Addr }
	ready := make(chan addrs, 1)
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		done <- run(ctx, log, "127.0.0.1:0", "127.0.0.1:0", func(w, a net.Addr) { ready <- addrs{w, a} })
	}()
	var a addrs
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready in 10s")
	}
	admin := "http://" + a.admin.String()
	if body := get(t, admin+"/healthz", 200); strings.TrimSpace(body) != "ok" {
		t.Fatalf("healthz = %q", body)
	}

	dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
	defer dcancel()
	dial := func(path string) net.Conn {
		c, _, _, err := ws.Dial(dctx, "ws://"+a.ws.String()+path)
		if err != nil {
			t.Fatalf("dial %s: %v", path, err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}
	echo, up := dial("/echo"), dial("/upper")
	for _, tc := range []struct {
		c        net.Conn
		in, want string
	}{{echo, "Hello", "Hello"}, {up, "Hello", "HELLO"}} {
		if err := wsutil.WriteClientText(tc.c, []byte(tc.in)); err != nil {
			t.Fatal(err)
		}
		got, err := wsutil.ReadServerText(tc.c)
		if err != nil || string(got) != tc.want {
			t.Fatalf("got %q, %v; want %q", got, err, tc.want)
		}
	}
	var se ws.StatusError
	if _, _, _, err := ws.Dial(dctx, "ws://"+a.ws.String()+"/nope"); !errors.As(err, &se) || int(se) != 404 {
		t.Fatalf("unknown path: %v", err)
	}

	metrics := get(t, admin+"/metrics", 200)
	for _, want := range []string{"wsloop_connections_open 2", `wsloop_messages_total{direction="in"} 2`, `wsloop_rejected_total{reason=`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, metrics)
		}
	}

	// SIGTERM's effect: the context ends, clients get 1001, run returns.
	cancel()
	for _, c := range []net.Conn{echo, up} {
		_, err := wsutil.ReadServerText(c)
		var ce wsutil.ClosedError
		if !errors.As(err, &ce) || ce.Code != ws.StatusGoingAway {
			t.Fatalf("want close 1001, got %v", err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

func get(t *testing.T, url string, status int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}
