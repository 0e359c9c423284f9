package load

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/bench/internal/hist"
	"github.com/wsloop/wsloop/bench/internal/proc"
)

// Options selects and sizes a scenario.
type Options struct {
	Scenario string // idle, echo, broadcast, hold
	N        int
	Size     int
	// Rate paces the ramp at this many new connections per second
	// (0: as fast as Inflight handshakes in flight allow).
	Rate float64
	// ReadAt lists moments after the end of the ramp at which idle reads
	// the server's RSS and its runtime statistics (without a GC); one more
	// reading is always taken at Hold.
	ReadAt []time.Duration
	Hold   time.Duration // idle: hold the connections this long after the ramp
	// ServerGC: after the last reading, idle forces a GC in the server
	// (SIGUSR1) for its live heap, waits GCWait and reads RSS once more,
	// reported apart from the headline figure.
	ServerGC bool
	GCWait   time.Duration
	// BaseGC forces a GC in the fresh server before the baseline (the
	// harness's behaviour before the ramp-rate study); off, the baseline
	// statistics are read without one.
	BaseGC bool
	// EchoAll sends one echo on every connection right after the ramp,
	// as a client that checks each connection once does, before the
	// readings.
	EchoAll bool
	// Sample is the fraction of connections echo-checked after the hold
	// (idle, hold); at least 20 connections.
	Sample      float64
	Control     io.Reader     // hold: commands, one per line ("check", "quit")
	Out         io.Writer     // hold: answers to the commands
	Warmup      time.Duration // echo: run before measuring
	Duration    time.Duration // echo, broadcast rate phase: measuring time
	Rounds      int           // broadcast: one-at-a-time rounds for latency
	Window      int           // broadcast: broadcasts in flight in the rate phase
	RampTimeout time.Duration
	// OpenRate, when positive, makes echo open-loop: every connection
	// sends on a fixed schedule (OpenRate messages per second in all,
	// spread evenly over the connections and their phases) whether or not
	// its previous echo has come back, and latency runs from each
	// message's scheduled send time, so a server that falls behind is
	// charged for the whole delay (coordinated omission corrected, as
	// wrk2 does).
	OpenRate float64
	// StormInflight is how many handshakes a "storm" command (hold) keeps
	// in flight while the connections come back (0: Inflight).
	StormInflight int
	ServerPID     int
	StatsFile     string
	Label         string
	Progress      io.Writer
}

