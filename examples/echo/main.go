// Command echo is the reference wsloop server: every text or binary message
// comes back with the same opcode, on every path. It is both the conformance
// target and the benchmark target, so it runs a plain production
// configuration; only the message size limit is raised (64 MiB) so that the
// large-message conformance cases pass.
//
//	go run ./examples/echo -addr 127.0.0.1:9001
//	go run ./examples/echo -deflate            # with permessage-deflate
//	go run ./examples/echo -tls-cert cert.pem -tls-key key.pem   # wss://
//
// On SIGINT or SIGTERM it drains: every open connection receives a 1001
// close frame before its TCP close, then the process exits.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// echo sends every message back unchanged. handler.Base answers pings.
type echo struct{ handler.Base }

func (echo) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	_ = c.WriteMessage(op, data) // copies data: it is valid only during the call
}

func main() {
	var o engine.Options
	flag.StringVar(&o.Addr, "addr", "127.0.0.1:9001", "listen address")
	flag.IntVar(&o.EventLoops, "loops", 0, "event loops (0: GOMAXPROCS, the CPUs Go may use)")
	flag.Int64Var(&o.MaxMessageSize, "max-message", 64<<20, "max message size in bytes")
	flag.IntVar(&o.MaxOutboundBytes, "max-outbound", 0, "per-connection outbound cap in bytes (0: default 4 MiB)")
	flag.IntVar(&o.MaxConns, "max-conns", 0, "connection cap (0: RLIMIT_NOFILE minus a reserve)")
	flag.Int64Var(&o.MaxInboundMemory, "max-inbound", 0, "bytes all connections together may hold for undelivered inbound messages (0: default 1 GiB, negative: no limit)")
	flag.DurationVar(&o.IdleTimeout, "idle", 0, "idle timeout (0: default 2m, negative: off)")
	flag.DurationVar(&o.HandshakeTimeout, "handshake-timeout", 0, "handshake timeout (0: default 10s)")
	flag.BoolVar(&o.ReusePort, "reuseport", false, "SO_REUSEPORT on the listener: several processes may share the port")
	flag.BoolVar(&o.Deflate.Enabled, "deflate", false, "accept permessage-deflate (RFC 7692), without context takeover unless -deflate-budget")
	flag.Int64Var(&o.Deflate.ContextTakeoverBudget, "deflate-budget", 0, "bytes all connections together may spend on deflate context takeover (0: none)")
	flag.IntVar(&o.Deflate.Threshold, "deflate-threshold", 0, "messages shorter than this go uncompressed (0: default 128, negative: compress all)")
	tlsCert := flag.String("tls-cert", "", "certificate file (PEM): serve wss:// (with -tls-key)")
	tlsKey := flag.String("tls-key", "", "private key file (PEM) of -tls-cert")
	flag.IntVar(&o.MaxTLSHandshakes, "tls-handshakes", 0, "TLS handshakes in progress at once (0: default 256)")
	drain := flag.Duration("drain", 5*time.Second, "how long a shutdown waits for close replies")
	verbose := flag.Bool("v", false, "debug logging (every rejected handshake and protocol error)")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	o.CheckOrigin = func(*handler.Request) bool { return true } // an echo test server serves any page
	if *tlsCert != "" || *tlsKey != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			o.Logger.Error("echo: TLS certificate", "err", err)
			os.Exit(1)
		}
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}

	srv := engine.New(echo{}, o)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		o.Logger.Info("echo: signal received, draining", "grace", *drain)
		sctx, cancel := context.WithTimeout(context.Background(), *drain)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			o.Logger.Warn("echo: drain ended with connections still open", "err", err)
		}
	}()
	// The server's own context never ends: the goroutine above drains it
	// with a grace of its choosing.
	if err := srv.Start(context.Background()); err != nil {
		o.Logger.Error("echo: cannot start", "err", err)
		os.Exit(1)
	}
	if err := srv.Wait(); err != nil {
		o.Logger.Error("echo: serve", "err", err)
		os.Exit(1)
	}
	st := srv.Stats()
	o.Logger.Info("echo: stopped", "accepted", st.Accepted, "messages_in", st.MessagesIn, "closes", st.ClosesByCode)
}
