// Command million holds N idle WebSocket connections on one machine, as
// many as the machine allows, and says what each costs: the server's
// resident memory and the kernel's, side by side for every implementation
// asked for.
//
// One process may hold only RLIMIT_NOFILE descriptors, so the connections
// are spread over several server processes sharing one port (SO_REUSEPORT:
// the kernel spreads new connections over them) and several wsload client
// processes, each on its own range of loopback source addresses (one source
// address gives at most one connection per ephemeral port towards the
// server's port). For each implementation in turn it:
//
//  1. starts the server processes and reads their memory and the kernel's
//     (meminfo, slabinfo, sockstat, conntrack) as the baseline;
//  2. starts the clients (wsload -scenario hold), which ramp at -rate
//     connections per second in total and report how many they opened;
//  3. holds for -hold, then reads everything again: no GC is forced in a
//     server before that reading; only afterwards a forced GC gives the live
//     heap;
//  4. has every client echo-check a sample of its connections;
//  5. stops the clients (their sockets are reset, so no TIME_WAIT is left)
//     and the servers, and waits for the kernel to release the sockets.
//
// Results: a markdown table on stdout and in -out/million.md, raw figures in
// -out/million.json. Every step has a timeout, and every child process is
// killed when million exits, however it exits.
//
//	million -bin bin -impls wsloop,nbio -n 1002000 -rate 50000 -out results/million
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/bench/internal/load"
	"github.com/wsloop/wsloop/bench/internal/proc"
)

type config struct {
	bin         string
	impls       []string
	n           int
	servers     int
	clients     int
	rate        float64
	hold        time.Duration
	sample      float64
	port        int
	serverCPUs  string
	clientCPUs  string
	serverLoops int
	serverEnv   []string
	clientLoops int
	srcBase     netip.Addr
	srcPer      int
	inflight    int
	rampTimeout time.Duration
	stepTimeout time.Duration
	maxTime     time.Duration
	out         string
	fill        float64
}

