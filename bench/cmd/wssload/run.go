package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsloop/wsloop/bench/internal/hist"
	"github.com/wsloop/wsloop/bench/internal/load"
	"github.com/wsloop/wsloop/bench/internal/proc"
)

// params sizes one run.
type params struct {
	n            int
	rate         float64 // new connections per second, 0: as fast as inflight allows
	inflight     int     // handshakes in flight while ramping
	hold         time.Duration
	bigSize      int // idle: the one message each connection echoes
	echoInflight int // idle: connections echoing the big message at once
	gcWait       time.Duration
	size         int // echo: message size
	warmup       time.Duration
	duration     time.Duration
	rampTimeout  time.Duration
	progress     io.Writer
	profile      string // idle: copy the server's heap profile to profile+"-{handshake,16k}.pprof"
	storms       int    // storm: how many times every connection drops and comes back
	stormInfl    int    // storm: handshakes in flight while they come back
}

// target is the server a run measures.
type target struct {
	pid     int
	stats   string // its -stats file
	memprof string // its -memprofile file, "" if none
}

// Result is one run's figures. Bytes per connection are (server VmRSS −
// VmRSS before the first connection) ÷ connections; heap per connection is
// the growth of HeapAlloc+StackInuse after a forced GC ÷ connections.
type Result struct {
	Impl     string `json:"impl"`
	Scenario string `json:"scenario"`
	Rep      int    `json:"rep"`
	N        int    `json:"n"`
	Size     int    `json:"size"`

	TLS            string  `json:"tls"` // what the first connection negotiated
	Connected      int     `json:"connected"`
	RampSecs       float64 `json:"ramp_secs"`
	HandshakeP50ms float64 `json:"handshake_p50_ms"`
	HandshakeP99ms float64 `json:"handshake_p99_ms"`
	HandshakeCPUms float64 `json:"server_cpu_ms_per_handshake"` // server CPU during the ramp ÷ connections

	RSSBase        int64   `json:"rss_base"`
	RSSHandshake   int64   `json:"rss_after_handshake"`
	RSSBig         int64   `json:"rss_after_big_echo"`
	RSSBigGC       int64   `json:"rss_after_big_echo_gc"`
	PerConnHS      float64 `json:"rss_per_conn_after_handshake"`
	PerConnBig     float64 `json:"rss_per_conn_after_big_echo"`
	PerConnBigGC   float64 `json:"rss_per_conn_after_big_echo_gc"`
	HeapPerConnHS  float64 `json:"heap_per_conn_after_handshake"`
	HeapPerConnBig float64 `json:"heap_per_conn_after_big_echo"`
	AllocPerConnHS float64 `json:"alloc_per_conn_ramp"` // heap allocated during the ramp ÷ connections
	Goroutines     int     `json:"goroutines"`
	BigEchoOK      int     `json:"big_echo_ok"`

	Messages      int64   `json:"messages"`
	Seconds       float64 `json:"seconds"`
	MsgsPerSec    float64 `json:"msgs_per_sec"`
	LatP50us      float64 `json:"lat_p50_us"`
	LatP99us      float64 `json:"lat_p99_us"`
	ServerCPU     float64 `json:"server_cpu_secs"`
	ServerCPUPerM float64 `json:"server_cpu_secs_per_million"`
	ClientCPU     float64 `json:"client_cpu_secs"`
	OtherCores    float64 `json:"other_cpu_cores"`

	// Reconnect storm (medians over the run's storms): from dropping every
	// connection at once to the last one back, when half and 90% were
	// back, and the server's CPU per reconnection (the drop's close and
	// the new handshake).
	StormSecs   float64 `json:"storm_secs,omitempty"`
	StormT50ms  float64 `json:"storm_t50_ms,omitempty"`
	StormT90ms  float64 `json:"storm_t90_ms,omitempty"`
	StormCPUms  float64 `json:"storm_server_cpu_ms_per_conn,omitempty"`
	StormClient float64 `json:"storm_client_cpu_ms_per_conn,omitempty"`

	Failed int      `json:"failed"`
	Errors []string `json:"errors,omitempty"`
}

