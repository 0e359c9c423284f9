package main

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wsloop/wsloop/engine"
)

// newRegistry returns a registry that exports the engine's counters, read
// at every scrape. Every label value comes from a fixed set (engine.Stats
// says which), so no client can grow the number of series.
func newRegistry(srv *engine.Server) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(statsCollector{srv})
	return reg
}

// statsCollector exports engine.Stats.
type statsCollector struct{ srv *engine.Server }

var (
	descOpen     = prometheus.NewDesc("wsloop_connections_open", "Open WebSocket connections.", nil, nil)
	descUpgraded = prometheus.NewDesc("wsloop_upgrades_total", "Successful WebSocket handshakes.", nil, nil)
	descRejected = prometheus.NewDesc("wsloop_rejected_total", "Refused upgrade requests, by status and reason.", []string{"reason"}, nil)
	descMsgs     = prometheus.NewDesc("wsloop_messages_total", "Data messages.", []string{"direction"}, nil)
	descBytes    = prometheus.NewDesc("wsloop_bytes_total", "Payload bytes in, frame bytes out.", []string{"direction"}, nil)
	descCloses   = prometheus.NewDesc("wsloop_closes_total", "Close frames sent by the server.", []string{"code"}, nil)
	descSlow     = prometheus.NewDesc("wsloop_slow_consumers_total", "Connections dropped by the outbound cap.", nil, nil)
	descTimeouts = prometheus.NewDesc("wsloop_timeouts_total", "Connections closed by a timeout.", nil, nil)
	descInbound  = prometheus.NewDesc("wsloop_inbound_bytes", "Memory held for inbound messages not yet delivered.", nil, nil)

	descProxyHeaders = prometheus.NewDesc("wsloop_proxy_headers_total", "PROXY protocol headers accepted.", nil, nil)
	descProxyRefused = prometheus.NewDesc("wsloop_proxy_refused_total", "Connections closed for their PROXY protocol header, by reason.", []string{"reason"}, nil)
	descClientLimit  = prometheus.NewDesc("wsloop_client_limited_total", "Connections refused by a per-client limit.", []string{"limit"}, nil)
	descClients      = prometheus.NewDesc("wsloop_tracked_clients", "Client addresses the per-client limits track.", nil, nil)
)

func (statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOpen, descUpgraded, descRejected, descMsgs, descBytes, descCloses, descSlow, descTimeouts, descInbound,
		descProxyHeaders, descProxyRefused, descClientLimit, descClients} {
		ch <- d
	}
}

func (s statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := s.srv.Stats()
	m := func(d *prometheus.Desc, t prometheus.ValueType, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, float64(v), labels...)
	}
	m(descOpen, prometheus.GaugeValue, st.Open)
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
	m(descInbound, prometheus.GaugeValue, st.InboundBytes)
	m(descProxyHeaders, prometheus.CounterValue, st.ProxyHeaders)
	for reason, n := range st.ProxyRefused {
		m(descProxyRefused, prometheus.CounterValue, n, reason)
	}
	m(descClientLimit, prometheus.CounterValue, st.ClientConnLimited, "connections")
	m(descClientLimit, prometheus.CounterValue, st.ClientRateLimited, "handshake rate")
	m(descClientLimit, prometheus.CounterValue, st.ClientTableFull, "table full")
	m(descClients, prometheus.GaugeValue, st.TrackedClients)
}
