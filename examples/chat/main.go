// Command chat is a chat server a person can open in a browser: the page and
// the WebSocket share one port and one wsloop engine. See README.md for the
// wire protocol.
//
//	go run . -addr :8080                      # one process
//	go run . -addr :8081 -nats nats://127.0.0.1:4222 # several processes sharing rooms
package main

import (
	"context"
	"flag"
	"github.com/wsloop/wsloop/engine"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	addr := flag.String("addr", ":8080", "listen address of the page and the WebSocket")
	natsURL := flag.String("nats", "", "NATS server URL (nats://host:port) to share rooms with other chat processes")
	node := flag.String("node", "", "name of this process among those sharing a NATS server (default: generated)")
	history := flag.Int("history", 50, "messages of a room replayed to whoever joins")
	maxText := flag.Int("max-text", 2000, "largest message text in bytes")
	verbose := flag.Bool("v", false, "log joins and leaves")
	deflate := flag.Bool("deflate", false, "accept permessage-deflate (compressed messages)")
	loops := flag.Int("loops", 0, "event loops (default: one per CPU)")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	app := NewApp(Config{Addr: *addr, NATS: *natsURL, Node: *node, HistorySize: *history, MaxText: *maxText, Logger: log,
		Engine: engine.Options{EventLoops: *loops, Deflate: engine.Deflate{Enabled: *deflate}}})
	go func() {
		select {
		case <-app.Server.Ready():
			log.Info("chat listening", "addr", app.Addr().String(), "page", "http://localhost"+portOf(app.Addr().String())+"/")
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