func (r *Result) errf(f string, a ...any) { r.Errors = append(r.Errors, fmt.Sprintf(f, a...)) }

// ramp opens p.n connections, at most p.inflight handshakes at once, each
// with its own goroutine, and returns the open ones.
func ramp(d *dialer, p params, t target, r *Result) []*conn {
	cpu0, _ := proc.CPU(t.pid)
	start := time.Now()
	conns := make([]*conn, p.n)
	lats := make([]time.Duration, p.n)
	var firstErr atomic.Value
	var failed, opened atomic.Int64
	sem := make(chan struct{}, max(1, p.inflight))
	var wg sync.WaitGroup
	done := make(chan struct{})
	go func() { // progress
		tk := time.NewTicker(500 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintf(p.progress, "\r  connected %6d/%d failed %d in %.1fs\n", opened.Load(), p.n, failed.Load(), time.Since(start).Seconds())
				return
			case <-tk.C:
				fmt.Fprintf(p.progress, "\r  connected %6d/%d failed %d", opened.Load(), p.n, failed.Load())
			}
		}
	}()
	for i := 0; i < p.n; i++ {
		if p.rate > 0 {
			if w := time.Until(start.Add(time.Duration(float64(i) / p.rate * float64(time.Second)))); w > time.Millisecond {
				time.Sleep(w)
			}
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t0 := time.Now()
			c, err := d.dial(i)
			<-sem
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			lats[i] = time.Since(t0)
			conns[i] = c
			opened.Add(1)
			go c.run()
		}(i)
	}
	wg.Wait()
	close(done)
	r.RampSecs = time.Since(start).Seconds()
	cpu1, _ := proc.CPU(t.pid)
	var open []*conn
	var ok []time.Duration
	for i, c := range conns {
		if c != nil {
			open = append(open, c)
			ok = append(ok, lats[i])
		}
	}
	r.Connected = len(open)
	if len(open) > 0 {
		st := open[0].tc.ConnectionState()
		r.TLS = fmt.Sprintf("%s %s %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID)
		slices.Sort(ok)
		q := func(f float64) float64 { return float64(ok[min(len(ok)-1, int(f*float64(len(ok))))]) / 1e6 }
		r.HandshakeP50ms, r.HandshakeP99ms = q(0.5), q(0.99)
		r.HandshakeCPUms = (cpu1 - cpu0).Seconds() * 1e3 / float64(len(open))
	}
	if n := failed.Load(); n > 0 {
		r.Failed += int(n)
		r.errf("%d of %d connections failed (first: %v)", n, p.n, firstErr.Load())
	}
	return open
}

// runStorm ramps p.n connections, then p.storms times drops them all at
// once (each closed with a reset, as a network failure does) and dials
// them again at once, p.stormInfl handshakes in flight, until all are back.
func runStorm(d *dialer, p params, t target, r *Result) {
	conns := ramp(d, p, t, r)
	defer func() { closeAll(conns) }()
	var secs, t50, t90, cpu, ccpu []float64
	for k := 0; k < p.storms; k++ {
		time.Sleep(time.Second)
		w0 := takeWindow(t.pid)
		start := time.Now()
		closeAll(conns)
		n := len(conns)
		q := p
		q.inflight = p.stormInfl
		q.rate = 0
		q.progress = io.Discard
		var back []time.Duration
		conns, back = redial(d, q, n, start)
		w1 := takeWindow(t.pid)
		if len(conns) < n {
			r.errf("storm %d: %d of %d connections came back", k+1, len(conns), n)
			r.Failed += n - len(conns)
		}
		if len(back) == 0 {
			continue
		}
		slices.Sort(back)
		at := func(f float64) float64 { return back[min(len(back)-1, int(f*float64(len(back))))].Seconds() * 1e3 }
		secs = append(secs, back[len(back)-1].Seconds())
		t50 = append(t50, at(0.5))
		t90 = append(t90, at(0.9))
		cpu = append(cpu, (w1.server-w0.server).Seconds()*1e3/float64(len(back)))
		ccpu = append(ccpu, (w1.self-w0.self).Seconds()*1e3/float64(len(back)))
		fmt.Fprintf(p.progress, "  storm %d: %d back in %.3f s (half %.0f ms, 90%% %.0f ms), server %.3f ms CPU each\n",
			k+1, len(back), secs[len(secs)-1], t50[len(t50)-1], t90[len(t90)-1], cpu[len(cpu)-1])
	}
	r.StormSecs, r.StormT50ms, r.StormT90ms = median(secs), median(t50), median(t90)
	r.StormCPUms, r.StormClient = median(cpu), median(ccpu)
}