func main() {
	var c config
	flag.StringVar(&c.bin, "bin", "bin", "directory holding the server and wsload binaries")
	impls := flag.String("impls", "wsloop,nbio", "implementations, one after the other")
	flag.IntVar(&c.n, "n", 40000, "connections to hold")
	flag.IntVar(&c.servers, "servers", 0, "server processes sharing the port (0: as few as the descriptor limit allows)")
	flag.IntVar(&c.clients, "clients", 0, "wsload client processes (0: as few as the descriptor limit allows)")
	flag.Float64Var(&c.fill, "fill", 0.85, "with -servers 0: fill each server process to this fraction of its descriptor limit (the kernel's spread over SO_REUSEPORT sockets is uneven)")
	flag.Float64Var(&c.rate, "rate", 10000, "ramp rate, new connections per second over all clients (0: unpaced)")
	flag.DurationVar(&c.hold, "hold", 10*time.Second, "hold after the ramp before the reading")
	flag.Float64Var(&c.sample, "sample", 0.01, "fraction of each client's connections echo-checked after the reading (at least 20 each)")
	flag.IntVar(&c.port, "port", 9100, "server port on 127.0.0.1")
	flag.StringVar(&c.serverCPUs, "server-cpus", "", "pin every server process to these CPUs (taskset -c syntax)")
	flag.StringVar(&c.clientCPUs, "client-cpus", "", "pin every client process to these CPUs")
	flag.IntVar(&c.serverLoops, "server-loops", 1, "event loops (wsloop) or pollers (nbio) per server process")
	flag.Func("server-env", "environment setting `KEY=VALUE` for the server processes (repeatable), e.g. GOMAXPROCS=2", func(s string) error {
		if !strings.Contains(s, "=") {
			return fmt.Errorf("want KEY=VALUE")
		}
		c.serverEnv = append(c.serverEnv, s)
		return nil
	})
	flag.IntVar(&c.clientLoops, "client-loops", 1, "event loops per client process")
	src := flag.String("src", "127.64.0.2", "first client source address; client i uses -src-per addresses from here on")
	flag.IntVar(&c.srcPer, "src-per", 0, "source addresses per client (0: enough for at most 8,000 connections per address)")
	flag.IntVar(&c.inflight, "inflight", 256, "handshakes in flight per client")
	flag.DurationVar(&c.rampTimeout, "ramp-timeout", 3*time.Minute, "stop waiting for the ramp after this long")
	flag.DurationVar(&c.stepTimeout, "step-timeout", 30*time.Second, "bound on every other step (start, check, stop)")
	flag.DurationVar(&c.maxTime, "max-time", 15*time.Minute, "kill everything and exit after this long")
	flag.StringVar(&c.out, "out", "", "directory for million.md and million.json (default: stdout only)")
	flag.Parse()
	c.impls = strings.Split(*impls, ",")
	a, err := netip.ParseAddr(*src)
	if err != nil || !a.Is4() || !a.IsLoopback() {
		fatal("-src must be an IPv4 loopback address")
	}
	c.srcBase = a
	if c.n <= 0 {
		fatal("-n must be positive")
	}

	var kids children
	// Whatever ends this process ends its children too.
	time.AfterFunc(c.maxTime, func() {
		fmt.Fprintln(os.Stderr, "million: -max-time reached, killing everything")
		kids.killAll()
		os.Exit(3)
	})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "million: %v, killing everything\n", s)
		kids.killAll()
		os.Exit(1)
	}()

	limit := proc.RaiseNoFile()
	pre := preflight(&c, limit)
	for _, l := range pre {
		fmt.Println("million:", l)
	}
	tmp, err := os.MkdirTemp("", "million")
	if err != nil {
		fatal("%v", err)
	}
	defer os.RemoveAll(tmp)

	var results []*result
	for i, impl := range c.impls {
		fmt.Printf("million: [%s] %d connections over %d server and %d client processes, ramp %.0f/s\n", impl, c.n, c.servers, c.clients, c.rate)
		r := runImpl(&c, impl, tmp, i, &kids)
		results = append(results, r)
		fmt.Println("million:", r.summary())
	}
	md := report(&c, pre, results)
	fmt.Println()
	fmt.Print(md)
	if c.out != "" {
		if err := os.MkdirAll(c.out, 0o755); err != nil {
			fatal("%v", err)
		}
		raw, _ := json.MarshalIndent(struct {
			Preflight []string  `json:"preflight"`
			Results   []*result `json:"results"`
		}{pre, results}, "", "  ")
		_ = os.WriteFile(filepath.Join(c.out, "million.json"), raw, 0o644)
		_ = os.WriteFile(filepath.Join(c.out, "million.md"), []byte(md), 0o644)
	}
}

func fatal(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "million: "+f+"\n", a...)
	os.Exit(2)
}

// preflight sizes the run from the descriptor limit and lists what the
// kernel's settings allow, with a warning for each that would cap the run.
func preflight(c *config, limit uint64) []string {
	capacity := int(limit) - 100 // descriptors a process can give to connections
	if capacity < 100 {
		fatal("RLIMIT_NOFILE %d is too small", limit)
	}
	var perClient int
	c.servers, c.clients, c.srcPer, perClient = size(c.n, capacity, c.fill, c.servers, c.clients, c.srcPer)
	if perClient > capacity {
		fatal("%d connections per client process exceed the descriptor limit (%d); raise -clients", perClient, limit)
	}
	var l []string
	l = append(l, fmt.Sprintf("RLIMIT_NOFILE %d per process: %d server processes (~%d connections each), %d client processes (%d each, %d source addresses each)",
		limit, c.servers, (c.n+c.servers-1)/c.servers, c.clients, perClient, c.srcPer))
	if per := float64(c.n) / float64(c.servers); per > float64(capacity) {
		l = append(l, fmt.Sprintf("WARNING: %.0f connections per server process exceed its descriptor limit; raise -servers", per))
	}
	lo, hi := readPair("/proc/sys/net/ipv4/ip_local_port_range")
	if ports := hi - lo + 1; ports > 0 {
		per := (perClient + c.srcPer - 1) / c.srcPer
		l = append(l, fmt.Sprintf("ip_local_port_range %d-%d: %d ports per source address, %d connections per source address", lo, hi, ports, per))
		if per > ports*9/10 {
			l = append(l, "WARNING: too few ephemeral ports per source address; raise -src-per")
		}
	}
	for _, f := range []string{"fs/nr_open", "fs/file-max", "net/core/somaxconn", "net/ipv4/tcp_max_syn_backlog", "net/netfilter/nf_conntrack_max"} {
		b, err := os.ReadFile("/proc/sys/" + f)
		v := strings.TrimSpace(string(b))
		if err != nil {
			v = "absent"
		}
		l = append(l, fmt.Sprintf("%s = %s", strings.ReplaceAll(f, "/", "."), v))
		n, _ := strconv.ParseInt(v, 10, 64)
		switch {
		case f == "fs/file-max" && err == nil && n < int64(2*c.n)+10000:
			l = append(l, fmt.Sprintf("WARNING: fs.file-max %d < 2 descriptors per connection (%d)", n, 2*c.n))
		case f == "net/netfilter/nf_conntrack_max" && err == nil && n < int64(c.n)+10000:
			l = append(l, fmt.Sprintf("WARNING: nf_conntrack_max %d < connections (%d): the kernel will drop new connections once the table is full", n, c.n))
		}
	}
	if b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled"); err == nil {
		l = append(l, "transparent huge pages: "+strings.TrimSpace(string(b)))
	}
	if mi, err := proc.MemInfo(); err == nil {
		// Rough need: kernel ~7 KB per loopback connection pair, the
		// client ~0.5 KB, a server up to a few KB.
		need := int64(c.n) * 12 << 10
		l = append(l, fmt.Sprintf("MemAvailable %.1f GiB, rough need %.1f GiB", float64(mi["MemAvailable"])/(1<<30), float64(need)/(1<<30)))
		if mi["MemAvailable"] < need {
			l = append(l, "WARNING: the machine may not have the memory for this run")
		}
	}
	return l
}

