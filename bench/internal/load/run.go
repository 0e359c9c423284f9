package load

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/bench/internal/hist"
	"github.com/wsloop/wsloop/bench/internal/proc"
)

// Options selects and sizes a scenario.
type Options struct {
	Scenario    string // idle, echo, broadcast
	N           int
	Size        int
	Settle      time.Duration // idle: wait after the ramp before measuring
	Hold        time.Duration // idle: hold the connections this long
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

	ServerRSSBase int64              `json:"server_rss_base"`
	ServerRSSConn int64              `json:"server_rss_connected"`
	ServerRSSHeld int64              `json:"server_rss_held"`
	RSSPerConn    float64            `json:"rss_per_conn"`
	HeapBase      *proc.ServerStats  `json:"heap_base,omitempty"`
	HeapConn      *proc.ServerStats  `json:"heap_connected,omitempty"`
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
	case "idle", "echo":
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
		r.ServerRSSBase, _ = proc.RSS(o.ServerPID)
		r.HeapBase = serverStats(o.ServerPID, o.StatsFile)
	}

	// Ramp.
	start := time.Now()
	stopProg := progress(o.Progress, c, o.N, start)
	for i := 0; i < o.N; i++ {
		_ = c.Dial(i)
	}
	deadline := time.Now().Add(o.RampTimeout)
	for c.Opened.Load()+c.Failed.Load() < int64(o.N) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stopProg()
	r.ConnectSecs = time.Since(start).Seconds()
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
		runIdle(c, echo, o, r)
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

// serverStats asks the server for its runtime statistics (SIGUSR1) and
// waits for the file to change.
func serverStats(pid int, file string) *proc.ServerStats {
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
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
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

func runIdle(c *Client, a *EchoApp, o Options, r *Result) {
	time.Sleep(o.Settle)
	if o.ServerPID > 0 {
		r.ServerRSSConn, _ = proc.RSS(o.ServerPID)
		r.HeapConn = serverStats(o.ServerPID, o.StatsFile)
	}
	fmt.Fprintf(o.Progress, "  holding %d connections for %v\n", r.Connected, o.Hold)
	w0 := takeWindow(o.ServerPID)
	time.Sleep(o.Hold)
	w1 := takeWindow(o.ServerPID)
	r.cpu(w0, w1)
	r.Seconds = w1.t.Sub(w0.t).Seconds()
	if o.ServerPID > 0 {
		r.ServerRSSHeld, _ = proc.RSS(o.ServerPID)
		if r.Connected > 0 {
			r.RSSPerConn = float64(r.ServerRSSHeld-r.ServerRSSBase) / float64(r.Connected)
		}
		if r.HeapBase != nil && r.HeapConn != nil && r.Connected > 0 {
			// Go memory the connections hold: live heap plus goroutine stacks.
			r.HeapPerConn = (float64(r.HeapConn.HeapAlloc+r.HeapConn.StackInuse) - float64(r.HeapBase.HeapAlloc+r.HeapBase.StackInuse)) / float64(r.Connected)
			r.Goroutines = r.HeapConn.NumGoroutine
		}
	}
	// A sample of the held connections must still echo.
	conns := c.Conns()
	want := max(20, len(conns)/100)
	step := max(1, len(conns)/want)
	var picked []*Conn
	for i := 0; i < len(conns) && len(picked) < want; i += step {
		picked = append(picked, conns[i])
	}
	for _, l := range c.Loops() {
		l.Exec(func() {
			for _, cn := range picked {
				if cn.loop == l && cn.IsOpen() {
					r.SampleSent++
					a.SendOne(cn)
				}
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.Replies.Load() < r.SampleSent && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	r.SampleOK = a.Replies.Load()
	if r.SampleOK < int64(len(picked)) {
		r.errf("only %d of %d sampled connections echoed after the hold", r.SampleOK, len(picked))
	}
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
