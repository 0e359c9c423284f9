// Command embed shows wsloop inside an ordinary net/http program: one
// server on one port serves a page, /healthz, Prometheus /metrics and three
// WebSocket endpoints, behind real middleware. Each WebSocket handler calls
// engine.Server.Upgrade, which hands the connection to wsloop's event loops:
// from then on no goroutine of net/http's or ours serves it.
//
//	go run . -addr :8080
//	go run . -addr :8080 -proxy-protocol 10.0.0.0/8 -max-conns-per-ip 64 # behind a balancer
//	open http://localhost:8080/                        # a page that echoes through /echo
//	websocat ws://localhost:8080/upper
//	websocat -H 'Authorization: Bearer TOKEN' ws://localhost:8080/private
//	curl localhost:8080/metrics
//	go run . -debug-addr 127.0.0.1:6060                # also /debug/pprof/ and /debug/vars there
//
// SIGINT or SIGTERM drains both: every WebSocket client gets 1001 Going
// Away while /healthz answers 503, then the HTTP server shuts down.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	_ "embed"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

//go:embed index.html
var page []byte

func main() {
	addr := flag.String("addr", ":8080", "listen address of the page, /healthz, /metrics and the WebSocket endpoints")
	authURL := flag.String("auth", "", "URL of the token service /private asks (default: an in-process one on a loopback port)")
	token := flag.String("token", "", "token the in-process token service accepts for user \"demo\" (default: a random one, logged)")
	cert := flag.String("tls-cert", "", "certificate file: serve HTTPS and wss:// (with -tls-key)")
	key := flag.String("tls-key", "", "private key file of -tls-cert")
	proxyNets := flag.String("proxy-protocol", "", "comma-separated CIDRs of load balancers that send a PROXY protocol header (v1 or v2); their clients' addresses are used")
	maxPerIP := flag.Int("max-conns-per-ip", 0, "most WebSocket connections one client address may hold (0: no limit)")
	ratePerIP := flag.Int("handshakes-per-ip", 0, "most WebSocket handshakes one client address may start per second (0: no limit)")
	debugAddr := flag.String("debug-addr", "", "serve /debug/pprof/ and /debug/vars (Go runtime statistics) on this address, e.g. 127.0.0.1:6060; off by default")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if *debugAddr != "" {
		a, err := serveDebug(*debugAddr, log)
		if err != nil {
			log.Error("debug listener", "err", err)
			os.Exit(1)
		}
		log.Info("debug listener", "addr", a.String())
	}

	cfg := Config{Addr: *addr, AuthURL: *authURL, Logger: log}
	cfg.Engine.MaxConnsPerClient = *maxPerIP
	cfg.Engine.MaxHandshakesPerClient = *ratePerIP
	if *proxyNets != "" {
		for _, s := range strings.Split(*proxyNets, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				log.Error("-proxy-protocol", "err", err)
				os.Exit(2)
			}
			cfg.Engine.ProxyProtocol = append(cfg.Engine.ProxyProtocol, p)
		}
	}
	if *authURL == "" {
		if *token == "" {
			var b [16]byte
			_, _ = rand.Read(b[:])
			*token = hex.EncodeToString(b[:])
			log.Info("token for /private", "user", "demo", "token", *token)
		}
		cfg.Tokens = map[string]string{*token: "demo"}
	}
	if *cert != "" || *key != "" {
		kp, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Error("tls", "err", err)
			os.Exit(1)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	}

	// One signal context for the whole program: its end drains WebSocket
	// and HTTP together (App.Run).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app, err := NewApp(cfg)
	if err != nil {
		log.Error("start", "err", err)
		os.Exit(1)
	}
	if err := app.Run(ctx); err != nil {
		log.Error("stopped", "err", err)
		os.Exit(1)
	}
}