// size fills in the process counts left at 0: server processes filled to
// fill of their capacity (descriptors each can give to connections),
// clients filled to capacity, and enough source addresses per client for at
// most 8,000 connections each (a quarter of the default ephemeral range, so
// the kernel's port search stays short).
func size(n, capacity int, fill float64, servers, clients, srcPer int) (int, int, int, int) {
	if servers <= 0 {
		servers = int(math.Ceil(float64(n) / (fill * float64(capacity))))
	}
	if clients <= 0 {
		clients = (n + capacity - 1) / capacity
	}
	perClient := (n + clients - 1) / clients
	if srcPer <= 0 {
		srcPer = max(1, (perClient+7999)/8000)
	}
	return servers, clients, srcPer, perClient
}

func readPair(path string) (int, int) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, -1
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, -1
	}
	a, _ := strconv.Atoi(f[0])
	z, _ := strconv.Atoi(f[1])
	return a, z
}

// children tracks every process million started, so that all of them can
// be killed whatever happens.
type children struct {
	mu    sync.Mutex
	procs []*os.Process
}

func (k *children) add(p *os.Process) {
	k.mu.Lock()
	k.procs = append(k.procs, p)
	k.mu.Unlock()
}

func (k *children) killAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.procs {
		_ = p.Kill()
	}
}

// snapshot is the machine's memory at one moment.
type snapshot struct {
	ServerRSS  int64                     `json:"server_rss"`
	ClientRSS  int64                     `json:"client_rss"`
	MemInfo    map[string]int64          `json:"meminfo"`
	Sock       proc.SockStat             `json:"sockstat"`
	Slab       map[string]proc.SlabCache `json:"-"`
	SlabActive int64                     `json:"slab_active_bytes"`
	Conntrack  int64                     `json:"conntrack"`
}

func take(servers, clients []*child) snapshot {
	var s snapshot
	for _, c := range servers {
		r, _ := proc.RSS(c.pid())
		s.ServerRSS += r
	}
	for _, c := range clients {
		r, _ := proc.RSS(c.pid())
		s.ClientRSS += r
	}
	s.MemInfo, _ = proc.MemInfo()
	s.Sock, _ = proc.ReadSockStat()
	s.Slab, _ = proc.SlabInfo()
	for _, c := range s.Slab {
		s.SlabActive += c.ActiveBytes()
	}
	s.Conntrack = proc.ConntrackCount()
	return s
}