// Result is what one scenario run measured. Sizes are bytes, times seconds
// unless the name says otherwise.
type Result struct {
	Label    string `json:"label"`
	Scenario string `json:"scenario"`
	N        int    `json:"n"`
	Size     int    `json:"size"`

	Connected     int64   `json:"connected"`
	ConnectFailed int64   `json:"connect_failed"`
	ConnectSecs   float64 `json:"connect_secs"`
	ConnectRate   float64 `json:"connect_rate"`
	HandshakeP50  float64 `json:"handshake_p50_ms"`
	HandshakeP99  float64 `json:"handshake_p99_ms"`
	HandshakeMax  float64 `json:"handshake_max_ms"`
	// Server CPU (utime+stime) from the first dial to the last handshake
	// of the ramp, and per connection: what accepting and upgrading one
	// connection costs the server.
	RampServerCPU  float64 `json:"ramp_server_cpu_secs,omitempty"`
	RampClientCPU  float64 `json:"ramp_client_cpu_secs,omitempty"`
	AcceptCPUPerUS float64 `json:"server_cpu_us_per_conn,omitempty"`

	RateTarget    float64            `json:"rate_target"`
	ServerRSSBase int64              `json:"server_rss_base"`
	ServerRSSConn int64              `json:"server_rss_connected"` // at the first ReadAt moment
	ServerRSSHeld int64              `json:"server_rss_held"`      // at Hold: the headline figure
	RSSPerConn    float64            `json:"rss_per_conn"`
	Readings      []Reading          `json:"readings,omitempty"`
	RSSSeries     [][2]float64       `json:"rss_series,omitempty"` // [seconds since ramp start, bytes]
	ServerRSSGC   int64              `json:"server_rss_after_gc,omitempty"`
	RSSPerConnGC  float64            `json:"rss_per_conn_after_server_gc,omitempty"`
	AllocPerConn  float64            `json:"alloc_per_conn,omitempty"` // server heap bytes allocated per connection during the ramp
	GCsInRamp     int                `json:"gcs_in_ramp,omitempty"`
	HeapBase      *proc.ServerStats  `json:"heap_base,omitempty"`
	HeapConn      *proc.ServerStats  `json:"heap_connected,omitempty"` // after the forced GC at the end
	HeapPerConn   float64            `json:"heap_per_conn"`
	Goroutines    int                `json:"goroutines"`
	SampleSent    int64              `json:"sample_sent"`
	SampleOK      int64              `json:"sample_ok"`
	Extra         map[string]float64 `json:"extra,omitempty"`

	Messages       int64   `json:"messages"`
	Seconds        float64 `json:"seconds"`
	MsgsPerSec     float64 `json:"msgs_per_sec"`
	MBPerSec       float64 `json:"mb_per_sec"`
	LatP50us       float64 `json:"lat_p50_us"`
	LatP99us       float64 `json:"lat_p99_us"`
	LatP999us      float64 `json:"lat_p999_us"`
	LatMaxus       float64 `json:"lat_max_us,omitempty"`
	OpenRate       float64 `json:"open_rate,omitempty"`  // open loop: the scheduled rate, messages/s
	LateSends      int64   `json:"late_sends,omitempty"` // open loop: sends that left more than 1 ms after their scheduled time
	ServerCPU      float64 `json:"server_cpu_secs"`
	ServerCPUPerM  float64 `json:"server_cpu_per_million"`
	ClientCPU      float64 `json:"client_cpu_secs"`
	OtherCPUCores  float64 `json:"other_cpu_cores"`
	LoadAvgAtStart float64 `json:"loadavg_start"`

	Rounds        int     `json:"rounds"`
	FanoutP50ms   float64 `json:"fanout_p50_ms"`
	FanoutMaxms   float64 `json:"fanout_max_ms"`
	FanoutRate    float64 `json:"fanout_deliveries_per_sec"`
	BroadcastsRun int     `json:"broadcasts"`

	Mismatches  int64    `json:"mismatches"`
	ProtoErrors int64    `json:"proto_errors"`
	ClosedEarly int64    `json:"closed_early"`
	Errors      []string `json:"errors,omitempty"`
}

// Reading is the server's memory at one moment after the ramp, read from
// outside (/proc) and by SIGUSR2 (statistics without a GC).
type Reading struct {
	After      float64           `json:"after_ramp_secs"`
	RSS        int64             `json:"rss"`
	RSSPerConn float64           `json:"rss_per_conn"`
	Stats      *proc.ServerStats `json:"stats,omitempty"`
}

func (r *Result) errf(format string, a ...any) {
	r.Errors = append(r.Errors, fmt.Sprintf(format, a...))
}

// window measures CPU use between two points.
type window struct {
	t            time.Time
	server, self time.Duration
	machine      proc.MachineCPU
}

func takeWindow(pid int) window {
	w := window{t: time.Now()}
	if pid > 0 {
		w.server, _ = proc.CPU(pid)
	}
	w.self, _ = proc.CPU(os.Getpid())
	w.machine, _ = proc.ReadMachineCPU()
	return w
}

