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

// Start runs engine.New(h, opts) and returns it once it listens. An empty
// opts.Addr becomes "127.0.0.1:0", a free loopback port: srv.Addr() has the
// real one. When the test ends the server is drained with Shutdown (5 s of
// grace) and the test fails if it does not stop. Start fails the test if the
// server cannot start within 10 s.
func Start(tb testing.TB, h handler.Handler, opts engine.Options) *engine.Server {
	tb.Helper()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	srv := engine.New(h, opts)
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe(context.Background()) }()
	select {
	case <-srv.Ready():
		if srv.Addr() == nil {
			tb.Fatalf("enginetest: server did not start: %v", <-done)
		}
	case err := <-done:
		tb.Fatalf("enginetest: server did not start: %v", err)
	case <-time.After(10 * time.Second):
		tb.Fatal("enginetest: server not ready after 10s")
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			tb.Errorf("enginetest: Shutdown: %v", err)
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			tb.Error("enginetest: ListenAndServe did not return 10s after Shutdown")
		}
	})
	return srv
}
