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
	ServerPID   int
	StatsFile   string
	Label       string
	Progress    io.Writer
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
		runEcho(c, echo, o, r)
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
		case "quit":
			return
		}
	}
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
		time.Sleep(10 * time.Millisecond)
	}
	for _, l := range c.Loops() {
		l.Exec(func() {
			st := &a.Stats[l.Index]
			r.Messages += st.Msgs
			h.Merge(&st.Hist)
		})
	}
	if outstanding > 0 {
		r.errf("%d echoes still missing 5 s after the end", outstanding)
	}
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
