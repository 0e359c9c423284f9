// Command handoff measures a deploy without disconnecting
// (engine.Server.HandOff) against a plain restart in which the clients
// reconnect.
//
// The server is an echo server run as a process of its own (this binary
// with -role server). -n connections from loopback source addresses
// 127.0.0.2 upward each send a numbered -size message every -interval
// (spread evenly: a steady, chat-like rate of n/interval messages a
// second) and check each echo. After -warm, the server is deployed:
//
//	handoff  SIGHUP: the server starts its successor and hands it the
//	         listener and every connection (HandOff, TakeOver, Restore)
//	restart  a new server process is started on the same port
//	         (SO_REUSEPORT), then the old one gets SIGTERM: it sends every
//	         client 1001 and exits, and the clients reconnect with the
//	         chat page's backoff (0.5 s doubling, jittered) and go on
//
// After -after more, sending stops and the echoes still due are awaited.
// Reported per run:
//
//	dropped    connections the clients saw end (each reconnect counts one)
//	lost       messages sent on a socket and never echoed
//	dup        messages echoed more than once
//	unsent     messages a client could not send: it was disconnected
//	max gap    the longest time any connection went without an echo,
//	           over the gaps that end after the deploy began (the one
//	           across its start included): the interval plus what the
//	           deploy delayed
//	max lat    the longest any echo took, from its send
//	late       the longest from a message's scheduled send time to its
//	           echo, for the messages due from the deploy on: what the
//	           deploy delayed, the client's own lateness in sending
//	           included (as wrk2 corrects for coordinated omission)
//	late_before the same for the messages due before the deploy: what
//	           this machine's steady state costs without a deploy
//	deploy     SIGHUP to the successor's "restored" / SIGTERM to the last
//	           client reconnected
//	pause      handoff: the old server's own count, first connection taken
//	           off its loop to the commit acknowledged
//	CPU old    the old server's CPU from the signal to its exit
//	CPU new    the new server's CPU from its start to the end of the deploy
//	per conn   (CPU old + CPU new) / n
//
// The restart baseline is this command's own (another engineer's
// reconnect-storm command was not there yet when it was written).
//
//	cd bench && go run ./cmd/handoff -n 10000,19000 -modes handoff,restart
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsloop/wsloop/bench/internal/proc"
)

func main() {
	role := flag.String("role", "", "internal: \"server\" runs the bench server")
	var sf serverFlags
	flag.StringVar(&sf.addr, "addr", "127.0.0.1:0", "server: listen address")
	flag.StringVar(&sf.dir, "handoff-dir", "", "server: handoff directory")
	flag.StringVar(&sf.takeover, "takeover", "", "server: take over from the process handing off through this directory")
	flag.IntVar(&sf.loops, "loops", 0, "server: event loops (default one per CPU)")
	flag.BoolVar(&sf.reusePort, "reuseport", false, "server: SO_REUSEPORT on the listener")
	ns := flag.String("n", "10000,19000", "connections, comma-separated sizes")
	modes := flag.String("modes", "handoff,restart", "deploy modes to compare: handoff, restart")
	interval := flag.Duration("interval", 2*time.Second, "each connection sends one message this often")
	size := flag.Int("size", 64, "message size in bytes (8 to 125)")
	warm := flag.Duration("warm", 5*time.Second, "traffic before the deploy")
	after := flag.Duration("after", 10*time.Second, "traffic after the deploy")
	reps := flag.Int("reps", 1, "repetitions of each size and mode")
	src := flag.String("src", "127.0.0.2", "first client source address")
	srcs := flag.Int("srcs", 16, "client source addresses")
	out := flag.String("json", "", "write the results as JSON to this file")
	flag.Parse()

	if *role == "server" {
		if err := runServer(sf); err != nil {
			fmt.Fprintln(os.Stderr, "server:", err)
			os.Exit(1)
		}
		return
	}
	if *size < 8 || *size > 125 {
		fatal(errors.New("-size must be 8 to 125"))
	}
	proc.RaiseNoFile()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fatal(fmt.Errorf("PR_SET_CHILD_SUBREAPER (needed to measure the successor): %w", err))
	}
	first, err := netip.ParseAddr(*src)
	if err != nil {
		fatal(err)
	}
	var sources []netip.Addr
	for a, i := first, 0; i < *srcs; a, i = a.Next(), i+1 {
		sources = append(sources, a)
	}
	var results []*result
	for _, s := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fatal(err)
		}
		for rep := 0; rep < *reps; rep++ {
			for _, mode := range strings.Split(*modes, ",") {
				r, err := run(runConfig{n: n, mode: strings.TrimSpace(mode), interval: *interval, size: *size,
					warm: *warm, after: *after, sources: sources, loops: sf.loops})
				if err != nil {
					fatal(fmt.Errorf("%s n=%d: %w", mode, n, err))
				}
				results = append(results, r)
				r.print(os.Stdout)
			}
		}
	}
	fmt.Println()
	printTable(os.Stdout, results)
	if *out != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			fatal(err)
		}
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "handoff:", err)
	os.Exit(1)
}