// Config is what an [App] needs: main fills it from flags, tests from
// literals.
type Config struct {
	// Addr is the listen address of the one HTTP server.
	Addr string
	// AuthURL is the token service /private asks: POST with the client's
	// bearer token, 200 and the user name in the body if it is valid. ""
	// starts an in-process one on a loopback port that knows Tokens.
	AuthURL string
	// Tokens maps tokens to user names, for the in-process token service.
	Tokens map[string]string
	// TLS, when set, makes the server speak HTTPS (and wss://).
	TLS *tls.Config
	// Engine configures the WebSocket engine; Logger and MaxMessageSize
	// are filled in when zero.
	Engine engine.Options
	// DrainTimeout bounds the drain on shutdown. Default 10 s.
	DrainTimeout time.Duration
	// Logger receives every log line, the engine's and net/http's too.
	Logger *slog.Logger
}

// App is the program: a net/http server whose WebSocket endpoints run on a
// wsloop engine.
type App struct {
	WS       *engine.Server
	HTTP     *http.Server
	cfg      Config
	log      *slog.Logger
	ln       net.Listener
	auth     *http.Server // the in-process token service, nil when AuthURL was given
	draining atomic.Bool
}

// NewApp binds the listener (and the in-process token service), builds the
// routes and starts the WebSocket engine's event loops; Run serves them. An
// error says why it cannot (the port is taken, say), and nothing is left
// running.
func NewApp(cfg Config) (*App, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	a := &App{cfg: cfg, log: cfg.Logger}
	if cfg.AuthURL == "" {
		aln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		a.auth = &http.Server{Handler: tokenService(cfg.Tokens), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = a.auth.Serve(aln) }()
		cfg.AuthURL = "http://" + aln.Addr().String() + "/check"
		a.cfg.AuthURL = cfg.AuthURL
	}

	opts := cfg.Engine
	if opts.Logger == nil {
		opts.Logger = a.log
	}
	if opts.MaxMessageSize == 0 {
		opts.MaxMessageSize = 16 << 20 // /echo takes 16 MiB messages, text or binary
	}
	// echo is the server's handler: what an Upgrade without a Handler of
	// its own gets. No Addr: net/http owns the port, the engine only its
	// event loops.
	a.WS = engine.New(echo{}, opts)

	auth := &authClient{url: cfg.AuthURL, hc: &http.Client{Timeout: 5 * time.Second}, log: a.log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(newRegistry(a.WS), promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelError),
	}))
	mux.HandleFunc("GET /echo", a.upgrade(nil))
	mux.HandleFunc("GET /upper", a.upgrade(func(*http.Request) *engine.UpgradeOptions {
		// A handler and a message limit of its own: the engine's
		// defaults are the server's, each Upgrade may override them.
		return &engine.UpgradeOptions{Handler: upper{}, MaxMessageSize: 64 << 10}
	}))
	mux.Handle("GET /private", auth.require(a.upgrade(func(r *http.Request) *engine.UpgradeOptions {
		// The middleware did the blocking work (a call to the token
		// service) on this request's goroutine; the connection only
		// carries the answer, as its Context.
		return &engine.UpgradeOptions{Handler: private{}, Context: userFrom(r.Context())}
	})))

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		a.closeAuth()
		return nil, err
	}
	if len(opts.ProxyProtocol) > 0 {
		// Behind a balancer that speaks the PROXY protocol: its header
		// comes first, before TLS. r.RemoteAddr (in the request log too)
		// and the WebSocket connections' RemoteAddr are then the
		// clients', and the per-client limits count them.
		ln = a.WS.ProxyListener(ln)
	}
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	a.ln = ln
	a.HTTP = &http.Server{
		Handler:           logRequests(a.log, mux),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	// The engine's event loops start now, so that an upgrade is served
	// from the first request Run accepts. Its own context never ends:
	// Run's drain orders it.
	if err := a.WS.Start(context.Background()); err != nil {
		_ = ln.Close()
		a.closeAuth()
		return nil, fmt.Errorf("websocket engine: %w", err)
	}
	return a, nil
}

// Addr returns the address the HTTP server listens on.
func (a *App) Addr() net.Addr { return a.ln.Addr() }

