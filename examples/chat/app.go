package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

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
	// TakeOver, when set, is the handoff directory of the chat process
	// this one replaces (see [App.HandOff]): Run takes its listener,
	// rooms and connections over instead of listening on Addr.
	TakeOver string
	// OnTakenOver, if set, runs once a takeover is complete: the moved
	// connections are served here now (a place to tell systemd).
	OnTakenOver func(*engine.RestoreResult)
}

// App is a chat server: the page and the WebSocket on one engine.
type App struct {
	Hub    *Hub
	Server *engine.Server

	cfg    Config
	opts   engine.Options // the engine's, as NewApp made them
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
	a := &App{cfg: cfg}
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
	a.opts = opts
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
	var err error
	if a.cfg.TakeOver != "" {
		err = a.takeOver(ctx)
	} else {
		err = a.Server.Start(ctx)
	}
	if err != nil {
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

// HandOff deploys without disconnecting: it gives this chat's listener,
// rooms and connections to the process that starts with Config.TakeOver
// set to dir, then serves what stayed (wss connections, whose TLS session
// cannot move) until they leave or the drain timeout, and stops; Wait
// returns then. If the successor fails, HandOff returns an error and this
// process goes on serving everything.
func (a *App) HandOff(ctx context.Context, dir string) (*engine.HandOffResult, error) {
	a.Hub.freezeNotices(true)
	res, err := a.Server.HandOff(ctx, dir, &engine.HandOffOptions{State: a.Hub.ExportState})
	if err != nil {
		a.Hub.freezeNotices(false)
	}
	return res, err
}

// takeOver starts serving the listener, rooms and connections of the
// process being replaced, until ctx is done.
func (a *App) takeOver(ctx context.Context) error {
	log := a.cfg.Logger
	tk, err := engine.TakeOver(ctx, a.cfg.TakeOver, &engine.TakeOverOptions{State: a.Hub.ImportState, Logger: log})
	if err != nil {
		return fmt.Errorf("chat: taking over: %w", err)
	}
	ln := tk.Listener("")
	if ln == nil {
		tk.Close()
		return errors.New("chat: taking over: the old process handed over no listener")
	}
	// The server serves the listener it was given instead of binding
	// Addr: it is built again for it, before any connection exists.
	opts := a.opts
	opts.Addr, opts.Listener = "", ln
	a.Server = engine.New(a.Hub, opts)
	a.Hub.SetBroadcaster(a.Server)
	if err := a.Server.Start(ctx); err != nil {
		tk.Close()
		return err
	}
	res, err := tk.Restore(ctx, a.Server)
	if err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), a.cfg.Engine.CloseTimeout+5*time.Second)
		defer cancel()
		_ = a.Server.Shutdown(sctx)
		return fmt.Errorf("chat: taking over: %w", err)
	}
	log.Info("chat took over", "pid", os.Getpid(), "from_pid", tk.Predecessor(), "addr", ln.Addr().String(),
		"restored", res.Restored, "refused", res.Refused, "partial", res.Partial, "restore", res.Duration)
	if a.cfg.OnTakenOver != nil {
		a.cfg.OnTakenOver(res)
	}
	return nil
}

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
