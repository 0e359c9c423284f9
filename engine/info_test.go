package engine

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// upgradePath opens a WebSocket connection to addr for target (path and
// query) and leaves it open until the test ends.
func upgradePath(t *testing.T, addr, target string) {
	t.Helper()
	upgradeTarget(t, addr, target)
}

// checkShared opens connections for targets, in order, and checks what
// each one reports and keeps: connections of one loop that asked for the
// same path share one connInfo, a connection with a query or a path of its
// own has one of its own, "/" keeps none, and none of them needs a
// connExtra for it.
func checkShared(t *testing.T, opened chan *wsConn, dial func(target string)) {
	t.Helper()
	targets := []string{"/ws", "/ws", "/ws?room=a", "/", "/ws?room=a", "/other"}
	var wcs []*wsConn
	for _, tg := range targets {
		dial(tg)
		wcs = append(wcs, <-opened)
	}
	info := func(wc *wsConn) *connInfo {
		wc.mu.Lock()
		defer wc.mu.Unlock()
		if wc.aux == nil {
			return nil
		}
		return wc.aux.info
	}
	for i, wc := range wcs {
		path, query, _ := cutQuery(targets[i])
		if wc.Path() != path || wc.RawQuery() != query {
			t.Errorf("%s: Path %q RawQuery %q", targets[i], wc.Path(), wc.RawQuery())
		}
		if x := wc.x.Load(); x != nil {
			t.Errorf("%s: the connection allocated a connExtra for its request details", targets[i])
		}
	}
	if info(wcs[3]) != nil {
		t.Error(`"/" keeps a connInfo`)
	}
	if info(wcs[0]) == nil || info(wcs[0]) != info(wcs[1]) {
		t.Error("two connections to /ws do not share their connInfo")
	}
	if info(wcs[2]) == nil || info(wcs[2]) == info(wcs[4]) {
		t.Error("two connections with a query share their connInfo (a query is often one client's own)")
	}
	if info(wcs[0]) == info(wcs[2]) || info(wcs[0]) == info(wcs[5]) {
		t.Error("different requests share a connInfo")
	}
}

func cutQuery(target string) (path, query string, ok bool) {
	for i := 0; i < len(target); i++ {
		if target[i] == '?' {
			return target[:i], target[i+1:], true
		}
	}
	return target, "", false
}

// A server's connections mostly ask for the same few paths: on one loop,
// they share one record of it, on the server's own listener and through
// net/http alike; a request with a query keeps its own.
func TestRequestInfoShared(t *testing.T) {
	t.Run("listener", func(t *testing.T) {
		h := &echoRecorder{opened: make(chan *wsConn, 1)}
		srv := startLocal(t, h, Options{EventLoops: 1})
		checkShared(t, h.opened, func(target string) { upgradePath(t, srv.Addr().String(), target) })
	})
	t.Run("net/http", func(t *testing.T) {
		h := &echoRecorder{opened: make(chan *wsConn, 1)}
		srv := New(h, Options{EventLoops: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err := srv.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		})
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = srv.Upgrade(w, r, nil) }))
		t.Cleanup(ts.Close)
		checkShared(t, h.opened, func(target string) { upgradePath(t, ts.Listener.Addr().String(), target) })
	})
}

// The shared table is bounded: clients that each ask for a different path
// cannot grow it, and each such connection still reports its own path.
func TestRequestInfoBounded(t *testing.T) {
	h := &echoRecorder{opened: make(chan *wsConn, 1)}
	srv := startLocal(t, h, Options{EventLoops: 1})
	var lp *loop
	for i := 0; i < infosPerLoop+8; i++ {
		p := "/p" + strconv.Itoa(i)
		upgradePath(t, srv.Addr().String(), p)
		wc := <-h.opened
		if wc.Path() != p {
			t.Fatalf("Path() = %q, want %q", wc.Path(), p)
		}
		lp = wc.lp
	}
	done := make(chan int)
	_ = lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error { done <- len(lp.infos); return nil }))
	if n := <-done; n != infosPerLoop {
		t.Errorf("the loop shares %d connInfos, want the bound %d", n, infosPerLoop)
	}
}