type runConfig struct {
	n        int
	mode     string
	interval time.Duration
	size     int
	warm     time.Duration
	after    time.Duration
	sources  []netip.Addr
	loops    int
}

type result struct {
	Mode          string  `json:"mode"`
	N             int     `json:"n"`
	IntervalMs    float64 `json:"interval_ms"`
	Sent          int64   `json:"sent"`
	Dropped       int64   `json:"dropped"`
	Lost          int64   `json:"lost"`
	Dup           int64   `json:"dup"`
	Unsent        int64   `json:"unsent"`
	MaxGapMs      float64 `json:"max_gap_ms"`
	MaxLatMs      float64 `json:"max_latency_ms"`
	LateMs        float64 `json:"late_ms"`
	LateBeforeMs  float64 `json:"late_before_ms"`
	DeployMs      float64 `json:"deploy_ms"`
	PauseMs       float64 `json:"pause_ms,omitempty"`
	RestoreMs     float64 `json:"restore_ms,omitempty"`
	CPUOldMs      float64 `json:"cpu_old_ms"`
	CPUNewMs      float64 `json:"cpu_new_ms"`
	CPUPerConnUs  float64 `json:"cpu_per_conn_us"`
	Moved         int     `json:"moved,omitempty"`
	ReconnectedMs float64 `json:"reconnected_ms,omitempty"`
}

func (r *result) print(w io.Writer) {
	fmt.Fprintf(w, "%-7s n=%-6d sent=%d dropped=%d lost=%d dup=%d unsent=%d max_gap=%.0fms max_lat=%.0fms late=%.0fms late_before=%.0fms deploy=%.0fms pause=%.0fms restore=%.0fms cpu_old=%.0fms cpu_new=%.0fms per_conn=%.1fµs\n",
		r.Mode, r.N, r.Sent, r.Dropped, r.Lost, r.Dup, r.Unsent, r.MaxGapMs, r.MaxLatMs, r.LateMs, r.LateBeforeMs, r.DeployMs, r.PauseMs, r.RestoreMs, r.CPUOldMs, r.CPUNewMs, r.CPUPerConnUs)
}

func printTable(w io.Writer, rs []*result) {
	fmt.Fprintln(w, "| mode | conns | dropped | lost | dup | unsent | longest gap | longest echo | late (before) | deploy | CPU old | CPU new | CPU per conn |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %.0f ms | %.0f ms | %.0f ms (%.0f ms) | %.0f ms | %.0f ms | %.0f ms | %.1f µs |\n",
			r.Mode, r.N, r.Dropped, r.Lost, r.Dup, r.Unsent, r.MaxGapMs, r.MaxLatMs, r.LateMs, r.LateBeforeMs, r.DeployMs, r.CPUOldMs, r.CPUNewMs, r.CPUPerConnUs)
	}
}

// server is a bench server process and the lines it printed (its
// successors print to the same pipe).
type server struct {
	cmd   *exec.Cmd
	lines chan string
	early []string // lines read while awaiting others
}

func startServer(args ...string) (*server, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, append([]string{"-role", "server"}, args...)...)
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = pw, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pw.Close()
	s := &server{cmd: cmd, lines: make(chan string, 64)}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		pr.Close()
	}()
	return s, nil
}

// await returns the first line starting with prefix that it has not
// returned yet (the old and the new server print in either order).
func (s *server) await(prefix string, d time.Duration) (string, error) {
	for i, l := range s.early {
		if strings.HasPrefix(l, prefix) {
			s.early = append(s.early[:i], s.early[i+1:]...)
			return l, nil
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case l := <-s.lines:
			if strings.HasPrefix(l, prefix) {
				return l, nil
			}
			s.early = append(s.early, l)
		case <-t.C:
			return "", fmt.Errorf("no %q from the server within %v", prefix, d)
		}
	}
}