// fill sets the CPU figures of r from two windows.
func (r *Result) cpu(a, b window) {
	wall := b.t.Sub(a.t).Seconds()
	r.ServerCPU = (b.server - a.server).Seconds()
	r.ClientCPU = (b.self - a.self).Seconds()
	busy := (b.machine.Busy - a.machine.Busy).Seconds()
	if wall > 0 {
		r.OtherCPUCores = (busy - r.ServerCPU - r.ClientCPU) / wall
		if r.OtherCPUCores < 0 {
			r.OtherCPUCores = 0
		}
	}
}

// Run dials o.N connections with cfg and runs the scenario.
func Run(cfg Config, o Options) (*Result, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.RampTimeout <= 0 {
		o.RampTimeout = 2 * time.Minute
	}
	r := &Result{Label: o.Label, Scenario: o.Scenario, N: o.N, Size: o.Size, LoadAvgAtStart: proc.LoadAvg()}
	var echo *EchoApp
	var bc *BroadcastApp
	switch o.Scenario {
	case "idle", "echo", "hold":
		echo = NewEchoApp(o.Size, max(cfg.Loops, 1))
		cfg.App = echo
		cfg.MaxSize = echo.Size + 64
	case "broadcast":
		rounds := o.Rounds + 1_000_000
		bc = NewBroadcastApp(o.Size, rounds)
		cfg.App = bc
		cfg.MaxSize = len(bc.Payload(0)) + 64
	default:
		return nil, fmt.Errorf("unknown scenario %q", o.Scenario)
	}
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if echo != nil {
		echo.Client = c
	} else {
		bc.Client = c
	}

	// Baseline of the freshly started server.
	if o.ServerPID > 0 {
		clientGC()
		r.ServerRSSBase, _ = proc.RSS(o.ServerPID)
		r.HeapBase = serverStats(o.ServerPID, o.StatsFile, o.BaseGC)
	}

	// Ramp.
	r.RateTarget = o.Rate
	ramp0 := takeWindow(o.ServerPID)
	start := time.Now()
	stopProg := progress(o.Progress, c, o.N, start)
	var series *sampler
	if o.Scenario == "idle" && o.ServerPID > 0 {
		series = sampleRSS(o.ServerPID, start, 250*time.Millisecond)
	}
	for i := 0; i < o.N; i++ {
		if o.Rate > 0 {
			// Pace from the start, not from the previous dial, so that a
			// late dial is followed by quicker ones and the mean rate holds.
			due := start.Add(time.Duration(float64(i) / o.Rate * float64(time.Second)))
			if d := time.Until(due); d > time.Millisecond {
				time.Sleep(d)
			}
		}
		_ = c.Dial(i)
	}
	deadline := time.Now().Add(o.RampTimeout)
	for c.Opened.Load()+c.Failed.Load() < int64(o.N) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stopProg()
	rampEnd := time.Now()
	if ramp1 := takeWindow(o.ServerPID); o.ServerPID > 0 {
		r.RampServerCPU = (ramp1.server - ramp0.server).Seconds()
		r.RampClientCPU = (ramp1.self - ramp0.self).Seconds()
		if n := c.Opened.Load(); n > 0 {
			r.AcceptCPUPerUS = r.RampServerCPU / float64(n) * 1e6
		}
	}
	r.ConnectSecs = rampEnd.Sub(start).Seconds()
	r.Connected = c.Opened.Load()
	r.ConnectFailed = int64(o.N) - r.Connected
	if r.ConnectSecs > 0 {
		r.ConnectRate = float64(r.Connected) / r.ConnectSecs
	}
	lat := c.HandshakeLatencies()
	slices.Sort(lat)
	if len(lat) > 0 {
		q := func(p float64) float64 { return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / 1e6 }
		r.HandshakeP50, r.HandshakeP99, r.HandshakeMax = q(0.5), q(0.99), float64(lat[len(lat)-1])/1e6
	}
	if r.ConnectFailed > 0 {
		r.errf("%d of %d connections failed (first error: %v)", r.ConnectFailed, o.N, c.FirstError())
	}

	switch o.Scenario {
	case "idle":
		runIdle(c, echo, o, r, rampEnd)
		if series != nil {
			r.RSSSeries = series.stop()
		}
	case "hold":
		runHold(c, echo, o, r)
	case "echo":
		if o.OpenRate > 0 {
			runOpenEcho(c, echo, o, r)
		} else {
			runEcho(c, echo, o, r)
		}
	case "broadcast":
		runBroadcast(c, bc, o, r)
	}
	r.Mismatches = c.Mismatches.Load()
	r.ProtoErrors = c.ProtoErrors.Load()
	r.ClosedEarly = c.Closed.Load()
	if r.Mismatches > 0 {
		r.errf("%d echoes did not match what was sent", r.Mismatches)
	}
	if r.ClosedEarly > 0 {
		r.errf("%d connections closed during the run (first error: %v)", r.ClosedEarly, c.FirstError())
	}
	return r, nil
}

