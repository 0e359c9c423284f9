package main

import (
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/wsloop/wsloop/bench/internal/load"
)

// charts writes one grouped bar chart per headline figure: a group of bars
// per implementation, one bar per case (median over repetitions).
func charts(c config, runs []run) error {
	type chart struct {
		file, title, ylabel, prefix string
		m                           func(*load.Result) float64
	}
	for _, ch := range []chart{
		{"idle_rss_per_conn.png", "Server RSS per idle connection (lower is better)", "KiB per connection", "idle",
			func(r *load.Result) float64 { return r.RSSPerConn / 1024 }},
		{"echo_msgs_per_sec.png", "Echo throughput (higher is better)", "messages per second", "echo",
			func(r *load.Result) float64 { return r.MsgsPerSec }},
		{"echo_cpu_per_million.png", "Server CPU per million echoes (lower is better)", "CPU seconds", "echo",
			func(r *load.Result) float64 { return r.ServerCPUPerM }},
		{"broadcast_time_to_all.png", "Broadcast: time until every connection has it, p50 (lower is better)", "milliseconds", "broadcast",
			func(r *load.Result) float64 { return r.FanoutP50ms }},
		{"broadcast_rate.png", "Broadcast fan-out rate (higher is better)", "deliveries per second", "broadcast",
			func(r *load.Result) float64 { return r.FanoutRate }},
	} {
		ks := cases(runs, ch.prefix)
		if len(ks) == 0 {
			continue
		}
		p := plot.New()
		p.Title.Text = ch.title
		p.Y.Label.Text = ch.ylabel
		p.Legend.Top = true
		w := vg.Points(float64(60 / len(ks)))
		top := 0.0
		for gi, k := range ks {
			vals := make(plotter.Values, len(c.impls))
			for i, impl := range c.impls {
				vals[i] = collect(runs, impl, k, ch.m).Med
				top = max(top, vals[i])
			}
			bars, err := plotter.NewBarChart(vals, w)
			if err != nil {
				return err
			}
			bars.LineStyle.Width = 0
			bars.Color = plotutil.Color(gi)
			bars.Offset = w * vg.Length(float64(gi)-float64(len(ks)-1)/2)
			p.Add(bars)
			p.Legend.Add(k, bars)
		}
		p.NominalX(c.impls...)
		// Head room for the legend above the tallest bar.
		p.Y.Min, p.Y.Max = 0, top*(1.15+0.08*float64(len(ks)))
		if err := p.Save(8*vg.Inch, 4.5*vg.Inch, filepath.Join(c.out, ch.file)); err != nil {
			return err
		}
	}
	return nil
}
