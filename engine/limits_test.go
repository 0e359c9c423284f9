package engine_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsloop/wsloop/engine"
)

// fdChildEnv makes TestHelperFDLimitServer run as the server process of
// the descriptor tests: "LIMIT" lowers RLIMIT_NOFILE to LIMIT and serves with
// the default MaxConns; "LIMIT:MAXCONNS" also sets MaxConns (above the
// limit, to reach accept's EMFILE).
const fdChildEnv = "WSLOOP_TEST_FD_LIMIT_CHILD"

// TestHelperFDLimitServer is not a test: the descriptor tests run the test
// binary again with only this function, as a server process whose
// descriptor limit they may lower without touching the test process. It
// serves an echo server, prints its address, answers each "STATS" line on
// stdin with its counters, and serves until stdin is closed.
func TestHelperFDLimitServer(t *testing.T) {
	v := os.Getenv(fdChildEnv)
	if v == "" {
		t.Skip("helper process for the descriptor tests")
	}
	lim, maxc, _ := strings.Cut(v, ":")
	limit, err := strconv.ParseUint(lim, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	maxConns, _ := strconv.Atoi(maxc)
	if err := setFDLimit(limit); err != nil { // platform_*_test.go
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := engine.New(newRecorder(), engine.Options{Addr: "127.0.0.1:0", EventLoops: 2, Logger: logger, MaxConns: maxConns})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Wait() }()
	os.Stdout.WriteString("ADDR " + srv.Addr().String() + "\n")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		st := srv.Stats()
		fmt.Printf("STATS open=%d conns=%d accept_errors=%d refused=%d\n",
			st.Open, st.Conns, st.AcceptErrors, st.Rejected["503 connection limit"])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not stop")
	}
}

// lockedBuffer collects a child's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fdChild is a server process started by startFDChild.
type fdChild struct {
	addr   string
	stdin  io.WriteCloser
	lines  chan string // STATS lines
	stderr *lockedBuffer
	exited chan error
}

// startFDChild runs TestHelperFDLimitServer in a child process with env
// value v, and returns once it listens.
func startFDChild(t *testing.T, v string) *fdChild {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a server process")
	}
	if runtime.GOOS == "windows" {
		t.Skip("Windows has no descriptor limit (RLIMIT_NOFILE) to lower")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperFDLimitServer$")
	cmd.Env = append(os.Environ(), fdChildEnv+"="+v)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	ch := &fdChild{stdin: stdin, lines: make(chan string, 16), stderr: &lockedBuffer{}, exited: make(chan error, 1)}
	cmd.Stderr = ch.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { ch.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-ch.exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("server stderr:\n%s", ch.stderr.String())
		}
	})
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
				addrc <- a
			} else if st, ok := strings.CutPrefix(sc.Text(), "STATS "); ok {
				ch.lines <- st
			}
		}
		close(addrc)
		close(ch.lines)
	}()
	select {
	case a, ok := <-addrc:
		if !ok {
			t.Fatalf("server process ended without an address; stderr:\n%s", ch.stderr.String())
		}
		ch.addr = a
	case <-time.After(20 * time.Second):
		t.Fatal("server process did not start")
	}
	return ch
}

// stats asks the child for its counters.
func (ch *fdChild) stats(t *testing.T) map[string]int {
	t.Helper()
	if _, err := io.WriteString(ch.stdin, "STATS\n"); err != nil {
		t.Fatalf("server process gone: %v", err)
	}
	select {
	case line, ok := <-ch.lines:
		if !ok {
			t.Fatal("server process gone")
		}
		m := map[string]int{}
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			m[k], _ = strconv.Atoi(v)
		}
		return m
	case <-time.After(readTimeout):
		t.Fatal("server process does not answer")
		return nil
	}
}

// burstOutcome is what one client of a burst got.
type burstOutcome struct {
	c      *wsClient // upgraded, or nil
	status int       // 101, 503, or 0 when the connection ended without a response
}

