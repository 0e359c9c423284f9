// Package enginetest starts wsloop servers for tests, as net/http/httptest
// does for HTTP handlers.
package enginetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// Start runs engine.New(h, opts).Start and returns the server, which
// listens: an empty opts.Addr (and no opts.Listener) becomes "127.0.0.1:0",
// a free loopback port, and srv.Addr() has the real one. When the test ends
// the server is drained with Shutdown (5 s of grace) and the test fails if
// it does not stop. Start fails the test if the server cannot start.
func Start(tb testing.TB, h handler.Handler, opts engine.Options) *engine.Server {
	tb.Helper()
	if opts.Addr == "" && opts.Listener == nil {
		opts.Addr = "127.0.0.1:0"
	}
	srv := engine.New(h, opts)
	if err := srv.Start(context.Background()); err != nil {
		tb.Fatalf("enginetest: server did not start: %v", err)
	}
	tb.Cleanup(func() { Stop(tb, srv) })
	return srv
}

// Stop drains srv with Shutdown (5 s of grace) and fails the test if it
// does not stop within 10 s more. Stopping a stopped server is a no-op.
func Stop(tb testing.TB, srv *engine.Server) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		tb.Errorf("enginetest: Shutdown: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		tb.Error("enginetest: the server did not stop 10s after Shutdown")
	}
}
