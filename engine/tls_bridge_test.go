package engine_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
)

// bridgeGoroutines counts the goroutines that copy between bridged TLS
// connections and their loops (upgrade.go, Server.bridge). Counted by
// name: gnet's worker pool starts and ends goroutines of its own.
func bridgeGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "created by github.com/wsloop/wsloop/engine.(*Server).bridge")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// When the in-process check of crypto/tls fails (forced here, as a Go
// release that broke what the loops rely on would), wss goes through the
// goroutine bridge: accepted and dialed connections keep the whole contract
// (echo of every size, pings, a coded close with close_notify, path, query
// and the client's address, plain HTTP answered 400), the server says why
// once, and a drain ends a TLS handshake in progress at once. Not parallel:
// the forcing is process-wide.
func TestTLSBridgeFallback(t *testing.T) {
	t.Cleanup(enginetest.ForceTLSBridge())
	logs := &logSink{}
	h := newRecorder()
	srv, served := startServer(t, h, engine.Options{
		TLSConfig:        enginetest.TLSConfig(t),
		Logger:           slog.New(slog.NewTextHandler(logs, nil)),
		HandshakeTimeout: time.Hour, // only the drain may end the stalled handshake below
	})
	addr := srv.Addr().String()

	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			c, conn := dialWSS(t, addr, "/room?x=1", v)
			sc := h.waitOpen(t)
			if sc.Path() != "/room" || sc.RawQuery() != "x=1" {
				t.Errorf("Path %q, RawQuery %q", sc.Path(), sc.RawQuery())
			}
			if ra := sc.RemoteAddr(); ra == nil || ra.String() != conn.LocalAddr().String() {
				t.Errorf("RemoteAddr %v, want the client's %v", ra, conn.LocalAddr())
			}
			if n := bridgeGoroutines(); n < 2 {
				t.Errorf("an open wss connection has %d bridge goroutines: not bridged", n)
			}
			wssExchange(t, c, h)
		})
	}
	if !engine.TLSBridged(srv) {
		t.Error("the server does not report the bridge road")
	}

	t.Run("plain HTTP", func(t *testing.T) { expectHTTPSRefusal(t, addr) })

	t.Run("Dial", func(t *testing.T) {
		cli := newMsgRecorder()
		d := dialer(t, cli, engine.Options{})
		c, _, err := d.Dial(context.Background(), "wss://"+addr+"/dialed", &engine.DialOptions{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
		if err != nil {
			t.Fatal(err)
		}
		if !engine.TLSBridged(d) {
			t.Error("the dialing server does not report the bridge road")
		}
		for _, n := range []int{5, 300_000} {
			m := bytes.Repeat([]byte("abc"), n)
			if err := c.WriteMessage(handler.Binary, m); err != nil {
				t.Fatal(err)
			}
			if got := cli.next(t); !bytes.Equal(got.data, m) {
				t.Fatalf("echo of %d bytes through the dialed bridge: %d bytes", len(m), len(got.data))
			}
		}
		_ = c.Close(1000, "")
		var ce *handler.CloseError
		if ev := cli.waitClose(t); !errors.As(ev.err, &ce) || ce.Code != 1000 {
			t.Errorf("OnClose %v", ev.err)
		}
		h.waitClose(t)
	})

	st := srv.Stats()
	if st.TLSHandshakes != 3 || st.TLSFailures["not tls"] != 1 {
		t.Errorf("TLSHandshakes %d, TLSFailures %v", st.TLSHandshakes, st.TLSFailures)
	}
	if n := logs.count("wss connections go through a bridge"); n != 1 || logs.count("forced by enginetest") != 1 {
		t.Errorf("the fallback was logged %d times, want once with its reason:\n%s", n, logs.b.String())
	}

	// A client that never finishes its TLS handshake does not hold up the
	// drain, whatever the handshake timeout.
	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	waitFor(t, "the stalled connection to be accepted", func() bool { return srv.Stats().Conns >= 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown with a TLS handshake in progress: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("ListenAndServe: %v", err)
	}
	waitFor(t, "the bridges' goroutines to end", func() bool { return bridgeGoroutines() == 0 })
	h.check(t)
}