func field(line, key string) float64 {
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok && k == key {
			x, _ := strconv.ParseFloat(v, 64)
			return x
		}
	}
	return 0
}

// stopPid ends a server process this one adopted as subreaper.
func stopPid(pid int) {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, 0, nil)
}

func run(rc runConfig) (*result, error) {
	dir, err := os.MkdirTemp("", "handoff-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	hdir := filepath.Join(dir, "ho")
	args := []string{"-handoff-dir", hdir, "-loops", strconv.Itoa(rc.loops)}
	if rc.mode == "restart" {
		args = append(args, "-reuseport")
	}
	old, err := startServer(args...)
	if err != nil {
		return nil, err
	}
	line, err := old.await("ready ", 30*time.Second)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(line)
	addr, err := netip.ParseAddrPort(f[1])
	if err != nil {
		return nil, err
	}
	oldPid := old.cmd.Process.Pid

	cl := newClients(rc, addr)
	if err := cl.connectAll(); err != nil {
		stopPid(oldPid)
		return nil, err
	}
	cl.startSending()
	time.Sleep(rc.warm) // traffic before the deploy, at its steady rate
	cl.markWindow()

	r := &result{Mode: rc.mode, N: rc.n, IntervalMs: ms(rc.interval)}
	cpuBefore, _ := proc.CPU(oldPid)
	start := time.Now()
	var newPid int
	switch rc.mode {
	case "handoff":
		if err := old.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			return nil, err
		}
		took, err := old.await("tookover ", 2*time.Minute)
		if err != nil {
			return nil, err
		}
		r.DeployMs = ms(time.Since(start))
		newPid, _ = strconv.Atoi(strings.Fields(took)[1])
		r.RestoreMs = field(took, "restore_ms")
		cpuNew, _ := proc.CPU(newPid)
		r.CPUNewMs = ms(cpuNew)
		handed, err := old.await("handedoff ", time.Minute)
		if err != nil {
			return nil, err
		}
		r.PauseMs = field(handed, "pause_ms")
		r.Moved = int(field(handed, "moved"))
	case "restart":
		nw, err := startServer(append(args, "-addr", addr.String())...)
		if err != nil {
			return nil, err
		}
		line, err := nw.await("ready ", 30*time.Second)
		if err != nil {
			return nil, err
		}
		newPid, _ = strconv.Atoi(strings.Fields(line)[2])
		cpuNewStart, _ := proc.CPU(newPid)
		start = time.Now()
		if err := old.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return nil, err
		}
		if err := cl.waitAllConnected(2 * time.Minute); err != nil {
			return nil, err
		}
		r.DeployMs = ms(time.Since(start))
		cpuNew, _ := proc.CPU(newPid)
		r.CPUNewMs = ms(cpuNew - cpuNewStart)
	default:
		return nil, fmt.Errorf("unknown mode %q", rc.mode)
	}
	_ = old.cmd.Wait()
	if u := old.cmd.ProcessState; u != nil {
		r.CPUOldMs = ms(u.UserTime() + u.SystemTime() - cpuBefore)
	}
	r.CPUPerConnUs = (r.CPUOldMs + r.CPUNewMs) * 1000 / float64(rc.n)
	time.Sleep(rc.after) // traffic after the deploy, at its steady rate
	cl.stopSending()
	time.Sleep(2 * time.Second) // the echoes still on their way
	cl.report(r)
	cl.close()
	stopPid(newPid)
	return r, nil
}

// --- clients ----------------------------------------------------------------

// clients holds every connection of a run: a goroutine per connection
// reads (this is the load generator, not the server under test), and a
// few senders write on a steady schedule.
type clients struct {
	rc     runConfig
	target netip.AddrPort
	conns  []*cconn
	t0     time.Time
	window atomic.Int64 // ns since t0 from which gaps count
	stop   chan struct{}
	sendWG sync.WaitGroup
}

type cconn struct {
	id  int
	cl  *clients
	src netip.Addr

	mu       sync.Mutex
	nc       net.Conn
	down     bool
	attempt  int
	sent     []int64 // ns since t0 per sequence number, 0 if never sent
	sched    []int64 // ns since t0 each sequence number was due
	got      []uint8 // echoes per sequence number
	next     int     // next sequence number
	lastRecv int64
	maxGap   int64
	maxLat   int64
	late     int64 // longest scheduled-send-to-echo, messages due from the deploy on
	lateBase int64 // the same, messages due before it
	dropped  int64
	unsent   int64
	wbuf     []byte
}

