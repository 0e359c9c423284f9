//go:build !nowsloop

package servers

import (
	"context"
	"net/http"
	"time"

	"github.com/wsloop/wsloop/engine"
)

// wsloop-http: this repository's engine behind a net/http server. An
// http.Server accepts every connection and runs its handler, which upgrades
// the request with Server.Upgrade; the hijacked socket is adopted by one of
// the engine's gnet event loops, run with Serve(ctx, nil) (no listener of
// their own). From then on the connection is served exactly as on the
// native listener, by the same handler as the wsloop implementation: echo
// from OnMessage, broadcast through Server.BroadcastAll.
//
// The http.Server has Go's defaults except the timeouts a production server
// sets (ReadHeaderTimeout, IdleTimeout); there is no GC tuning.
func init() {
	register(Info{
		Name: "wsloop-http", Module: "github.com/wsloop/wsloop", Version: "(this repository)",
		Notes: "http.Server handler calling engine.Server.Upgrade, loops started without Addr, default Options",
	}, runWsloopHTTP)
}

func runWsloopHTTP(addr string, set Settings, ready func()) error {
	opts := engine.Options{EventLoops: set.Loops}
	if err := applyOptions(&opts, set.Options); err != nil {
		return err
	}
	h := &wsloopHandler{}
	h.srv = engine.New(h, opts)
	if err := h.srv.Start(context.Background()); err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- h.srv.Wait() }()
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A refused upgrade has been answered already (status and
			// reason); nothing else to do here.
			_, _ = h.srv.Upgrade(w, r, nil)
		}),
		ReadHeaderTimeout: engine.DefaultHandshakeTimeout,
		IdleTimeout:       2 * time.Minute,
	}
	ln, err := listen(addr, set.ReusePort)
	if err != nil {
		return err
	}
	ready()
	go func() { errc <- hs.Serve(ln) }()
	return <-errc
}
