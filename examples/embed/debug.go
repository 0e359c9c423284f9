package main

import (
	"expvar"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux, which only the debug listener serves
	"runtime"
	"time"
)

// serveDebug serves Go's profiles (/debug/pprof/) and runtime statistics
// (/debug/vars: memstats, and the number of goroutines) on their own
// listener, apart from the application's port and mux, so that they are
// never exposed with it. Bind it to loopback: a heap profile shows what the
// program holds. It returns the bound address.
func serveDebug(addr string, log *slog.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil {
			log.Warn("debug listener stopped", "err", err)
		}
	}()
	return ln.Addr(), nil
}

func init() {
	expvar.Publish("goroutines", expvar.Func(func() any { return runtime.NumGoroutine() }))
}