func newClients(rc runConfig, target netip.AddrPort) *clients {
	cl := &clients{rc: rc, target: target, t0: time.Now(), stop: make(chan struct{})}
	// Nothing counts before markWindow: the wait for each connection's
	// first echo after connecting is not a gap the deploy caused.
	cl.window.Store(math.MaxInt64)
	slots := int((rc.warm+rc.after+time.Minute)/rc.interval) + 16
	for i := 0; i < rc.n; i++ {
		cl.conns = append(cl.conns, &cconn{id: i, cl: cl, src: rc.sources[i%len(rc.sources)],
			sent: make([]int64, slots), sched: make([]int64, slots), got: make([]uint8, slots), wbuf: make([]byte, 0, 14+rc.size)})
	}
	return cl
}

func (cl *clients) now() int64 { return int64(time.Since(cl.t0)) }

func (cl *clients) connectAll() error {
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for _, c := range cl.conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := c.connect(); err != nil {
				firstErr.CompareAndSwap(nil, &err)
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return *e
	}
	return nil
}

const wsRequest = "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// connect opens the connection and starts its reader.
func (c *cconn) connect() error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: c.src.AsSlice()}, Timeout: 10 * time.Second}
	nc, err := d.Dial("tcp", c.cl.target.String())
	if err != nil {
		return err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // no TIME_WAIT left on the shared source ports
	}
	if _, err := fmt.Fprintf(nc, wsRequest, c.cl.target); err != nil {
		nc.Close()
		return err
	}
	br := bufio.NewReaderSize(nc, 512)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 101 ") {
		nc.Close()
		return fmt.Errorf("handshake: %q %v", status, err)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			nc.Close()
			return err
		}
		if l == "\r\n" {
			break
		}
	}
	c.mu.Lock()
	c.nc, c.down, c.attempt = nc, false, 0
	if c.lastRecv == 0 {
		c.lastRecv = c.cl.now() // a reconnect does not end a gap: the next echo does
	}
	c.mu.Unlock()
	go c.read(nc, br)
	return nil
}

// read takes echoes until the connection ends, then reconnects.
func (c *cconn) read(nc net.Conn, br *bufio.Reader) {
	var hdr [2]byte
	payload := make([]byte, 125)
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			break
		}
		n := int(hdr[1] & 0x7f)
		if hdr[1]&0x80 != 0 || n > 125 {
			break // the bench server sends small unmasked frames only
		}
		if _, err := io.ReadFull(br, payload[:n]); err != nil {
			break
		}
		switch hdr[0] & 0x0f {
		case 0x2:
			c.echoed(payload[:n])
		case 0x9:
			c.write(0xA, payload[:n])
		case 0x8:
			c.write(0x8, payload[:min(n, 2)])
		}
	}
	nc.Close()
	c.mu.Lock()
	if c.nc == nc {
		c.nc, c.down = nil, true
		c.dropped++
		c.attempt++
	}
	attempt := c.attempt
	c.mu.Unlock()
	c.reconnect(attempt)
}

// reconnect tries again after the chat page's backoff: 0.5 s doubling, up
// to 10 s, jittered.
func (c *cconn) reconnect(attempt int) {
	select {
	case <-c.cl.stop:
		return
	default:
	}
	delay := time.Duration(min(10000, 500<<min(max(attempt-1, 0), 5))) * time.Millisecond
	delay = time.Duration(float64(delay) * (0.5 + rand.Float64()/2))
	time.AfterFunc(delay, func() {
		if c.connect() != nil {
			c.mu.Lock()
			c.attempt++
			attempt := c.attempt
			c.mu.Unlock()
			c.reconnect(attempt)
		}
	})
}

func (c *cconn) echoed(p []byte) {
	if len(p) < 8 {
		return
	}
	seq := binary.BigEndian.Uint64(p)
	now := c.cl.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq >= uint64(len(c.got)) {
		return
	}
	c.got[seq]++
	if c.got[seq] == 1 && c.sent[seq] != 0 {
		c.maxLat = max(c.maxLat, now-c.sent[seq])
		if c.sched[seq] >= c.cl.window.Load() {
			c.late = max(c.late, now-c.sched[seq])
		} else {
			c.lateBase = max(c.lateBase, now-c.sched[seq])
		}
	}
	if now >= c.cl.window.Load() { // a gap that ends once the deploy began, the one across its start included
		c.maxGap = max(c.maxGap, now-c.lastRecv)
	}
	c.lastRecv = now
}

