// Command embed shows a wsloop engine inside a larger program: two
// WebSocket paths routed to two handlers, net/http on a second port for
// /healthz and Prometheus /metrics, log/slog throughout, and one signal
// context that drains both servers (every WebSocket client gets 1001 Going
// Away) on SIGINT or SIGTERM.
//
//	go run . -addr :8080 -admin :9090
//	websocat ws://localhost:8080/echo     # or /upper
//	curl localhost:9090/metrics
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

func main() {
	addr := flag.String("addr", ":8080", "WebSocket listen address")
	admin := flag.String("admin", ":9090", "listen address of /healthz and /metrics")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, *addr, *admin, nil); err != nil {
		log.Error("stopped", "err", err)
		os.Exit(1)
	}
}

// run serves until ctx is done, then drains: the WebSocket clients get 1001
// while /metrics still answers, and the admin server stops last. ready, if
// set, is called with the bound addresses.
func run(ctx context.Context, log *slog.Logger, wsAddr, adminAddr string, ready func(ws, admin net.Addr)) error {
	rt := router{"/echo": echo{}, "/upper": upper{}}
	srv := engine.New(rt, engine.Options{Addr: wsAddr, Logger: log})

	var draining atomic.Bool
	reg := prometheus.NewRegistry()
	reg.MustRegister(statsCollector{srv})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	ln, err := net.Listen("tcp", adminAddr)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() { _ = hs.Serve(ln) }()

	wsDone := make(chan error, 1)
	// Not ctx: the drain below is ours to order, so the engine gets a
	// context that never ends and a Shutdown call.
	go func() { wsDone <- srv.ListenAndServe(context.Background()) }()
	<-srv.Ready()
	if srv.Addr() == nil {
		_ = hs.Close()
		return fmt.Errorf("websocket listener: %w", <-wsDone)
	}
	log.Info("serving", "ws", srv.Addr().String(), "admin", ln.Addr().String())
	if ready != nil {
		ready(srv.Addr(), ln.Addr())
	}

	select {
	case <-ctx.Done():
	case err := <-wsDone:
		_ = hs.Close()
		return err
	}
	log.Info("draining", "open", srv.Stats().Open)
	draining.Store(true)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errWS := srv.Shutdown(sctx)
	errWS = errors.Join(errWS, <-wsDone)
	errHTTP := hs.Shutdown(sctx)
	log.Info("stopped", "stats", fmt.Sprintf("%+v", srv.Stats()))
	return errors.Join(errWS, errHTTP)
}

// router sends each connection to the handler of its request path. The
// upgrade hook picks the handler and stores it as the connection's Context;
// every callback then forwards to it. (Routed handlers therefore do not get
// the Context slot for themselves.)
type router map[string]handler.Handler

func (rt router) OnUpgrade(r *handler.Request, res *handler.UpgradeResponse) error {
	h, ok := rt[r.Path]
	if !ok {
		return handler.Reject(http.StatusNotFound, "no WebSocket endpoint at "+r.Path+"; try /echo or /upper")
	}
	res.Context = h
	return nil
}

func (router) of(c handler.Conn) handler.Handler {
	if h, ok := c.Context().(handler.Handler); ok {
		return h
	}
	return handler.Base{}
}

func (rt router) OnOpen(c handler.Conn)                             { rt.of(c).OnOpen(c) }
func (rt router) OnMessage(c handler.Conn, op handler.Op, b []byte) { rt.of(c).OnMessage(c, op, b) }
func (rt router) OnPing(c handler.Conn, b []byte)                   { rt.of(c).OnPing(c, b) }
func (rt router) OnPong(c handler.Conn, b []byte)                   { rt.of(c).OnPong(c, b) }
func (rt router) OnClose(c handler.Conn, err error)                 { rt.of(c).OnClose(c, err) }

// echo sends every message back unchanged.
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

// statsCollector exports the engine's counters, read at every scrape.
type statsCollector struct{ srv *engine.Server }

var (
	descOpen     = prometheus.NewDesc("wsloop_connections_open", "Open WebSocket connections.", nil, nil)
	descAccepted = prometheus.NewDesc("wsloop_connections_accepted_total", "TCP connections accepted.", nil, nil)
	descUpgraded = prometheus.NewDesc("wsloop_upgrades_total", "Successful WebSocket handshakes.", nil, nil)
	descRejected = prometheus.NewDesc("wsloop_rejected_total", "Refused upgrade requests.", []string{"reason"}, nil)
	descMsgs     = prometheus.NewDesc("wsloop_messages_total", "Data messages.", []string{"direction"}, nil)
	descBytes    = prometheus.NewDesc("wsloop_bytes_total", "Payload bytes in, frame bytes out.", []string{"direction"}, nil)
	descCloses   = prometheus.NewDesc("wsloop_closes_total", "Close frames sent by the server.", []string{"code"}, nil)
	descSlow     = prometheus.NewDesc("wsloop_slow_consumers_total", "Connections dropped by the outbound cap.", nil, nil)
	descTimeouts = prometheus.NewDesc("wsloop_timeouts_total", "Connections closed by a timeout.", nil, nil)
)

func (statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOpen, descAccepted, descUpgraded, descRejected, descMsgs, descBytes, descCloses, descSlow, descTimeouts} {
		ch <- d
	}
}

func (s statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := s.srv.Stats()
	m := func(d *prometheus.Desc, t prometheus.ValueType, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, float64(v), labels...)
	}
	m(descOpen, prometheus.GaugeValue, st.Open)
	m(descAccepted, prometheus.CounterValue, st.Accepted)
	m(descUpgraded, prometheus.CounterValue, st.Upgraded)
	for reason, n := range st.Rejected {
		m(descRejected, prometheus.CounterValue, n, reason)
	}
	m(descMsgs, prometheus.CounterValue, st.MessagesIn, "in")
	m(descMsgs, prometheus.CounterValue, st.MessagesOut, "out")
	m(descBytes, prometheus.CounterValue, st.BytesIn, "in")
	m(descBytes, prometheus.CounterValue, st.BytesOut, "out")
	for code, n := range st.ClosesByCode {
		m(descCloses, prometheus.CounterValue, n, fmt.Sprint(code))
	}
	m(descSlow, prometheus.CounterValue, st.SlowConsumers)
	m(descTimeouts, prometheus.CounterValue, st.Timeouts)
}