// result is what one implementation's run measured. Per-connection figures
// are bytes.
type result struct {
	Impl           string              `json:"impl"`
	Target         int                 `json:"target"`
	Connected      int64               `json:"connected"`
	Failed         int64               `json:"failed"`
	Servers        int                 `json:"servers"`
	Clients        int                 `json:"clients"`
	RampSecs       float64             `json:"ramp_secs"`
	RampRate       float64             `json:"ramp_rate"`
	ServerRSS      float64             `json:"server_rss_per_conn"`
	ServerLive     float64             `json:"server_live_heap_per_conn"`
	ServerAlloc    float64             `json:"server_alloc_per_conn"`
	ClientRSS      float64             `json:"client_rss_per_conn"`
	KernelSlab     float64             `json:"kernel_slab_objects_per_conn"`
	KernelSockets  float64             `json:"kernel_socket_caches_per_conn"`
	KernelSlabMem  float64             `json:"kernel_slab_meminfo_per_conn"`
	KernelTCPMem   float64             `json:"kernel_tcp_buffers_per_conn"`
	KernelOther    float64             `json:"kernel_stacks_pagetables_per_conn"`
	Conntrack      int64               `json:"conntrack_entries"`
	TopCaches      []cache             `json:"top_caches"`
	SampleSent     int64               `json:"sample_sent"`
	SampleOK       int64               `json:"sample_ok"`
	Errors         []string            `json:"errors,omitempty"`
	Base           snapshot            `json:"base"`
	Held           snapshot            `json:"held"`
	ServerStatsGC  []*proc.ServerStats `json:"-"`
	ClientsResults []*load.Result      `json:"-"`
}

type cache struct {
	Name     string  `json:"name"`
	PerConn  float64 `json:"bytes_per_conn"`
	ObjSize  int64   `json:"object_size"`
	ObjDelta int64   `json:"objects_added"`
}

// socketCaches are the slab caches a loopback connection pair allocates
// from: two TCP sockets with their inodes, dentries and files, their epoll
// items, the client's bind bucket, the LSM blobs, and the conntrack entry
// when conntrack is tracking. Their sum is the kernel's cost of a pair
// without what other processes on a shared machine allocate meanwhile
// (the all-caches total includes that).
var socketCaches = []string{"TCP", "sock_inode_cache", "dentry", "filp", "eventpoll_epi", "eventpoll_pwq",
	"nf_conntrack", "tcp_bind_bucket", "tcp_bind2_bucket", "lsm_inode_cache", "lsm_file_cache"}

func (r *result) errf(f string, a ...any) { r.Errors = append(r.Errors, fmt.Sprintf(f, a...)) }

func (r *result) summary() string {
	s := fmt.Sprintf("%s: %d/%d connected in %.1f s (%.0f/s); server RSS %.0f B/conn (live heap %.0f), kernel %.0f B per connection pair (socket caches; all slab caches %.0f), client RSS %.0f B/conn; sample %d/%d",
		r.Impl, r.Connected, r.Target, r.RampSecs, r.RampRate, r.ServerRSS, r.ServerLive, r.KernelSockets, r.KernelSlab, r.ClientRSS, r.SampleOK, r.SampleSent)
	if len(r.Errors) > 0 {
		s += "; problems: " + strings.Join(r.Errors, "; ")
	}
	return s
}

// child is a started process with its stdout read line by line.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func start(kids *children, stderr io.Writer, name string, args []string, env []string, withStdin bool) (*child, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Stderr = stderr
	// The kernel kills the child if million dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := &child{cmd: cmd, lines: make(chan string, 256), done: make(chan struct{})}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if withStdin {
		if c.stdin, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	kids.add(cmd.Process)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			// Never block on a reader: a server that logs to stdout
			// must not stall here, or its exit would never be seen.
			// The lines million waits for are few and read promptly.
			select {
			case c.lines <- sc.Text():
			default:
			}
		}
		close(c.lines)
		_ = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// expect waits for a line starting with prefix and returns the rest.
func (c *child) expect(prefix string, deadline time.Time) (string, bool) {
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				return "", false
			}
			if rest, found := strings.CutPrefix(l, prefix); found {
				return rest, true
			}
		case <-time.After(time.Until(deadline)):
			return "", false
		}
	}
}

// stop ends the process: sig first, SIGKILL after wait.
func (c *child) stop(sig syscall.Signal, wait time.Duration) {
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.done:
	case <-time.After(wait):
		_ = c.cmd.Process.Kill()
		select {
		case <-c.done:
		case <-time.After(wait):
		}
	}
}