// upgrade returns a handler that upgrades its request onto the engine with
// the options opts returns (nil: the server's handler and limits).
func (a *App) upgrade(opts func(*http.Request) *engine.UpgradeOptions) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var o *engine.UpgradeOptions
		if opts != nil {
			o = opts(r)
		}
		// Nothing may be written to w before Upgrade (net/http would send
		// it ahead of the 101), and neither w nor r may be used after it.
		// On a refused request Upgrade has written the status and reason.
		c, err := a.WS.Upgrade(w, r, o)
		if err != nil {
			a.log.Info("upgrade refused", "path", r.URL.Path, "err", err)
			return
		}
		if a.draining.Load() {
			// Shutdown sends 1001 to the connections open when it
			// starts; one that Upgrade was still handing to a loop
			// at that moment can miss it. Run sets draining before
			// calling Shutdown, so such a connection is caught here.
			_ = c.Close(1001, "server shutting down")
		}
	}
}

// healthz says whether to send this process traffic: 503 from the start of
// the drain, so that a load balancer moves new clients elsewhere.
func (a *App) healthz(w http.ResponseWriter, _ *http.Request) {
	if a.draining.Load() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// Run serves until ctx ends, then drains: the WebSocket clients get 1001
// while HTTP still answers (/healthz 503, upgrades 503 with Retry-After),
// then the HTTP server shuts down, all under one DrainTimeout.
func (a *App) Run(ctx context.Context) error {
	defer a.closeAuth()
	wsDone := make(chan error, 1)
	go func() { wsDone <- a.WS.Wait() }()
	httpDone := make(chan error, 1)
	go func() { httpDone <- a.HTTP.Serve(a.ln) }()
	a.log.Info("serving", "addr", a.Addr().String(), "tls", a.cfg.TLS != nil)

	select {
	case <-ctx.Done():
	case err := <-wsDone:
		_ = a.HTTP.Close()
		return fmt.Errorf("websocket engine: %w", err)
	case err := <-httpDone:
		sctx, cancel := context.WithTimeout(context.Background(), a.cfg.DrainTimeout)
		defer cancel()
		return errors.Join(err, a.WS.Shutdown(sctx), <-wsDone)
	}
	a.draining.Store(true)
	a.log.Info("draining", "open", a.WS.Stats().Open)
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.DrainTimeout)
	defer cancel()
	errWS := errors.Join(a.WS.Shutdown(sctx), <-wsDone)
	// Shutdown closes the listener, then waits for requests in flight.
	// Hijacked connections are not its business: the engine drained them.
	errHTTP := a.HTTP.Shutdown(sctx)
	if err := <-httpDone; !errors.Is(err, http.ErrServerClosed) {
		errHTTP = errors.Join(errHTTP, err)
	}
	a.log.Info("stopped", "upgraded", a.WS.Stats().Upgraded)
	return errors.Join(errWS, errHTTP)
}

func (a *App) closeAuth() {
	if a.auth != nil {
		_ = a.auth.Close()
	}
}

// echo sends every message back unchanged, text or binary.
type echo struct{ handler.Base }

func (echo) OnMessage(c handler.Conn, op handler.Op, data []byte) { _ = c.WriteMessage(op, data) }

// upper answers text with its upper case and refuses binary with 1003.
type upper struct{ handler.Base }

func (upper) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	if op != handler.Text {
		_ = c.Close(1003, "text only")
		return
	}
	_ = c.WriteMessage(handler.Text, []byte(strings.ToUpper(string(data))))
}

// private greets the user the token service named and echoes with the
// user's name in front: the name is the connection's Context, set by
// Upgrade.
type private struct{ handler.Base }

func (private) OnOpen(c handler.Conn) {
	_ = c.WriteMessage(handler.Text, []byte("hello, "+c.Context().(string)))
}

func (private) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	_ = c.WriteMessage(op, append([]byte(c.Context().(string)+": "), data...))
}