// redial opens n connections at once (p.inflight handshakes in flight) and
// returns the open ones and when each was open, measured from start.
func redial(d *dialer, p params, n int, start time.Time) ([]*conn, []time.Duration) {
	conns := make([]*conn, n)
	back := make([]time.Duration, n)
	sem := make(chan struct{}, max(1, p.inflight))
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := d.dial(i)
			<-sem
			if err != nil {
				return
			}
			back[i] = time.Since(start)
			conns[i] = c
			go c.run()
		}(i)
	}
	wg.Wait()
	var open []*conn
	var at []time.Duration
	for i, c := range conns {
		if c != nil {
			open = append(open, c)
			at = append(at, back[i])
		}
	}
	return open, at
}

// closeAll ends every connection's goroutine, which closes it, and waits
// (at most 10 s) until they are closed.
func closeAll(conns []*conn) {
	for _, c := range conns {
		close(c.cmds)
	}
	deadline := time.After(10 * time.Second)
	for _, c := range conns {
		select {
		case <-c.done:
		case <-deadline:
			return
		}
	}
}

// runIdle measures what idle wss connections cost the server, twice:
// after the handshake, and after every connection echoed one p.bigSize
// message (crypto/tls keeps the capacity of the largest record it read).
// Each time the RSS is read after p.hold without a GC forced in the
// server; then a forced GC gives the live heap.
func runIdle(d *dialer, p params, t target, r *Result) {
	runtime.GC()
	r.RSSBase, _ = proc.RSS(t.pid)
	base := load.AskServerStats(t.pid, t.stats, true)
	conns := ramp(d, p, t, r)
	defer closeAll(conns)
	n := float64(max(1, len(conns)))
	afterRamp := load.AskServerStats(t.pid, t.stats, false)
	if base != nil && afterRamp != nil {
		r.AllocPerConnHS = float64(afterRamp.TotalAlloc-base.TotalAlloc) / n
	}

	time.Sleep(p.hold)
	runtime.GC()
	r.RSSHandshake, _ = proc.RSS(t.pid)
	r.PerConnHS = float64(r.RSSHandshake-r.RSSBase) / n
	hs := stats(t, p.profile, "handshake")
	if base != nil && hs != nil {
		r.HeapPerConnHS = float64(int64(hs.HeapAlloc+hs.StackInuse)-int64(base.HeapAlloc+base.StackInuse)) / n
		r.Goroutines = hs.NumGoroutine
	}

	// Every connection echoes one big message, p.echoInflight at a time.
	fmt.Fprintf(p.progress, "  echo %d B on each of %d connections\n", p.bigSize, len(conns))
	var ok atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, max(1, p.echoInflight))
	var wg sync.WaitGroup
	for _, c := range conns {
		sem <- struct{}{}
		wg.Add(1)
		c.cmds <- func(c *conn) {
			defer wg.Done()
			_ = c.raw.SetDeadline(time.Now().Add(30 * time.Second))
			err := c.echo(p.bigSize)
			_ = c.raw.SetDeadline(time.Time{})
			<-sem
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			ok.Add(1)
		}
	}
	wg.Wait()
	r.BigEchoOK = int(ok.Load())
	if r.BigEchoOK < len(conns) {
		r.Failed += len(conns) - r.BigEchoOK
		r.errf("%d of %d big echoes failed (first: %v)", len(conns)-r.BigEchoOK, len(conns), firstErr.Load())
	}

	time.Sleep(p.hold)
	runtime.GC()
	r.RSSBig, _ = proc.RSS(t.pid)
	r.PerConnBig = float64(r.RSSBig-r.RSSBase) / n
	big := stats(t, p.profile, "16k")
	if base != nil && big != nil {
		r.HeapPerConnBig = float64(int64(big.HeapAlloc+big.StackInuse)-int64(base.HeapAlloc+base.StackInuse)) / n
	}
	time.Sleep(p.gcWait)
	r.RSSBigGC, _ = proc.RSS(t.pid)
	r.PerConnBigGC = float64(r.RSSBigGC-r.RSSBase) / n
}

