// Package child runs a server under measurement as a child process and
// asks it for its Go runtime statistics and heap profile. Two kinds of
// server are understood:
//
//   - a bench server (cmd/server -impl NAME): ready when it prints READY;
//     statistics by signal into its -stats file (SIGUSR2 as they stand,
//     SIGUSR1 after a forced GC, which also writes its -memprofile);
//   - examples/embed (the program users copy): ready when its port
//     answers; statistics from its -debug-addr listener (/debug/vars
//     without a GC; /debug/pprof/heap?gc=1 forces one and is the heap
//     profile).
//
// Every server runs with the Go runtime's defaults: GOGC, GOMEMLIMIT and
// GOMAXPROCS are removed from its environment unless Spec.Env sets them.
package child

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/bench/internal/load"
	"github.com/wsloop/wsloop/bench/internal/proc"
)

// Spec says which server to run.
type Spec struct {
	Label string   // name in reports
	Impl  string   // bench server implementation, or "embed"
	Bin   string   // the binary: bin/server, or a build of examples/embed
	Args  []string // extra arguments
	Env   []string // extra environment (KEY=VALUE)
	// Profile makes the server sample every allocation
	// (GODEBUG=memprofilerate=1), so that HeapProfile attributes every
	// byte; it costs CPU and memory, so only profiling runs set it.
	Profile bool
	Dir     string // scratch directory for the stats and profile files
	CPUs    string // bench server only: -cpus
	Stderr  io.Writer
}

// ParseSpec reads LABEL=IMPL[@BIN][ ARGS...] or IMPL; bin is the default
// binary of a bench server, embedBin that of "embed".
func ParseSpec(s, bin, embedBin string) Spec {
	sp := Spec{Label: s, Impl: s}
	if label, rest, ok := strings.Cut(s, "="); ok {
		f := strings.Fields(rest)
		sp.Label = label
		sp.Impl, sp.Bin, _ = strings.Cut(f[0], "@")
		sp.Args = f[1:]
	}
	if sp.Bin == "" {
		sp.Bin = bin
		if sp.Impl == "embed" {
			sp.Bin = embedBin
		}
	}
	return sp
}

// Server is a running child.
type Server struct {
	Spec  Spec
	Addr  netip.AddrPort
	Pid   int
	cmd   *exec.Cmd
	done  chan struct{}
	stats string // bench: -stats file
	prof  string // bench: -memprofile file
	debug string // embed: debug listener address
}

// FreePort returns a loopback address with a port nothing listens on.
func FreePort() (netip.AddrPort, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer ln.Close()
	return netip.ParseAddrPort(ln.Addr().String())
}

