package main

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

//go:embed static/index.html
var indexHTML string

// Config configures a chat [App].
type Config struct {
	// Addr is the listen address of the page and the WebSocket. Default ":8080".
	Addr string
	// NATS is the URL of a NATS server to share rooms with other chat
	// processes; empty keeps everything in this process.
	NATS string
	// Node names this process among those sharing a NATS server. Default:
	// derived from the clock.
	Node string
	// HistorySize and MaxText: see [HubConfig].
	HistorySize int
	MaxText     int
	// Logger receives all log lines. Default slog.Default().
	Logger *slog.Logger
	// Engine holds further engine options; Addr, Fallback, Logger and
	// MaxMessageSize are set from the fields above.
	Engine engine.Options
}

// App is a chat server: the page and the WebSocket on one engine.
type App struct {
	Hub    *Hub
	Server *engine.Server

	broker Broker
	shared bool
	page   []byte
	stop   context.CancelFunc // ends Hub.Run, set by Start
	once   sync.Once          // release runs once
}

// NewApp builds a chat server; [App.Start] starts it.
func NewApp(cfg Config) *App {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &App{}
	if cfg.NATS != "" {
		a.broker = NewNATSBroker(cfg.NATS, NATSOptions{Logger: cfg.Logger})
		a.shared = true
	} else {
		a.broker = NewLocalBroker()
	}
	a.Hub = NewHub(HubConfig{
		Node: cfg.Node, Broker: a.broker, Logger: cfg.Logger,
		HistorySize: cfg.HistorySize, MaxText: cfg.MaxText,
	})
	maxText := a.Hub.cfg.MaxText
	a.page = []byte(strings.ReplaceAll(indexHTML, "{{MAX_TEXT}}", strconv.Itoa(maxText)))

	opts := cfg.Engine
	opts.Addr = cfg.Addr
	opts.Logger = cfg.Logger
	opts.Fallback = a.fallback
	// The hard limit on a frame: far above MaxText, which the hub enforces
	// with a friendly error, but small enough that nobody can make the
	// server buffer megabytes. JSON may escape a byte as six.
	opts.MaxMessageSize = int64(max(64<<10, 6*maxText+1024))
	a.Server = engine.New(a.Hub, opts)
	a.Hub.SetBroadcaster(a.Server)
	return a
}

// Start connects the broker and starts serving; it returns once the chat
// listens, or with the reason it cannot (the port is taken, the broker is
// unreachable). The chat serves until ctx is done, then drains: every
// client gets 1001 Going Away and the page reconnects to wherever the
// server comes back. [App.Wait] returns once that is over.
func (a *App) Start(ctx context.Context) error {
	if err := a.Hub.Start(); err != nil {
		return err
	}
	hctx, cancel := context.WithCancel(ctx)
	a.stop = cancel
	if a.shared {
		go a.Hub.Run(hctx)
	}
	if err := a.Server.Start(ctx); err != nil {
		a.release()
		return err
	}
	return nil
}

// Wait blocks until the chat has stopped and returns why: nil after a
// drain.
func (a *App) Wait() error {
	err := a.Server.Wait()
	a.release()
	return err
}

// release stops the hub and the broker, in that order, once.
func (a *App) release() {
	a.once.Do(func() {
		a.stop()
		a.Hub.Stop()
		a.broker.Close()
	})
}

// Addr is the bound address, once Start has returned nil.
func (a *App) Addr() net.Addr { return a.Server.Addr() }

// fallback serves the page for plain HTTP GETs.
func (a *App) fallback(r *handler.Request) *engine.FallbackResponse {
	switch r.Path {
	case "/", "/index.html":
		return &engine.FallbackResponse{
			Status: http.StatusOK,
			Header: http.Header{
				"Content-Type":  {"text/html; charset=utf-8"},
				"Cache-Control": {"no-cache"},
			},
			Body: a.page,
		}
	case "/ws":
		return &engine.FallbackResponse{
			Status: http.StatusUpgradeRequired,
			Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "Upgrade": {"websocket"}},
			Body:   []byte("this is the chat's WebSocket endpoint: connect with a WebSocket client to /ws?room=ROOM&name=NAME\n"),
		}
	case "/healthz":
		return &engine.FallbackResponse{Status: http.StatusOK, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("ok\n")}
	}
	return &engine.FallbackResponse{
		Status: http.StatusNotFound,
		Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		Body:   []byte(fmt.Sprintf("%s not found; the chat page is at /\n", r.Path)),
	}
}