// stats forces a GC in the server and reads its statistics; with a heap
// profile configured, it keeps the profile the server wrote as
// prefix-name.pprof.
func stats(t target, prefix, name string) *proc.ServerStats {
	if t.memprof != "" {
		_ = os.Remove(t.memprof)
	}
	s := load.AskServerStats(t.pid, t.stats, true)
	if t.memprof == "" || prefix == "" {
		return s
	}
	// The server writes the profile after the statistics: wait for a
	// complete file (its size stable for a moment).
	var last int64 = -1
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		fi, err := os.Stat(t.memprof)
		if err != nil {
			continue
		}
		if fi.Size() > 0 && fi.Size() == last {
			break
		}
		last = fi.Size()
	}
	b, err := os.ReadFile(t.memprof)
	if err == nil {
		err = os.WriteFile(prefix+"-"+name+".pprof", b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wssload: heap profile:", err)
	}
	return s
}

// runEcho runs the closed loop: every connection sends its next p.size
// message when the previous echo came back and was checked byte for byte.
// Messages whose echo completes in the measured window count; the server's
// CPU over the window is read from /proc.
func runEcho(d *dialer, p params, t target, r *Result) {
	conns := ramp(d, p, t, r)
	defer closeAll(conns)
	var measuring, stop atomic.Bool
	var mu sync.Mutex
	var h hist.H
	var msgs, bad int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		c.cmds <- func(c *conn) {
			defer wg.Done()
			var lh hist.H
			var n int64
			var err error
			_ = c.raw.SetDeadline(time.Now().Add(p.warmup + p.duration + 30*time.Second))
			for !stop.Load() {
				t0 := time.Now()
				if err = c.echo(p.size); err != nil {
					break
				}
				if measuring.Load() {
					lh.Record(time.Since(t0))
					n++
				}
			}
			mu.Lock()
			h.Merge(&lh)
			msgs += n
			if err != nil {
				bad++
				firstErr.CompareAndSwap(nil, err)
			}
			mu.Unlock()
		}
	}
	fmt.Fprintf(p.progress, "  echo %d conns x %d B: warmup %v, measure %v\n", len(conns), p.size, p.warmup, p.duration)
	time.Sleep(p.warmup)
	w0 := takeWindow(t.pid)
	measuring.Store(true)
	time.Sleep(p.duration)
	measuring.Store(false)
	w1 := takeWindow(t.pid)
	stop.Store(true)
	waitTimeout(&wg, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	r.Messages = msgs
	r.Seconds = w1.t.Sub(w0.t).Seconds()
	r.ServerCPU = (w1.server - w0.server).Seconds()
	r.ClientCPU = (w1.self - w0.self).Seconds()
	if r.Seconds > 0 {
		r.MsgsPerSec = float64(msgs) / r.Seconds
		r.OtherCores = max(0, ((w1.machine.Busy-w0.machine.Busy).Seconds()-r.ServerCPU-r.ClientCPU)/r.Seconds)
	}
	if msgs > 0 {
		r.ServerCPUPerM = r.ServerCPU / float64(msgs) * 1e6
	}
	r.LatP50us, r.LatP99us = float64(h.Quantile(0.5))/1e3, float64(h.Quantile(0.99))/1e3
	if bad > 0 {
		r.Failed += int(bad)
		r.errf("%d connections failed during the echo (first: %v)", bad, firstErr.Load())
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// window is a reading of the CPU times a run compares.
type window struct {
	t            time.Time
	server, self time.Duration
	machine      proc.MachineCPU
}

func takeWindow(pid int) window {
	w := window{t: time.Now()}
	w.server, _ = proc.CPU(pid)
	w.self, _ = proc.CPU(os.Getpid())
	w.machine, _ = proc.ReadMachineCPU()
	return w
}