// serverStats asks the server for its runtime statistics, after a forced
// GC (SIGUSR1) or without one (SIGUSR2), and waits for the file to change.
func serverStats(pid int, file string, forceGC bool) *proc.ServerStats {
	if pid <= 0 || file == "" {
		return nil
	}
	var before int64 = -1
	if b, err := os.ReadFile(file); err == nil {
		var s proc.ServerStats
		if json.Unmarshal(b, &s) == nil {
			before = s.Seq
		}
	}
	sig := syscall.SIGUSR2
	if forceGC {
		sig = syscall.SIGUSR1
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		var s proc.ServerStats
		if json.Unmarshal(b, &s) == nil && s.Seq != before {
			return &s
		}
	}
	return nil
}

func progress(w io.Writer, c *Client, n int, start time.Time) func() {
	if w == io.Discard {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		print := func(end string) {
			el := time.Since(start).Seconds()
			o := c.Opened.Load()
			fmt.Fprintf(w, "\r  connecting %6d/%d  %7.0f conn/s  failed %d  %5.1fs%s", o, n, float64(o)/max(el, 1e-9), c.Failed.Load(), el, end)
		}
		for {
			select {
			case <-done:
				print("\n")
				return
			case <-t.C:
				print("")
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// clientGC collects the load generator's own garbage before a reading, so
// that the client's memory does not change under the measurement. It is
// the only GC the measurement forces before the RSS readings: the server
// runs with the Go runtime's defaults and is left alone.
func clientGC() { runtime.GC() }

// runIdle holds the connections and reads the server's memory at the
// moments o.ReadAt after the ramp and at o.Hold, each time from outside
// (VmRSS) and by SIGUSR2, neither of which starts a GC in the server. Only
// then, with o.ServerGC, it forces one to learn the live heap and reads the
// RSS once more, reported apart.
func runIdle(c *Client, a *EchoApp, o Options, r *Result, rampEnd time.Time) {
	if o.EchoAll {
		var all Result
		checkSample(c, a, 1, &all)
		if all.SampleOK < all.SampleSent {
			r.errf("echo on every connection: %d of %d came back", all.SampleOK, all.SampleSent)
		}
	}
	moments := slices.Clone(o.ReadAt)
	moments = append(moments, o.Hold)
	slices.Sort(moments)
	moments = slices.Compact(moments)
	fmt.Fprintf(o.Progress, "  holding %d connections for %v (readings at %v)\n", r.Connected, o.Hold, moments)
	var w0 window
	for i, at := range moments {
		if at > o.Hold {
			break
		}
		if d := time.Until(rampEnd.Add(at)); d > 0 {
			time.Sleep(d)
		}
		if i == 0 {
			w0 = takeWindow(o.ServerPID)
		}
		if o.ServerPID <= 0 {
			continue
		}
		clientGC()
		rd := Reading{After: time.Since(rampEnd).Seconds()}
		rd.RSS, _ = proc.RSS(o.ServerPID)
		rd.Stats = serverStats(o.ServerPID, o.StatsFile, false)
		if r.Connected > 0 {
			rd.RSSPerConn = float64(rd.RSS-r.ServerRSSBase) / float64(r.Connected)
		}
		r.Readings = append(r.Readings, rd)
	}
	w1 := takeWindow(o.ServerPID)
	r.cpu(w0, w1)
	r.Seconds = w1.t.Sub(w0.t).Seconds()
	if n := len(r.Readings); n > 0 {
		first, last := r.Readings[0], r.Readings[n-1]
		r.ServerRSSConn, r.ServerRSSHeld, r.RSSPerConn = first.RSS, last.RSS, last.RSSPerConn
		if b, f := r.HeapBase, first.Stats; b != nil && f != nil && r.Connected > 0 {
			r.AllocPerConn = float64(f.TotalAlloc-b.TotalAlloc) / float64(r.Connected)
			r.GCsInRamp = int(f.NumGC - b.NumGC)
		}
	}
	if o.ServerPID > 0 && o.ServerGC {
		r.HeapConn = serverStats(o.ServerPID, o.StatsFile, true)
		if r.HeapBase != nil && r.HeapConn != nil && r.Connected > 0 {
			// Go memory the connections hold: live heap plus goroutine stacks.
			r.HeapPerConn = (float64(r.HeapConn.HeapAlloc+r.HeapConn.StackInuse) - float64(r.HeapBase.HeapAlloc+r.HeapBase.StackInuse)) / float64(r.Connected)
			r.Goroutines = r.HeapConn.NumGoroutine
		}
		time.Sleep(o.GCWait)
		clientGC()
		r.ServerRSSGC, _ = proc.RSS(o.ServerPID)
		if r.Connected > 0 {
			r.RSSPerConnGC = float64(r.ServerRSSGC-r.ServerRSSBase) / float64(r.Connected)
		}
	}
	checkSample(c, a, o.Sample, r)
}

// checkSample sends one echo on a fraction of the open connections (at
// least 20) and waits up to 10 s for every one to come back intact.
func checkSample(c *Client, a *EchoApp, frac float64, r *Result) {
	conns := c.Conns()
	want := max(20, int(float64(len(conns))*frac))
	step := max(1, len(conns)/want)
	var picked []*Conn
	for i := 0; i < len(conns) && len(picked) < want; i += step {
		picked = append(picked, conns[i])
	}
	before := a.Replies.Load()
	var sent int64
	for _, l := range c.Loops() {
		l.Exec(func() {
			for _, cn := range picked {
				if cn.loop == l && cn.IsOpen() {
					sent++
					a.SendOne(cn)
				}
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.Replies.Load()-before < sent && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	ok := a.Replies.Load() - before
	r.SampleSent += sent
	r.SampleOK += ok
	if ok < int64(len(picked)) {
		r.errf("only %d of %d sampled connections echoed after the hold", ok, len(picked))
	}
}

// runHold holds the connections for a controller process (cmd/million):
// it answers each line of o.Control on o.Out. "check" echo-checks a sample
// and answers "CHECKED sent ok"; "quit" or the end of input ends the hold.
// The ramp's outcome is announced first as "OPENED connected failed".
func runHold(c *Client, a *EchoApp, o Options, r *Result) {
	if o.Control == nil || o.Out == nil {
		r.errf("hold needs a control stream")
		return
	}
	fmt.Fprintf(o.Out, "OPENED %d %d\n", r.Connected, r.ConnectFailed)
	sc := bufio.NewScanner(o.Control)
	for sc.Scan() {
		switch strings.TrimSpace(sc.Text()) {
		case "check":
			var cr Result
			checkSample(c, a, o.Sample, &cr)
			r.SampleSent += cr.SampleSent
			r.SampleOK += cr.SampleOK
			r.Errors = append(r.Errors, cr.Errors...)
			fmt.Fprintf(o.Out, "CHECKED %d %d\n", cr.SampleSent, cr.SampleOK)
		case "storm":
			fmt.Fprintln(o.Out, runStorm(c, o))
		case "quit":
			return
		}
	}
}

// runStorm drops every connection at once (a reset each, as a network
// failure or a client restart does) and dials the same number again at
// once, with o.StormInflight handshakes in flight, until all are back or
// failed. It answers "BACK opened failed secs t50 t90 t99 hsp99" where
// secs is from the first drop to the last handshake, t50..t99 (ms) are when
// that share of the connections was back, and hsp99 (ms) is the 99th
// percentile of one reconnection's connect-to-101 time.
func runStorm(c *Client, o Options) string {
	t0 := c.Now()
	n := c.DropAll()
	base := c.HandshakesDone()
	failed0 := c.Failed.Load()
	if o.StormInflight > 0 {
		c.SetInflight(o.StormInflight)
	}
	id := c.NextID()
	for i := 0; i < n; i++ {
		_ = c.Dial(id + i)
	}
	deadline := time.Now().Add(o.RampTimeout)
	for c.HandshakesDone()-base+int(c.Failed.Load()-failed0) < n && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	lat, at := c.OpenedSince(base)
	failed := c.Failed.Load() - failed0
	c.SetInflight(c.cfg.Inflight)
	slices.Sort(lat)
	slices.Sort(at)
	ms := func(v int64) float64 { return float64(v) / 1e6 }
	q := func(xs []int64, p float64) int64 {
		if len(xs) == 0 {
			return 0
		}
		return xs[min(len(xs)-1, int(p*float64(len(xs))))]
	}
	var secs float64
	if len(at) > 0 {
		secs = float64(at[len(at)-1]-t0) / 1e9
	}
	return fmt.Sprintf("BACK %d %d %.6f %.3f %.3f %.3f %.3f", len(at), failed, secs,
		ms(q(at, 0.5)-t0), ms(q(at, 0.9)-t0), ms(q(at, 0.99)-t0), ms(q(lat, 0.99)))
}

// sampler reads a process's RSS at a fixed interval in the background.
type sampler struct {
	done chan struct{}
	out  chan [][2]float64
}

func sampleRSS(pid int, start time.Time, every time.Duration) *sampler {
	s := &sampler{done: make(chan struct{}), out: make(chan [][2]float64, 1)}
	go func() {
		var pts [][2]float64
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if rss, err := proc.RSS(pid); err == nil {
				pts = append(pts, [2]float64{time.Since(start).Seconds(), float64(rss)})
			}
			select {
			case <-s.done:
				s.out <- pts
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() [][2]float64 {
	close(s.done)
	return <-s.out
}

func runEcho(c *Client, a *EchoApp, o Options, r *Result) {
	a.Continuous.Store(true)
	for _, l := range c.Loops() {
		l.Exec(func() {
			for _, cn := range l.Conns {
				a.SendOne(cn)
			}
		})
	}
	fmt.Fprintf(o.Progress, "  echo %d conns x %d B: warmup %v, measure %v\n", r.Connected, o.Size, o.Warmup, o.Duration)
	time.Sleep(o.Warmup)
	w0 := takeWindow(o.ServerPID)
	a.Measuring.Store(true)
	time.Sleep(o.Duration)
	a.Measuring.Store(false)
	w1 := takeWindow(o.ServerPID)
	a.Stopping.Store(true)
	r.cpu(w0, w1)
	r.Seconds = w1.t.Sub(w0.t).Seconds()

	h := collectEchoes(c, a, r)
	if r.Seconds > 0 {
		r.MsgsPerSec = float64(r.Messages) / r.Seconds
		// Payload bytes each way.
		r.MBPerSec = r.MsgsPerSec * float64(a.Size) / 1e6
	}
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	r.LatP50us, r.LatP99us, r.LatP999us = us(h.Quantile(0.5)), us(h.Quantile(0.99)), us(h.Quantile(0.999))
	if r.Messages > 0 {
		r.ServerCPUPerM = r.ServerCPU / float64(r.Messages) * 1e6
	}
}

// collectEchoes waits, at most 5 s, for the echoes still due, then adds
// every loop's counts to r and returns the merged latency histogram.
func collectEchoes(c *Client, a *EchoApp, r *Result) *hist.H {
	var h hist.H
	var outstanding int64
	deadline := time.Now().Add(5 * time.Second)
	for {
		outstanding = 0
		for _, l := range c.Loops() {
			l.Exec(func() { outstanding += a.Stats[l.Index].Outstanding })
		}
		if outstanding <= 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // a poll: the loops announce nothing
	}
	for _, l := range c.Loops() {
		l.Exec(func() {
			st := &a.Stats[l.Index]
			r.Messages += st.Msgs
			r.LateSends += st.Late // 0 in the closed loop
			h.Merge(&st.Hist)
		})
	}
	if outstanding > 0 {
		r.errf("%d echoes still missing 5 s after the end", outstanding)
	}
	return &h
}

// runOpenEcho is the open-loop echo: o.OpenRate messages per second in
// all, each connection on a fixed schedule with its own phase, latency
// from the scheduled send time. Messages scheduled during the warmup are
// sent but not measured; after the measured window nothing more is sent
// and the run waits up to 5 s for the echoes still outstanding.
func runOpenEcho(c *Client, a *EchoApp, o Options, r *Result) {
	var conns []*Conn
	for _, cn := range c.Conns() {
		if cn.IsOpen() {
			conns = append(conns, cn)
		}
	}
	if len(conns) == 0 {
		r.errf("no open connection")
		return
	}
	n := int64(len(conns))
	period := int64(float64(n) / o.OpenRate * 1e9)
	start := c.Now() + int64(50*time.Millisecond)
	sc := &openSchedule{start: start, period: period, from: start + int64(o.Warmup)}
	sc.to = sc.from + int64(o.Duration)
	// Phases spread evenly over one period, in dial order, so that the
	// loops' shares interleave.
	for i, cn := range conns {
		cn.phase = int64(i) * period / n
	}
	a.open = sc
	r.OpenRate = o.OpenRate
	fmt.Fprintf(o.Progress, "  open-loop echo %d conns x %d B at %.0f msg/s (%.2f ms per connection): warmup %v, measure %v\n",
		n, o.Size, o.OpenRate, float64(period)/1e6, o.Warmup, o.Duration)
	states := make([]*openLoopState, len(c.Loops()))
	for _, l := range c.Loops() {
		st := &openLoopState{}
		states[l.Index] = st
		l.Exec(func() {
			for _, cn := range l.Conns {
				if cn.IsOpen() {
					st.conns = append(st.conns, cn)
				}
			}
			slices.SortFunc(st.conns, func(x, y *Conn) int { return int(x.phase - y.phase) })
			if len(st.conns) > 0 {
				l.SetTimer(sc.start+st.conns[0].phase, func() { a.openTick(l, st) })
			}
		})
	}
	time.Sleep(time.Duration(sc.from - c.Now()))
	w0 := takeWindow(o.ServerPID)
	time.Sleep(time.Duration(sc.to - c.Now()))
	w1 := takeWindow(o.ServerPID)
	r.cpu(w0, w1)
	r.Seconds = w1.t.Sub(w0.t).Seconds()

	h := collectEchoes(c, a, r)
	r.MsgsPerSec = float64(r.Messages) / (float64(o.Duration) / 1e9)
	r.MBPerSec = r.MsgsPerSec * float64(a.Size) / 1e6
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	r.LatP50us, r.LatP99us, r.LatP999us, r.LatMaxus = us(h.Quantile(0.5)), us(h.Quantile(0.99)), us(h.Quantile(0.999)), us(h.Max())
	if r.Messages > 0 {
		r.ServerCPUPerM = r.ServerCPU / float64(r.Messages) * 1e6
	}
}

func runBroadcast(c *Client, a *BroadcastApp, o Options, r *Result) {
	conns := c.Conns()
	var trigger *Conn
	for _, cn := range conns {
		trigger = cn
		break
	}
	open := c.Opened.Load() - c.Closed.Load()
	if trigger == nil || open == 0 {
		r.errf("no connection to trigger broadcasts from")
		return
	}
	a.Expect.Store(open)
	var seq uint32
	send := func() uint32 {
		s := seq
		seq++
		p := a.Payload(s)
		trigger.loop.Post(func() {
			a.SentAt[s].Store(c.Now())
			trigger.loop.Send(trigger, OpText, p)
		})
		return s
	}
	wait := func(timeout time.Duration) (uint32, bool) {
		select {
		case s := <-a.Done:
			return s, true
		case <-time.After(timeout):
			return 0, false
		}
	}
	// Latency: one broadcast at a time.
	fmt.Fprintf(o.Progress, "  broadcast to %d conns: %d rounds, then %v at window %d\n", open, o.Rounds, o.Duration, o.Window)
	var lats []float64
	for i := 0; i < o.Rounds; i++ {
		s := send()
		got, ok := wait(10 * time.Second)
		if !ok || got != s {
			r.errf("broadcast %d reached %d of %d connections within 10 s", s, a.Counts[s].Load(), open)
			return
		}
		lats = append(lats, float64(a.DoneAt[s].Load()-a.SentAt[s].Load())/1e6)
	}
	slices.Sort(lats)
	r.Rounds = len(lats)
	if len(lats) > 0 {
		r.FanoutP50ms = lats[len(lats)/2]
		r.FanoutMaxms = lats[len(lats)-1]
	}
	// Rate: keep Window broadcasts in flight for Duration.
	w0 := takeWindow(o.ServerPID)
	inflight := 0
	completed := 0
	end := time.Now().Add(o.Duration)
	for inflight < o.Window {
		send()
		inflight++
	}
	for inflight > 0 {
		_, ok := wait(10 * time.Second)
		if !ok {
			r.errf("rate phase stalled with %d broadcasts in flight", inflight)
			break
		}
		inflight--
		completed++
		if time.Now().Before(end) {
			send()
			inflight++
		}
	}
	w1 := takeWindow(o.ServerPID)
	r.cpu(w0, w1)
	r.Seconds = w1.t.Sub(w0.t).Seconds()
	r.BroadcastsRun = int(seq)
	r.Messages = int64(completed) * open
	if r.Seconds > 0 {
		r.FanoutRate = float64(r.Messages) / r.Seconds
		r.MsgsPerSec = r.FanoutRate
	}
	if r.Messages > 0 {
		r.ServerCPUPerM = r.ServerCPU / float64(r.Messages) * 1e6
	}
	// Every connection got every broadcast exactly once.
	var minRecv, maxRecv uint32 = ^uint32(0), 0
	for _, l := range c.Loops() {
		l.Exec(func() {
			for _, cn := range l.Conns {
				if cn.IsOpen() {
					minRecv = min(minRecv, cn.Recv)
					maxRecv = max(maxRecv, cn.Recv)
				}
			}
		})
	}
	if int(minRecv) != r.BroadcastsRun || int(maxRecv) != r.BroadcastsRun {
		r.errf("connections received between %d and %d broadcasts, want %d each", minRecv, maxRecv, r.BroadcastsRun)
	}
}

// AskServerStats asks a bench server (cmd/server with -stats) for its
// runtime statistics, after a forced GC (SIGUSR1) or without one (SIGUSR2),
// and waits for the file to change; nil when there is no answer within 10 s.
func AskServerStats(pid int, file string, forceGC bool) *proc.ServerStats {
	return serverStats(pid, file, forceGC)
}