// Start runs the server and waits until it accepts connections.
func Start(sp Spec) (*Server, error) {
	addr, err := FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{Spec: sp, Addr: addr, done: make(chan struct{})}
	var args []string
	embed := sp.Impl == "embed"
	if embed {
		dbg, err := FreePort()
		if err != nil {
			return nil, err
		}
		s.debug = dbg.String()
		args = []string{"-addr", addr.String(), "-debug-addr", s.debug}
	} else {
		s.stats = filepath.Join(sp.Dir, fmt.Sprintf("stats-%d.json", addr.Port()))
		s.prof = filepath.Join(sp.Dir, fmt.Sprintf("heap-%d.pprof", addr.Port()))
		args = []string{"-impl", sp.Impl, "-addr", addr.String(), "-stats", s.stats, "-max-life", "30m"}
		if sp.Profile {
			args = append(args, "-memprofile", s.prof)
		}
		if sp.CPUs != "" {
			args = append(args, "-cpus", sp.CPUs)
		}
	}
	s.cmd = exec.Command(sp.Bin, append(args, sp.Args...)...)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != "GOGC" && k != "GOMEMLIMIT" && k != "GOMAXPROCS" && k != "GODEBUG" {
			s.cmd.Env = append(s.cmd.Env, kv)
		}
	}
	if sp.Profile {
		s.cmd.Env = append(s.cmd.Env, "GODEBUG=memprofilerate=1")
	}
	s.cmd.Env = append(s.cmd.Env, sp.Env...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.cmd.Stderr = sp.Stderr
	if embed && sp.Stderr == nil {
		s.cmd.Stderr = io.Discard // one log line per request
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	s.Pid = s.cmd.Process.Pid
	ready := ScanReady(stdout) // which also drains the output
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	if embed {
		// No READY line: ready when both its ports answer.
		answered := make(chan bool, 1)
		ready = answered
		go func() {
			for i := 0; i < 300; i++ {
				if c, err := net.DialTimeout("tcp", s.debug, time.Second); err == nil {
					c.Close()
					if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
						c.Close()
						answered <- true
						return
					}
				}
				select {
				case <-s.done:
					answered <- false
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
	}
	select {
	case ok := <-ready:
		if !ok {
			s.Stop()
			return nil, fmt.Errorf("%s exited before it was ready", sp.Label)
		}
	case <-time.After(30 * time.Second):
		s.Stop()
		return nil, fmt.Errorf("%s not ready after 30 s", sp.Label)
	}
	time.Sleep(200 * time.Millisecond) // let the fresh process settle before any baseline
	return s, nil
}

// ScanReady reads a bench server's output to its end and reports on the
// channel whether it printed its READY line: true as soon as it did, false
// if the output ended first.
func ScanReady(stdout io.Reader) <-chan bool {
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			if !sent && strings.HasPrefix(sc.Text(), "READY ") {
				ready <- true
				sent = true
			}
		}
		if !sent {
			ready <- false
		}
	}()
	return ready
}

// Exited reports whether the server has exited.
func (s *Server) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Stop ends the server: SIGTERM, then SIGKILL after 5 s.
func (s *Server) Stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// RSS is the server's VmRSS in bytes.
func (s *Server) RSS() int64 {
	v, _ := proc.RSS(s.Pid)
	return v
}

// CPU is the user+system time the server has used so far.
func (s *Server) CPU() time.Duration {
	v, _ := proc.CPU(s.Pid)
	return v
}

// Stats asks the server for its runtime statistics, after a forced GC when
// forceGC is set; nil if it does not answer.
func (s *Server) Stats(forceGC bool) *proc.ServerStats {
	if s.debug == "" {
		return load.AskServerStats(s.Pid, s.stats, forceGC)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if forceGC {
		resp, err := hc.Get("http://" + s.debug + "/debug/pprof/heap?gc=1")
		if err != nil {
			return nil
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	resp, err := hc.Get("http://" + s.debug + "/debug/vars")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var v struct {
		Goroutines int `json:"goroutines"`
		Memstats   struct {
			HeapAlloc, HeapInuse, HeapSys, HeapIdle, HeapReleased, StackInuse, Sys uint64
			GCSys, MSpanInuse, OtherSys, TotalAlloc, Mallocs, NextGC               uint64
			NumGC                                                                  uint32
		} `json:"memstats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return nil
	}
	m := v.Memstats
	return &proc.ServerStats{Impl: "embed", Forced: forceGC, HeapAlloc: m.HeapAlloc, HeapInuse: m.HeapInuse,
		HeapSys: m.HeapSys, StackInuse: m.StackInuse, Sys: m.Sys, HeapReleased: m.HeapReleased, GCSys: m.GCSys,
		MSpanInuse: m.MSpanInuse, OtherSys: m.OtherSys, NumGoroutine: v.Goroutines, NumGC: m.NumGC,
		HeapGoal: m.NextGC, TotalAlloc: m.TotalAlloc, TotalAllocs: m.Mallocs,
		HeapFree: m.HeapIdle - m.HeapReleased, HeapUnused: m.HeapInuse - m.HeapAlloc}
}

// HeapProfile forces a GC in the server and writes its heap profile to
// path (Spec.Profile must be set for a bench server), returning the
// statistics read with it.
func (s *Server) HeapProfile(path string) (*proc.ServerStats, error) {
	if s.debug != "" {
		resp, err := http.Get("http://" + s.debug + "/debug/pprof/heap?gc=1")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		return s.Stats(false), os.WriteFile(path, b, 0o644)
	}
	if !s.Spec.Profile {
		return nil, fmt.Errorf("%s: started without Profile", s.Spec.Label)
	}
	_ = os.Remove(s.prof)
	st := s.Stats(true)
	// The server writes the profile after the statistics, under a
	// temporary name that it renames when the profile is complete.
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		b, err := os.ReadFile(s.prof)
		if err != nil {
			continue
		}
		return st, os.WriteFile(path, b, 0o644)
	}
	return st, fmt.Errorf("%s wrote no heap profile", s.Spec.Label)
}

// Top runs go tool pprof -top on a heap profile (inuse_space), less the
// profile base when base is not "", and returns its rows: flat bytes per
// function, largest first.
func Top(bin, profile, base string, n int) ([]TopRow, string, error) {
	args := []string{"tool", "pprof", "-sample_index=inuse_space", "-top", "-nodecount=" + strconv.Itoa(n)}
	if base != "" {
		args = append(args, "-base", base)
	}
	out, err := exec.Command("go", append(args, bin, profile)...).CombinedOutput()
	if err != nil {
		return nil, string(out), fmt.Errorf("pprof: %v", err)
	}
	var rows []TopRow
	started := false
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if !started {
			started = len(f) > 0 && f[0] == "flat"
			continue
		}
		if len(f) < 6 {
			continue
		}
		rows = append(rows, TopRow{Flat: parseBytes(f[0]), Func: strings.Join(f[5:], " ")})
	}
	return rows, string(out), nil
}

// TopRow is one line of pprof -top.
type TopRow struct {
	Flat float64 `json:"flat_bytes"`
	Func string  `json:"func"`
}

func parseBytes(s string) float64 {
	mult := 1.0
	for _, u := range []struct {
		suf string
		m   float64
	}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suf) {
			mult = u.m
			s = strings.TrimSuffix(s, u.suf)
			break
		}
	}
	v, _ := strconv.ParseFloat(s, 64)
	return v * mult
}