// write sends one masked frame; the caller must not hold mu.
func (c *cconn) write(op byte, p []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeLocked(op, p)
}

func (c *cconn) writeLocked(op byte, p []byte) bool {
	if c.nc == nil {
		return false
	}
	key := rand.Uint32()
	b := append(c.wbuf[:0], 0x80|op, 0x80|byte(len(p)), byte(key>>24), byte(key>>16), byte(key>>8), byte(key))
	off := len(b)
	b = append(b, p...)
	for i := range p {
		b[off+i] ^= b[2+i%4]
	}
	if _, err := c.nc.Write(b); err != nil {
		return false
	}
	return true
}

// send sends the next numbered message, due at sched (ns since t0), or
// counts it unsent.
func (c *cconn) send(sched int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seq := c.next
	if seq >= len(c.sent) {
		return
	}
	c.next++
	var p [125]byte
	binary.BigEndian.PutUint64(p[:], uint64(seq))
	c.sent[seq] = c.cl.now()
	c.sched[seq] = sched
	if !c.writeLocked(0x2, p[:c.cl.rc.size]) {
		c.sent[seq] = 0
		c.unsent++
	}
}

// startSending starts the senders: every connection sends once per
// interval, the connections spread evenly over it.
func (cl *clients) startSending() {
	const senders = 4
	const tick = 5 * time.Millisecond
	buckets := max(1, int(cl.rc.interval/tick))
	for s := 0; s < senders; s++ {
		cl.sendWG.Add(1)
		go func() {
			defer cl.sendWG.Done()
			t := time.NewTicker(tick)
			defer t.Stop()
			start := time.Now()
			done := 0 // buckets sent so far: a tick the ticker dropped under load is caught up, not skipped
			for {
				select {
				case <-cl.stop:
					return
				case <-t.C:
				}
				due := int(time.Since(start) / tick)
				for ; done < due; done++ {
					b := done % buckets
					sched := int64(start.Sub(cl.t0)) + int64(done)*int64(tick)
					for i := b*senders + s; i < len(cl.conns); i += buckets * senders {
						cl.conns[i].send(sched)
					}
				}
			}
		}()
	}
}

func (cl *clients) markWindow() { cl.window.Store(cl.now()) }

func (cl *clients) stopSending() {
	close(cl.stop)
	cl.sendWG.Wait()
}

// waitAllConnected waits until every connection is up again.
func (cl *clients) waitAllConnected(d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		down := 0
		for _, c := range cl.conns {
			c.mu.Lock()
			if c.nc == nil || c.dropped == 0 {
				down++
			}
			c.mu.Unlock()
		}
		if down == 0 {
			return nil
		}
		time.Sleep(10 * time.Millisecond) // polling the client table
	}
	return errors.New("clients did not all reconnect")
}

func (cl *clients) report(r *result) {
	var gaps []int64
	for _, c := range cl.conns {
		c.mu.Lock()
		for seq := 0; seq < c.next; seq++ {
			if c.sent[seq] == 0 {
				continue
			}
			r.Sent++
			switch {
			case c.got[seq] == 0:
				r.Lost++
			case c.got[seq] > 1:
				r.Dup += int64(c.got[seq] - 1)
			}
		}
		r.Dropped += c.dropped
		r.Unsent += c.unsent
		gaps = append(gaps, c.maxGap)
		r.MaxLatMs = max(r.MaxLatMs, ms(time.Duration(c.maxLat)))
		r.LateMs = max(r.LateMs, ms(time.Duration(c.late)))
		r.LateBeforeMs = max(r.LateBeforeMs, ms(time.Duration(c.lateBase)))
		c.mu.Unlock()
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	if len(gaps) > 0 {
		r.MaxGapMs = ms(time.Duration(gaps[len(gaps)-1]))
	}
}

func (cl *clients) close() {
	for _, c := range cl.conns {
		c.mu.Lock()
		if c.nc != nil {
			c.nc.Close()
		}
		c.mu.Unlock()
	}
}
