package engine_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsloop/wsloop/engine"
)

// fdChildEnv makes TestHelperFDLimitServer run as the server process of
// TestFDLimit, with RLIMIT_NOFILE lowered to the variable's value.
const fdChildEnv = "WSLOOP_TEST_FD_LIMIT_CHILD"

// TestHelperFDLimitServer is not a test: TestFDLimit runs the test binary
// again with only this function, as a server process whose descriptor
// limit it may lower without touching the test process. It serves an echo
// server with the default MaxConns, prints its address, and serves until
// its stdin is closed.
func TestHelperFDLimitServer(t *testing.T) {
	v := os.Getenv(fdChildEnv)
	if v == "" {
		t.Skip("helper process for TestFDLimit")
	}
	limit, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	rl.Cur = limit
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := engine.New(newRecorder(), engine.Options{Addr: "127.0.0.1:0", EventLoops: 2, Logger: logger})
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe(context.Background()) }()
	<-srv.Ready()
	if srv.Addr() == nil {
		t.Fatal(<-served)
	}
	os.Stdout.WriteString("ADDR " + srv.Addr().String() + "\n")
	_, _ = io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
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

// Running out of descriptors never takes the server down: with
// RLIMIT_NOFILE at 256 the server caps itself at 256-FDReserve
// connections, answers the excess 503, keeps serving the connections it
// has, and accepts again once some close.
func TestFDLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	const limit = 256
	const maxConns = limit - engine.DefaultFDReserve
	const attempts = 400

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperFDLimitServer$")
	cmd.Env = append(os.Environ(), fdChildEnv+"="+strconv.Itoa(limit))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("server stderr:\n%s", stderr.String())
		}
	})
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
				addrc <- a
			}
		}
		close(addrc)
	}()
	var addr string
	select {
	case a, ok := <-addrc:
		if !ok {
			t.Fatalf("server process ended without an address; stderr:\n%s", stderr.String())
		}
		addr = a
	case <-time.After(20 * time.Second):
		t.Fatal("server process did not start")
	}

	start := time.Now()
	var open []*wsClient
	t.Cleanup(func() {
		for _, c := range open {
			c.conn.Close()
		}
	})
	refused := 0
	for i := 0; i < attempts; i++ {
		c, err := dialRaw(addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if err := c.request(upgradeRequest(addr, "/")); err != nil {
			c.conn.Close()
			t.Fatalf("attempt %d (%d open): %v", i, len(open), err)
		}
		switch c.resp.StatusCode {
		case http.StatusSwitchingProtocols:
			open = append(open, c)
		case http.StatusServiceUnavailable:
			refused++
			if !strings.Contains(c.body, "connection limit") || c.resp.Header.Get("Retry-After") == "" {
				t.Errorf("503 without the reason or Retry-After: %v %q", c.resp.Header, c.body)
			}
			if err := c.waitEOF(readTimeout); err != nil && !strings.Contains(err.Error(), "reset") {
				t.Errorf("refused connection not closed: %v", err)
			}
			c.conn.Close()
		default:
			t.Fatalf("attempt %d: %s %q", i, c.resp.Status, c.body)
		}
	}
	if len(open) != maxConns || refused != attempts-maxConns {
		t.Fatalf("%d accepted and %d refused, want %d and %d", len(open), refused, maxConns, attempts-maxConns)
	}
	// Everything accepted still works.
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
		c, err := dialWSErr(addr, "/again")
		if err != nil {
			t.Fatalf("reconnect %d after closing %d: %v", i, freed, err)
		}
		open = append(open, c)
		c.roundTrip(t, "new")
	}
	if c, err := dialWSErr(addr, "/one-too-many"); err == nil {
		c.conn.Close()
		t.Error("a connection past the cap was accepted")
	} else if !strings.Contains(err.Error(), "503") {
		t.Errorf("past the cap: %v, want 503", err)
	}
	for _, c := range open {
		c.roundTrip(t, "end")
	}
	// The refusals are logged, but rate-limited: about one line a second.
	lines := strings.Count(stderr.String(), "connection limit reached")
	if max := int(time.Since(start)/time.Second) + 2; lines == 0 || lines > max {
		t.Errorf("%d log lines about the limit over %v (%d refusals)", lines, time.Since(start), refused+1)
	}
}

// Connections cost no goroutine: the server's goroutine count does not grow
// with thousands of open connections.
func TestNoGoroutinePerConnection(t *testing.T) {
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
