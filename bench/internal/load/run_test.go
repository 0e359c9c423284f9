package load_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wsloop/wsloop/bench/internal/load"
	"github.com/wsloop/wsloop/bench/servers"
)

// startServer runs the gorilla bench server (plain net/http, nothing to
// build) on a free loopback port for the rest of the test binary's life.
func startServer(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	run, err := servers.Get("gorilla")
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() { _ = run(addr, servers.Settings{}, func() { close(ready) }) }()
	<-ready
	return netip.MustParseAddrPort(addr)
}

func TestHoldRampsAtTheRateAndAnswersCommands(t *testing.T) {
	target := startServer(t)
	var out bytes.Buffer
	const n, rate = 60, 1000.0
	r, err := load.Run(load.Config{Target: target}, load.Options{
		Scenario: "hold", N: n, Size: 64, Rate: rate, Sample: 0.5,
		Control: strings.NewReader("check\nquit\n"), Out: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Connected != n || r.ConnectFailed != 0 {
		t.Fatalf("connected %d, failed %d: %v", r.Connected, r.ConnectFailed, r.Errors)
	}
	// Paced from the start: the last dial is due at (n-1)/rate.
	if min := float64(n-1) / rate; r.ConnectSecs < min {
		t.Errorf("ramp took %.4f s, less than the %.4f s the rate allows", r.ConnectSecs, min)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || lines[0] != "OPENED 60 0" || lines[1] != "CHECKED 30 30" {
		t.Fatalf("control answers %q", lines)
	}
	if r.SampleSent != 30 || r.SampleOK != 30 || len(r.Errors) != 0 {
		t.Fatalf("sample %d/%d, errors %v", r.SampleOK, r.SampleSent, r.Errors)
	}
}

func TestIdleReadsAtEachMomentWithoutStats(t *testing.T) {
	target := startServer(t)
	r, err := load.Run(load.Config{Target: target}, load.Options{
		Scenario: "idle", N: 30, Size: 64, ReadAt: []time.Duration{0, 20 * time.Millisecond},
		Hold: 50 * time.Millisecond, ServerPID: os.Getpid(), EchoAll: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Errors) != 0 || r.Connected != 30 {
		t.Fatalf("connected %d, errors %v", r.Connected, r.Errors)
	}
	if len(r.Readings) != 3 {
		t.Fatalf("%d readings, want 3 (0, 20 ms, hold)", len(r.Readings))
	}
	for i, rd := range r.Readings {
		if rd.RSS <= 0 || rd.Stats != nil {
			t.Errorf("reading %d: RSS %d, stats %v (no stats file, so none)", i, rd.RSS, rd.Stats)
		}
		if i > 0 && rd.After < r.Readings[i-1].After {
			t.Errorf("reading %d at %.3f s, before the previous one", i, rd.After)
		}
	}
	if last := r.Readings[2]; last.After < 0.05 || r.ServerRSSHeld != last.RSS {
		t.Errorf("last reading at %.3f s (want the 50 ms hold), held RSS %d vs %d", last.After, r.ServerRSSHeld, last.RSS)
	}
	// 30 echoes right after the ramp (EchoAll) and 20 after the hold.
	if r.SampleSent != 20 || r.SampleOK != 20 {
		t.Errorf("sample %d/%d", r.SampleOK, r.SampleSent)
	}
}

// A storm drops every connection and brings the same number back; the
// answer says how many and when, and the connections echo afterwards.
func TestHoldStormReconnectsEveryConnection(t *testing.T) {
	target := startServer(t)
	var out bytes.Buffer
	const n = 40
	r, err := load.Run(load.Config{Target: target, Inflight: 8, MaxInflight: n}, load.Options{
		Scenario: "hold", N: n, Size: 64, Sample: 1, StormInflight: n,
		Control: strings.NewReader("storm\nstorm\ncheck\nquit\n"), Out: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || lines[0] != "OPENED 40 0" || lines[3] != "CHECKED 40 40" {
		t.Fatalf("control answers %q", lines)
	}
	for _, l := range lines[1:3] {
		f := strings.Fields(l)
		if len(f) != 8 || f[0] != "BACK" || f[1] != "40" || f[2] != "0" {
			t.Fatalf("storm answer %q, want BACK 40 0 ...", l)
		}
		var secs, t50, t90 float64
		fmt.Sscan(f[3], &secs)
		fmt.Sscan(f[4], &t50)
		fmt.Sscan(f[5], &t90)
		if secs <= 0 || t50 <= 0 || t50 > t90 || t90 > secs*1000+1 {
			t.Errorf("storm times out of order: %q", l)
		}
	}
	if r.ClosedEarly != 0 || len(r.Errors) != 0 {
		t.Errorf("closed early %d, errors %v", r.ClosedEarly, r.Errors)
	}
}

// The open-loop echo sends what the schedule says, whether or not echoes
// came back, and measures every echo of the window.
func TestOpenLoopKeepsTheSchedule(t *testing.T) {
	target := startServer(t)
	const n, rate = 20, 400.0
	dur := 500 * time.Millisecond
	r, err := load.Run(load.Config{Target: target}, load.Options{
		Scenario: "echo", N: n, Size: 128, OpenRate: rate, Warmup: 100 * time.Millisecond, Duration: dur,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Errors) != 0 || r.Mismatches != 0 {
		t.Fatalf("errors %v, mismatches %d", r.Errors, r.Mismatches)
	}
	// The window holds rate*dur scheduled messages, give or take one
	// per connection at its edges.
	want := int64(rate * dur.Seconds())
	if r.Messages < want-n || r.Messages > want+n {
		t.Errorf("%d messages measured, want about %d", r.Messages, want)
	}
	if r.LatP50us <= 0 || r.LatP99us < r.LatP50us || r.LatP999us < r.LatP99us {
		t.Errorf("latencies p50 %.0f p99 %.0f p99.9 %.0f us", r.LatP50us, r.LatP99us, r.LatP999us)
	}
}
