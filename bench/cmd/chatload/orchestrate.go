package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/bench/internal/proc"
)

type orchestration struct {
	impls   []string
	sizes   []int
	room    string
	reps    int
	procs   int
	msgs    int
	rate    float64
	wait    time.Duration
	grace   time.Duration
	settle  time.Duration
	out     string
	dialers int
	noBuild bool

	bin  string // absolute directory of the built binaries
	self string
	runs []runResult
}

// runResult is one run of one implementation at one room size.
type runResult struct {
	Impl        string   `json:"impl"`
	Members     int      `json:"members"`
	Rep         int      `json:"rep"`
	Opened      int      `json:"opened"`
	Failed      int      `json:"failed"`
	Joined      int      `json:"joined"`
	JoinSecs    float64  `json:"join_secs"` // from the first dial to every member having its member list
	Settled     int      `json:"settled"`
	SettleSecs  float64  `json:"settle_secs"` // from the first dial to every member seeing the whole room
	Dropped     int      `json:"dropped"`
	Expected    int64    `json:"expected"`
	Received    int64    `json:"received"`
	Lost        int64    `json:"lost"`
	Duplicates  int64    `json:"duplicates"`
	P50ms       float64  `json:"p50_ms"`
	P99ms       float64  `json:"p99_ms"`
	Maxms       float64  `json:"max_ms"`
	SentSecs    float64  `json:"sent_secs"`
	ServerCPU   float64  `json:"server_cpu_secs"`
	CPUPerDelus float64  `json:"server_cpu_us_per_delivery"`
	NATSCPU     float64  `json:"nats_cpu_secs,omitempty"`
	ClientCPU   float64  `json:"client_cpu_secs"`
	OtherCores  float64  `json:"other_cpu_cores"` // machine load from other processes during the window
	Errors      []string `json:"errors,omitempty"`
}

func (o *orchestration) run() error {
	if err := os.MkdirAll(filepath.Join(o.out, "logs"), 0o755); err != nil {
		return err
	}
	abs, err := filepath.Abs(o.out)
	if err != nil {
		return err
	}
	o.bin = abs
	if o.self, err = os.Executable(); err != nil {
		return err
	}
	if err := o.build(); err != nil {
		return err
	}
	proc.RaiseNoFile()
	runIdx := 0
	for rep := range o.reps {
		for _, n := range o.sizes {
			for k := range o.impls {
				impl := o.impls[(k+rep)%len(o.impls)]
				fmt.Fprintf(os.Stderr, "== %s, %d members, rep %d\n", impl, n, rep+1)
				r := o.one(impl, n, rep, runIdx)
				runIdx++
				o.runs = append(o.runs, r)
				fmt.Fprintf(os.Stderr, "   lost %d of %d, dropped %d, p50 %.1f ms, p99 %.1f ms, max %.1f ms, sent in %.2f s, %.2f µs server CPU/delivery, join %.1f s, settle %.1f s, other load %.2f cores %s\n",
					r.Lost, r.Expected, r.Dropped, r.P50ms, r.P99ms, r.Maxms, r.SentSecs, r.CPUPerDelus, r.JoinSecs, r.SettleSecs, r.OtherCores, strings.Join(r.Errors, "; "))
				if err := o.write(); err != nil {
					return err
				}
			}
		}
	}
	report, _ := os.ReadFile(filepath.Join(o.out, "results.md"))
	os.Stdout.Write(report)
	return nil
}

// build compiles the servers: wsloop's chat from this repository, gorilla's
// from the module cache, and a nats-server (from the chat module's
// requirements) when a run needs one.
func (o *orchestration) build() error {
	gobuild := func(dir, out, pkg string) error {
		if o.noBuild {
			_, err := os.Stat(filepath.Join(o.bin, out))
			return err
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(o.bin, out), pkg)
		cmd.Dir, cmd.Stdout, cmd.Stderr = dir, os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w", pkg, err)
		}
		return nil
	}
	need := map[string]bool{}
	for _, impl := range o.impls {
		switch kind, _ := implKind(impl); kind {
		case "wsloop":
			need["chat"] = true
		case "wsloop-nats":
			need["chat"], need["nats"] = true, true
		case "gorilla":
			need["gorilla"] = true
		case "":
			return fmt.Errorf("unknown implementation %q", impl)
		}
	}
	chatDir := filepath.Join("..", "examples", "chat")
	if need["chat"] {
		if err := gobuild(chatDir, "chat", "."); err != nil {
			return err
		}
	}
	if need["nats"] {
		if err := gobuild(chatDir, "nats-server", "github.com/nats-io/nats-server/v2"); err != nil {
			return err
		}
	}
	if need["gorilla"] {
		if err := gobuild(".", "gorilla-chat", "github.com/gorilla/websocket/examples/chat"); err != nil {
			return err
		}
	}
	return nil
}

