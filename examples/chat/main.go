// Command chat is a chat server a person can open in a browser: the page and
// the WebSocket share one port and one wsloop engine. See README.md for the
// wire protocol.
//
//	go run . -addr :8080                      # one process
//	go run . -addr :8081 -nats nats://127.0.0.1:4222 # several processes sharing rooms
//	go run . -tls-cert cert.pem -tls-key key.pem      # https:// and wss://
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/wsloop/wsloop/engine"
)

func main() {
	addr := flag.String("addr", ":8080", "listen address of the page and the WebSocket")
	natsURL := flag.String("nats", "", "NATS server URL (nats://host:port) to share rooms with other chat processes")
	node := flag.String("node", "", "name of this process among those sharing a NATS server (default: generated)")
	history := flag.Int("history", 50, "messages of a room replayed to whoever joins")
	maxText := flag.Int("max-text", 2000, "largest message text in bytes")
	verbose := flag.Bool("v", false, "log joins and leaves")
	deflate := flag.Bool("deflate", false, "accept permessage-deflate (compressed messages)")
	loops := flag.Int("loops", 0, "event loops (default: GOMAXPROCS, the CPUs Go may use)")
	tlsCert := flag.String("tls-cert", "", "certificate file (PEM): serve https:// and wss:// (with -tls-key)")
	tlsKey := flag.String("tls-key", "", "private key file (PEM) of -tls-cert")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	eopts := engine.Options{EventLoops: *loops, Deflate: engine.Deflate{Enabled: *deflate}}
	if *tlsCert != "" || *tlsKey != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			log.Error("chat: TLS certificate", "err", err)
			os.Exit(1)
		}
		eopts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	app := NewApp(Config{Addr: *addr, NATS: *natsURL, Node: *node, HistorySize: *history, MaxText: *maxText, Logger: log, Engine: eopts})
	go func() {
		select {
		case <-app.Server.Ready():
			scheme := "http"
			if eopts.TLSConfig != nil {
				scheme = "https"
			}
			log.Info("chat listening", "addr", app.Addr().String(), "page", scheme+"://localhost"+portOf(app.Addr().String())+"/")
		case <-ctx.Done():
		}
	}()
	if err := app.Run(ctx); err != nil {
		log.Error("chat stopped", "err", err)
		os.Exit(1)
	}
}

func portOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[i:]
		}
	}
	return ""
}