// burst opens n connections to addr from several goroutines at once, each
// sending an upgrade request, and reports what each got; wait bounds each
// client's wait for its response (a client the server never accepted gets
// no response within it).
func burst(t *testing.T, addr string, n int, wait time.Duration) []burstOutcome {
	t.Helper()
	out := make([]burstOutcome, n)
	var wg sync.WaitGroup
	const workers = 8
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				conn, err := net.DialTimeout("tcp", addr, readTimeout)
				if err != nil {
					continue // the listen queue is full: the kernel refused
				}
				out[i].c = newClient(conn)
				if _, err := io.WriteString(conn, upgradeRequest(addr, "/")); err != nil {
					conn.Close()
					out[i].c = nil
				}
			}
		}(w)
	}
	wg.Wait()
	deadline := time.Now().Add(wait)
	for i := range out {
		c := out[i].c
		if c == nil {
			continue
		}
		wg.Add(1)
		go func(o *burstOutcome) {
			defer wg.Done()
			_ = c.conn.SetReadDeadline(deadline)
			resp, err := http.ReadResponse(c.br, nil)
			switch {
			case err != nil: // no response (yet)
			case resp.StatusCode == http.StatusSwitchingProtocols:
				c.resp = resp
				o.status = resp.StatusCode
			default:
				o.status = resp.StatusCode
				o.c = nil
				c.conn.Close()
			}
		}(&out[i])
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, o := range out {
			if o.c != nil {
				o.c.conn.Close()
			}
		}
	})
	return out
}

// Running out of descriptors never takes the server down. A server process
// with RLIMIT_NOFILE at 256 (so MaxConns 192) gets three times its limit in
// connections from eight goroutines at once: it upgrades exactly MaxConns,
// refuses the rest (503, or a plain close when the request came too late
// to be answered), keeps serving what it accepted, and serves fresh
// connections once some close.
func TestFDLimitBurst(t *testing.T) {
	const limit = 256
	const maxConns = limit - engine.DefaultFDReserve
	ch := startFDChild(t, strconv.Itoa(limit))

	res := burst(t, ch.addr, 3*limit, readTimeout)
	var open []*wsClient
	refused, plain := 0, 0
	for _, o := range res {
		switch o.status {
		case http.StatusSwitchingProtocols:
			open = append(open, o.c)
		case http.StatusServiceUnavailable:
			refused++
		case 0:
			plain++
			if o.c != nil {
				o.c.conn.Close()
			}
		default:
			t.Errorf("unexpected answer %d", o.status)
		}
	}
	t.Logf("%d upgraded, %d refused with 503, %d closed without a response", len(open), refused, plain)
	if len(open) != maxConns || refused+plain != 3*limit-maxConns || refused == 0 {
		t.Fatalf("%d upgraded, %d refused, %d closed: want %d upgraded and the rest refused", len(open), refused, plain, maxConns)
	}
	for i, c := range open {
		c.roundTrip(t, "still here "+strconv.Itoa(i))
	}
	// Closing some makes room for as many new ones, and no more.
	const freed = 20
	for _, c := range open[:freed] {
		c.closeCleanly(t)
		c.conn.Close()
	}
	open = open[freed:]
	for i := 0; i < freed; i++ {
		var c *wsClient
		var err error
		// A descriptor is released when the server's loop has processed
		// the close: until then the new connection may still be refused.
		for try := 0; try < 50; try++ {
			if c, err = dialWSErr(ch.addr, "/again"); err == nil || !strings.Contains(err.Error(), "503") {
				break
			}
			ch.stats(t) // a round trip to the server process before trying again
		}
		if err != nil {
			t.Fatalf("reconnect %d after closing %d: %v", i, freed, err)
		}
		open = append(open, c)
		c.roundTrip(t, "new")
	}
	if c, err := dialWSErr(ch.addr, "/one-too-many"); err == nil {
		c.conn.Close()
		t.Error("a connection past the cap was accepted")
	} else if !strings.Contains(err.Error(), "503") {
		t.Errorf("past the cap: %v, want 503", err)
	}
	for _, c := range open {
		c.roundTrip(t, "end")
	}
	if st := ch.stats(t); st["open"] != maxConns {
		t.Errorf("server process reports %v, want %d open", st, maxConns)
	}
	// The refusals are logged, but rate-limited: a burst makes a line, not hundreds.
	if lines := strings.Count(ch.stderr.String(), "connection limit reached"); lines == 0 || lines > 10 {
		t.Errorf("%d log lines about the limit for %d refusals", lines, refused+plain)
	}
}