// server is a process the run measures.
type server struct {
	cmd  *exec.Cmd
	addr string
	nats bool // the NATS server, measured apart from the chat servers
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (o *orchestration) start(log io.Writer, path string, nats bool, args ...string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if nats {
		args = append(args, "-a", "127.0.0.1", "-p", strconv.Itoa(port))
	} else {
		args = append([]string{"-addr", addr}, args...)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = o.bin // gorilla's chat looks for home.html here; the load never asks for it
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, addr: addr, nats: nats}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s did not listen on %s", filepath.Base(path), addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// workerProc is a client process and its stdout lines.
type workerProc struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan []string
}

func (w *workerProc) expect(kind string, timeout time.Duration) ([]string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case f, ok := <-w.lines:
			if !ok {
				return nil, fmt.Errorf("client process ended before %q", kind)
			}
			if len(f) > 0 && f[0] == kind {
				return f, nil
			}
		case <-t.C:
			return nil, fmt.Errorf("no %q from a client process within %v", kind, timeout)
		}
	}
}

func (o *orchestration) one(impl string, n, rep, runIdx int) (r runResult) {
	r = runResult{Impl: impl, Members: n, Rep: rep + 1}
	fail := func(err error) runResult {
		r.Errors = append(r.Errors, err.Error())
		return r
	}
	log, err := os.Create(filepath.Join(o.out, "logs", fmt.Sprintf("%s-%d-%d.log", sanitize(impl), n, rep+1)))
	if err != nil {
		return fail(err)
	}
	defer log.Close()

	var servers []*server
	defer func() {
		for i := len(servers) - 1; i >= 0; i-- {
			servers[i].stop()
		}
	}()
	proto := "wsloop"
	var addrs []string
	kind, args := implKind(impl)
	switch kind {
	case "wsloop":
		s, err := o.start(log, filepath.Join(o.bin, "chat"), false, args...)
		if err != nil {
			return fail(err)
		}
		servers, addrs = append(servers, s), []string{s.addr}
	case "wsloop-nats":
		ns, err := o.start(log, filepath.Join(o.bin, "nats-server"), true)
		if err != nil {
			return fail(err)
		}
		servers = append(servers, ns)
		for _, node := range []string{"a", "b"} {
			s, err := o.start(log, filepath.Join(o.bin, "chat"), false,
				append([]string{"-nats", "nats://" + ns.addr, "-node", node}, args...)...)
			if err != nil {
				return fail(err)
			}
			servers, addrs = append(servers, s), append(addrs, s.addr)
		}
	case "gorilla":
		proto = "gorilla"
		s, err := o.start(log, filepath.Join(o.bin, "gorilla-chat"), false)
		if err != nil {
			return fail(err)
		}
		servers, addrs = append(servers, s), []string{s.addr}
	default: // a binary of one's own
		s, err := o.start(log, kind, false, args...)
		if err != nil {
			return fail(err)
		}
		servers, addrs = append(servers, s), []string{s.addr}
	}

	// The client processes, each with its own range of source addresses,
	// fresh for every run so no earlier connection's state is in the way.
	var workers []*workerProc
	defer func() {
		for _, w := range workers {
			_ = w.in.Close()
			done := make(chan struct{})
			go func() { _ = w.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = w.cmd.Process.Kill()
				<-done
			}
		}
	}()
	for k := range o.procs {
		lo, hi := k*n/o.procs, (k+1)*n/o.procs
		src := fmt.Sprintf("127.%d.%d.2", 100+runIdx%100, k+1)
		cmd := exec.Command(o.self, "-worker", "-impl", proto, "-addrs", strings.Join(addrs, ","),
			"-room", o.room, "-first", strconv.Itoa(lo), "-count", strconv.Itoa(hi-lo), "-total", strconv.Itoa(n),
			"-src", src, "-src-count", "4", "-msgs", strconv.Itoa(o.msgs), "-rate", fmt.Sprint(o.rate),
			"-dialers", strconv.Itoa(o.dialers), "-settle-timeout", o.settle.String(), "-max-life", "30m")
		cmd.Stderr = log
		in, err := cmd.StdinPipe()
		if err != nil {
			return fail(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return fail(err)
		}
		if err := cmd.Start(); err != nil {
			return fail(err)
		}
		w := &workerProc{cmd: cmd, in: in, lines: make(chan []string, 16)}
		go func() {
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			for sc.Scan() {
				line := sc.Text()
				kind, rest, _ := strings.Cut(line, " ")
				if kind == "result" {
					w.lines <- []string{kind, rest}
				} else {
					w.lines <- strings.Fields(line)
				}
			}
			close(w.lines)
		}()
		workers = append(workers, w)
	}

	for _, w := range workers {
		f, err := w.expect("opened", o.settle)
		if err != nil {
			return fail(err)
		}
		ok, _ := strconv.Atoi(f[1])
		bad, _ := strconv.Atoi(f[2])
		r.Opened += ok
		r.Failed += bad
	}
	for _, w := range workers {
		f, err := w.expect("joined", o.settle+time.Minute)
		if err != nil {
			return fail(err)
		}
		j, _ := strconv.Atoi(f[1])
		secs, _ := strconv.ParseFloat(f[2], 64)
		r.Joined += j
		r.JoinSecs = max(r.JoinSecs, secs)
	}
	if r.Joined < n {
		r.Errors = append(r.Errors, fmt.Sprintf("only %d of %d members got their member list", r.Joined, n))
	}
	time.Sleep(o.wait)

	before := o.sample(servers, workers)
	if _, err := io.WriteString(workers[0].in, "send\n"); err != nil {
		return fail(err)
	}
	f, err := workers[0].expect("sent", time.Duration(float64(o.msgs)/o.rate*float64(time.Second))*3+time.Minute)
	if err != nil {
		return fail(err)
	}
	r.SentSecs, _ = strconv.ParseFloat(f[1], 64)
	var lat histData
	for _, w := range workers {
		if _, err := io.WriteString(w.in, "finish "+o.grace.String()+"\n"); err != nil {
			return fail(err)
		}
	}
	for _, w := range workers {
		f, err := w.expect("result", o.grace+time.Minute)
		if err != nil {
			return fail(err)
		}
		var wr workerResult
		if err := json.Unmarshal([]byte(f[1]), &wr); err != nil {
			return fail(err)
		}
		r.Dropped += wr.Dropped
		r.Received += wr.Received
		r.Duplicates += wr.Duplicates
		r.Settled += wr.Settled
		r.SettleSecs = max(r.SettleSecs, wr.SettleSecs)
		lat.merge(wr.Lat)
		if wr.FirstErr != "" {
			r.Errors = append(r.Errors, wr.FirstErr)
		}
	}
	after := o.sample(servers, workers)

	r.Expected = int64(r.Opened) * int64(o.msgs)
	r.Lost = r.Expected - r.Received
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	r.P50ms, r.P99ms, r.Maxms = ms(lat.quantile(0.5)), ms(lat.quantile(0.99)), ms(time.Duration(lat.Max))
	r.ServerCPU = (after.server - before.server).Seconds()
	r.NATSCPU = (after.nats - before.nats).Seconds()
	r.ClientCPU = (after.clients - before.clients).Seconds()
	if r.Received > 0 {
		r.CPUPerDelus = r.ServerCPU / float64(r.Received) * 1e6
	}
	if wall := after.t.Sub(before.t).Seconds(); wall > 0 {
		busy := (after.machine.Busy - before.machine.Busy).Seconds()
		r.OtherCores = max(0, (busy-r.ServerCPU-r.NATSCPU-r.ClientCPU)/wall)
	}
	if r.Settled < r.Opened {
		r.SettleSecs = -1 // somebody never saw the whole room
	}
	return r
}

// cpuSample is the CPU time used so far by the run's processes and the
// machine.
type cpuSample struct {
	t                     time.Time
	server, nats, clients time.Duration
	machine               proc.MachineCPU
}

func (o *orchestration) sample(servers []*server, workers []*workerProc) cpuSample {
	s := cpuSample{t: time.Now()}
	for _, sv := range servers {
		c, _ := proc.CPU(sv.cmd.Process.Pid)
		if sv.nats {
			s.nats += c
		} else {
			s.server += c
		}
	}
	for _, w := range workers {
		c, _ := proc.CPU(w.cmd.Process.Pid)
		s.clients += c
	}
	s.machine, _ = proc.ReadMachineCPU()
	return s
}

// implKind splits an implementation into what runs and its extra
// arguments: "wsloop", "wsloop-nats" and "gorilla" are built here;
// "NAME=wsloop -loops 1" is the built chat with arguments;
// "NAME=PATH ARGS" is a chat binary of one's own. Unknown names give "".
func implKind(impl string) (string, []string) {
	name, spec, custom := strings.Cut(impl, "=")
	if !custom {
		switch name {
		case "wsloop", "wsloop-nats", "gorilla":
			return name, nil
		}
		return "", nil
	}
	f := strings.Fields(spec)
	if len(f) == 0 {
		return "", nil
	}
	return f[0], f[1:]
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, strings.SplitN(s, "=", 2)[0])
}