// serverEnv is the server processes' environment: the Go runtime's memory
// knobs removed (what is measured is the default a user gets), then
// -server-env.
func serverEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "GOGC" || k == "GOMEMLIMIT" || k == "GOMAXPROCS" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// statsOf asks every server for its runtime statistics (SIGUSR1: after a
// forced GC; SIGUSR2: without one) and waits for each file to change.
func statsOf(servers []*child, files []string, forceGC bool, timeout time.Duration) []*proc.ServerStats {
	out := make([]*proc.ServerStats, len(servers))
	prev := make([]int64, len(servers))
	sig := syscall.SIGUSR2
	if forceGC {
		sig = syscall.SIGUSR1
	}
	for i, s := range servers {
		prev[i] = -1
		if st := readStats(files[i]); st != nil {
			prev[i] = st.Seq
		}
		_ = s.cmd.Process.Signal(sig)
	}
	deadline := time.Now().Add(timeout)
	for i := range servers {
		for time.Now().Before(deadline) {
			if st := readStats(files[i]); st != nil && st.Seq != prev[i] {
				out[i] = st
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return out
}

func readStats(file string) *proc.ServerStats {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var s proc.ServerStats
	if json.Unmarshal(b, &s) != nil {
		return nil
	}
	return &s
}

func runImpl(c *config, impl, tmp string, idx int, kids *children) *result {
	r := &result{Impl: impl, Target: c.n, Servers: c.servers, Clients: c.clients}
	logf, err := os.Create(filepath.Join(tmp, impl+".log"))
	if err != nil {
		r.errf("%v", err)
		return r
	}
	defer logf.Close()
	var servers, clients []*child
	defer func() {
		// Clients first: their sockets are reset (SO_LINGER 0), so the
		// servers' side closes at once and no TIME_WAIT is left behind.
		for _, cl := range clients {
			if cl.stdin != nil {
				_ = cl.stdin.Close()
			}
		}
		for _, cl := range clients {
			cl.stop(syscall.SIGTERM, c.stepTimeout)
		}
		for _, s := range servers {
			s.stop(syscall.SIGTERM, 5*time.Second)
		}
		if r.Base.MemInfo != nil {
			waitSockets(r.Base.Sock.InUse, r.Base.Conntrack, c.stepTimeout)
		}
	}()

	life := (c.maxTime + time.Minute).String()
	port := c.port + idx // a fresh port per implementation: nothing left over shares it
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	files := make([]string, c.servers)
	env := serverEnv(c.serverEnv)
	for i := 0; i < c.servers; i++ {
		files[i] = filepath.Join(tmp, fmt.Sprintf("%s-%d.json", impl, i))
		args := []string{"-impl", impl, "-addr", addr, "-reuseport", "-loops", fmt.Sprint(c.serverLoops), "-stats", files[i], "-max-life", life}
		if c.serverCPUs != "" {
			args = append(args, "-cpus", c.serverCPUs)
		}
		s, err := start(kids, logf, filepath.Join(c.bin, "server"), args, env, false)
		if err != nil {
			r.errf("start server: %v", err)
			return r
		}
		servers = append(servers, s)
	}
	deadline := time.Now().Add(c.stepTimeout)
	for i, s := range servers {
		if _, ok := s.expect("READY ", deadline); !ok {
			r.errf("server %d did not start (see its log: %s)", i, lastLines(logf.Name(), 3))
			return r
		}
	}
	time.Sleep(500 * time.Millisecond) // let the fresh processes settle before the baseline
	base := statsOf(servers, files, false, c.stepTimeout)
	r.Base = take(servers, nil)

	perClient := (c.n + c.clients - 1) / c.clients
	rate := 0.0
	if c.rate > 0 {
		rate = c.rate / float64(c.clients)
	}
	t0 := time.Now()
	left := c.n
	for j := 0; j < c.clients && left > 0; j++ {
		n := min(perClient, left)
		left -= n
		src := c.srcBase
		for k := 0; k < j*c.srcPer; k++ {
			src = src.Next()
		}
		args := []string{"-scenario", "hold", "-addr", addr, "-n", fmt.Sprint(n), "-size", "64", "-rate", fmt.Sprint(rate),
			"-src", src.String(), "-src-count", fmt.Sprint(c.srcPer), "-loops", fmt.Sprint(c.clientLoops),
			"-inflight", fmt.Sprint(c.inflight), "-sample", fmt.Sprint(c.sample), "-quiet",
			"-ramp-timeout", c.rampTimeout.String(), "-max-life", life, "-label", fmt.Sprintf("%s-%d", impl, j)}
		if c.clientCPUs != "" {
			args = append(args, "-cpus", c.clientCPUs)
		}
		cl, err := start(kids, logf, filepath.Join(c.bin, "wsload"), args, os.Environ(), true)
		if err != nil {
			r.errf("start client %d: %v", j, err)
			return r
		}
		clients = append(clients, cl)
	}
	deadline = time.Now().Add(c.rampTimeout + 10*time.Second)
	for j, cl := range clients {
		rest, ok := cl.expect("OPENED ", deadline)
		if !ok {
			r.errf("client %d did not finish its ramp (%s)", j, lastLines(logf.Name(), 3))
			continue
		}
		var opened, failed int64
		fmt.Sscan(rest, &opened, &failed)
		r.Connected += opened
		r.Failed += failed
	}
	r.RampSecs = time.Since(t0).Seconds()
	r.RampRate = float64(r.Connected) / r.RampSecs
	fmt.Printf("million: [%s] %d connected, %d failed in %.1f s; holding %v\n", impl, r.Connected, r.Failed, r.RampSecs, c.hold)
	time.Sleep(c.hold)

	r.Held = take(servers, clients)
	if r.Connected > 0 {
		n := float64(r.Connected)
		r.ServerRSS = float64(r.Held.ServerRSS-r.Base.ServerRSS) / n
		r.ClientRSS = float64(r.Held.ClientRSS) / n
		r.KernelSlab = float64(r.Held.SlabActive-r.Base.SlabActive) / n
		r.KernelSlabMem = float64(r.Held.MemInfo["Slab"]-r.Base.MemInfo["Slab"]) / n
		r.KernelTCPMem = float64((r.Held.Sock.MemPages-r.Base.Sock.MemPages)*int64(os.Getpagesize())) / n
		other := func(s snapshot) int64 { return s.MemInfo["KernelStack"] + s.MemInfo["PageTables"] }
		r.KernelOther = float64(other(r.Held)-other(r.Base)) / n
		if r.Base.Conntrack >= 0 {
			r.Conntrack = r.Held.Conntrack - r.Base.Conntrack
		}
		for _, name := range socketCaches {
			r.KernelSockets += float64(r.Held.Slab[name].ActiveBytes()-r.Base.Slab[name].ActiveBytes()) / n
		}
		for name, h := range r.Held.Slab {
			b := r.Base.Slab[name]
			if d := h.ActiveBytes() - b.ActiveBytes(); d > 0 {
				r.TopCaches = append(r.TopCaches, cache{Name: name, PerConn: float64(d) / n, ObjSize: h.ObjSize, ObjDelta: h.Active - b.Active})
			}
		}
		slices.SortFunc(r.TopCaches, func(a, b cache) int { return int(b.PerConn - a.PerConn) })
		r.TopCaches = r.TopCaches[:min(8, len(r.TopCaches))]
		// Only now, after the reading, a forced GC for the live heap.
		gc := statsOf(servers, files, true, c.stepTimeout)
		var live, alloc int64
		complete := true
		for i := range servers {
			if base[i] == nil || gc[i] == nil {
				complete = false
				continue
			}
			live += int64(gc[i].HeapAlloc+gc[i].StackInuse) - int64(base[i].HeapAlloc+base[i].StackInuse)
			alloc += int64(gc[i].TotalAlloc - base[i].TotalAlloc)
		}
		if complete {
			r.ServerLive = float64(live) / n
			r.ServerAlloc = float64(alloc) / n
		} else {
			r.errf("some servers did not report their heap statistics")
		}
	}

	// Echo-check a sample on every client.
	for _, cl := range clients {
		_, _ = io.WriteString(cl.stdin, "check\n")
	}
	deadline = time.Now().Add(c.stepTimeout)
	for j, cl := range clients {
		rest, ok := cl.expect("CHECKED ", deadline)
		if !ok {
			r.errf("client %d did not answer the echo check", j)
			continue
		}
		var sent, got int64
		fmt.Sscan(rest, &sent, &got)
		r.SampleSent += sent
		r.SampleOK += got
	}
	if r.SampleOK < r.SampleSent {
		r.errf("%d of %d sampled connections did not echo", r.SampleSent-r.SampleOK, r.SampleSent)
	}
	if r.Failed > 0 {
		r.errf("%d connections failed (%s)", r.Failed, lastLines(logf.Name(), 2))
	}
	for _, cl := range clients {
		_, _ = io.WriteString(cl.stdin, "quit\n")
	}
	deadline = time.Now().Add(c.stepTimeout)
	for _, cl := range clients {
		if rest, ok := cl.expect("RESULT ", deadline); ok {
			var lr load.Result
			if json.Unmarshal([]byte(rest), &lr) == nil {
				r.ClientsResults = append(r.ClientsResults, &lr)
			}
		}
	}
	return r
}

// waitSockets waits until the kernel's count of TCP sockets in use, and of
// conntrack entries (a reset connection's entry lingers for
// nf_conntrack_tcp_timeout_close, 10 s by default), are back near their
// baselines, so that the next implementation's kernel figures are not
// lowered by the previous one's objects being freed during its run.
func waitSockets(sockets, conntrack int64, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		s, err := proc.ReadSockStat()
		ct := proc.ConntrackCount()
		if err != nil || (s.InUse <= sockets+1000 && (conntrack < 0 || ct <= conntrack+1000)) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func lastLines(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}

func report(c *config, pre []string, rs []*result) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	w("# Many connections on one machine\n\n")
	w("`million -n %d -servers %d -clients %d -rate %.0f -hold %v -server-loops %d -server-cpus %q -client-cpus %q -server-env %q`, %s.\n\n",
		c.n, c.servers, c.clients, c.rate, c.hold, c.serverLoops, c.serverCPUs, c.clientCPUs, strings.Join(c.serverEnv, " "), time.Now().UTC().Format("2006-01-02 15:04 MST"))
	for _, l := range pre {
		w("- %s\n", l)
	}
	w("\nPer connection, in bytes: server RSS = growth of all server processes' VmRSS (no GC forced before the reading) ÷ connections; live heap = growth of live heap + stacks after a forced GC taken after that reading; kernel socket caches = growth of the kernel's allocated objects in the slab caches a connection pair uses (/proc/slabinfo: %s) ÷ connections, i.e. per client+server pair on this one machine; all slab caches = the same over every cache (includes whatever other processes allocate meanwhile); meminfo Slab = growth of /proc/meminfo's Slab (whole pages); TCP buffers = growth of sockstat's TCP `mem` (machine-wide); client RSS = wsload's VmRSS ÷ connections.\n\n", strings.Join(socketCaches, ", "))
	w("| impl | connected | failed | ramp s | conn/s | server RSS B/conn | live heap B/conn | allocated B/conn | kernel socket caches B/pair | all slab caches B/pair | meminfo Slab B/pair | TCP buffers B/pair | stacks+page tables B/pair | conntrack entries | client RSS B/conn | sample ok | problems |\n")
	w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rs {
		w("| %s | %d | %d | %.1f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %d | %.0f | %d/%d | %s |\n",
			r.Impl, r.Connected, r.Failed, r.RampSecs, r.RampRate, r.ServerRSS, r.ServerLive, r.ServerAlloc, r.KernelSockets, r.KernelSlab, r.KernelSlabMem,
			r.KernelTCPMem, r.KernelOther, r.Conntrack, r.ClientRSS, r.SampleOK, r.SampleSent, strings.ReplaceAll(strings.Join(r.Errors, "; "), "|", "/"))
	}
	for _, r := range rs {
		if len(r.TopCaches) == 0 {
			continue
		}
		w("\nSlab caches that grew most during the %s run, bytes and objects per connection pair: ", r.Impl)
		var parts []string
		for _, k := range r.TopCaches {
			parts = append(parts, fmt.Sprintf("%s %.0f B (%.2f × %d B)", k.Name, k.PerConn, float64(k.ObjDelta)/float64(r.Connected), k.ObjSize))
		}
		w("%s.\n", strings.Join(parts, ", "))
	}
	return b.String()
}