// With MaxConns above what the descriptor limit allows, accept itself fails
// with EMFILE. The server pauses accepting instead of stopping: connections
// wait in the listen queue, those it has keep working, and it serves the
// waiting ones as connections close.
func TestFDLimitEMFILE(t *testing.T) {
	const limit = 128
	ch := startFDChild(t, strconv.Itoa(limit)+":100000")

	res := burst(t, ch.addr, 3*limit, 2*time.Second)
	var open, waiting []*wsClient
	for _, o := range res {
		switch {
		case o.status == http.StatusSwitchingProtocols:
			open = append(open, o.c)
		case o.c != nil:
			if _, err := o.c.conn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("a waiting client's connection ended: %v", err) // dropped instead of left in the queue
				continue
			}
			waiting = append(waiting, o.c)
		}
	}
	st := ch.stats(t)
	t.Logf("%d upgraded, %d waiting; server: %v", len(open), len(waiting), st)
	if len(open) == 0 || len(open) >= limit || st["accept_errors"] == 0 || st["open"] != len(open) {
		t.Fatalf("%d upgraded (limit %d), server %v: want some upgraded and accept errors counted", len(open), limit, st)
	}
	for i, c := range open {
		c.roundTripAnsweringProbes(t, "alive "+strconv.Itoa(i))
	}
	// Each connection that closes lets a waiting one in: its request was
	// queued all along, so its 101 arrives without being asked again.
	const freed = 30
	for _, c := range open[:freed] {
		c.closeCleanly(t)
		c.conn.Close()
	}
	open = open[freed:]
	// The waiting clients are in the listen queue in an order this test
	// does not know: wait for all of them at once.
	var mu sync.Mutex
	var late []*wsClient
	var wg sync.WaitGroup
	deadline := time.Now().Add(readTimeout)
	for _, c := range waiting {
		wg.Add(1)
		go func(c *wsClient) {
			defer wg.Done()
			_ = c.conn.SetReadDeadline(deadline)
			resp, err := http.ReadResponse(c.br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				return // still waiting: the accept loop paused again
			}
			c.resp = resp
			mu.Lock()
			late = append(late, c)
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	for _, c := range late {
		c.roundTripAnsweringProbes(t, "served late")
	}
	served := len(late)
	// Accepting needs two descriptors for a moment (gnet duplicates the
	// socket), so at the very edge a connection may be closed instead.
	if served < freed-2 {
		t.Fatalf("%d waiting connections served after %d closed, want at least %d", served, freed, freed-2)
	}
	for _, c := range open {
		c.roundTripAnsweringProbes(t, "end")
	}
}

// Connections cost no goroutine: the server's goroutine count does not grow
// with thousands of open connections.
func TestNoGoroutinePerConnection(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("gnet runs a goroutine per connection on Windows (development use, per its README)")
	}
	const n = 2000
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{EventLoops: 2})
	addr := srv.Addr().String()
	dialWS(t, addr, "/").roundTrip(t, "warm up")
	waitN(t, h.opened, 1, readTimeout)
	before := runtime.NumGoroutine()

	clients := make([]*wsClient, n)
	var wg sync.WaitGroup
	errc := make(chan error, n)
	const workers = 8
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				c, err := dialWSErr(addr, "/")
				if err != nil {
					errc <- err
					return
				}
				clients[i] = c
			}
		}(w)
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range clients {
			if c != nil {
				c.conn.Close()
			}
		}
	})
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	waitN(t, h.opened, n, 10*time.Second)
	after := runtime.NumGoroutine()
	t.Logf("goroutines: %d before, %d with %d more connections open", before, after, n)
	if after-before > 10 {
		t.Errorf("goroutines grew by %d with %d connections", after-before, n)
	}
	if st := srv.Stats(); st.Open != n+1 {
		t.Errorf("Stats().Open = %d, want %d", st.Open, n+1)
	}
	for i := 0; i < n; i += 97 {
		clients[i].roundTrip(t, "sample "+strconv.Itoa(i))
	}
}
