package conformance

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// fdReserve is how many descriptors the scale tests leave for everything
// else in the process (listener, epoll, the test binary's own files).
const fdReserve = 256

// connsPerSourceIP spreads client connections over several loopback
// source addresses (127.0.0.2, 127.0.0.3, ...) so that no single address
// runs out of ephemeral ports, even with TIME_WAIT left from earlier runs.
const connsPerSourceIP = 1000

// openConns opens n WebSocket connections to addr, with a few dial workers,
// each one completing the handshake and echoing one text message, and
// returns them all open. It fails the test on the first error.
func openConns(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	errs := make(chan error, 1)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := openOne(t, addr, i, conns); err != nil {
					select {
					case errs <- fmt.Errorf("connection %d: %w", i, err):
					default:
					}
				}
			}
		}()
	}
	var failed error
dispatch:
	for i := range n {
		select {
		case jobs <- i:
		case failed = <-errs:
			break dispatch // stop dialing on the first error
		}
	}
	close(jobs)
	wg.Wait()
	if failed == nil {
		select {
		case failed = <-errs:
		default:
		}
	}
	if failed != nil {
		closeAll(conns)
		t.Fatal(failed)
	}
	return conns
}

// openOne opens connection i from source address 127.0.0.(2 + i/1000).
func openOne(t *testing.T, addr string, i int, conns []net.Conn) error {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i/connsPerSourceIP))}
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: src}
	msg := text(fmt.Sprintf("hello from %d", i))
	c, err := dialErr(t, d, addr, nil)
	if err != nil {
		return err
	}
	conns[i] = c.conn
	if err := c.writeFrame(msg); err != nil {
		return err
	}
	got, err := c.readMessage(10 * time.Second)
	if err != nil {
		return err
	}
	if !equalFrame(msg, got) {
		return fmt.Errorf("echo %v, want %v", got, msg)
	}
	// Keep only the socket: the bufio reader is empty now, and ten
	// thousand of them would cost 40 MB for nothing.
	return nil
}

// closeAll drops every connection with a reset (SO_LINGER 0), the way a
// crashed client or a NAT timeout ends them, and so that no TIME_WAIT
// entries pile up on the loopback source ports between runs.
func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			tcpConn(c).SetLinger(0)
			c.Close()
		}
	}
}

// maxConnsForFDs returns how many connections fit under RLIMIT_NOFILE when
// each costs perConn descriptors in this process.
func maxConnsForFDs(t *testing.T, perConn int) int {
	return (fdLimit(t) - fdReserve) / perConn // fdlimit_*_test.go
}

// TestTenThousandConnections holds 10,000 upgraded connections open at the
// same time, each having echoed a message, then drops them all and checks
// that the server ran OnClose for every one. Client and server sockets
// live in this process, so it needs 20,000 descriptors plus a few; with a
// lower RLIMIT_NOFILE it scales down and says so.
func TestTenThousandConnections(t *testing.T) {
	want := 10000
	switch {
	case testing.Short():
		want = 500
	case road == roadTLS:
		// TLS handshakes under -race are the slowest part of the
		// suite: two thousand hold the same bound.
		want = 2000
	case road == roadTLSBridge:
		// The fallback road costs two goroutines and three descriptors
		// a connection: a thousand show that bound as well as ten.
		want = 1000
	}
	addr, h := startEchoHooks(t, engineOptions())
	perConn := 2
	if h == nil {
		perConn = 1 // the server's sockets are in another process
	} else if road == roadTLSBridge {
		perConn = 4 // the server's socket and both ends of the bridge's socketpair
	}
	n := want
	if max := maxConnsForFDs(t, perConn); n > max {
		t.Logf("RLIMIT_NOFILE allows %d connections with %d descriptors each and %d in reserve; running %d instead of %d",
			max, perConn, fdReserve, max, want)
		n = max
	}
	runtime.GC()
	before := runtime.NumGoroutine()
	start := time.Now()
	conns := openConns(t, addr, n)
	t.Logf("%d connections upgraded and echoed in %v", n, time.Since(start))
	during := goroutinesSettle(before+goroutineSlack, 10*time.Second)
	if h != nil {
		if got := h.opens.Load(); got != int64(n) {
			t.Errorf("OnOpen ran %d times for %d connections", got, n)
		}
		if n := h.notProxied.Load(); n != 0 {
			t.Errorf("%d connections did not report the client their PROXY header named", n)
		}
		if road == roadTLSBridge {
			// Two goroutines per connection by design, and no more.
			if during-before > 2*n+goroutineSlack {
				t.Errorf("goroutines grew from %d to %d with %d bridged connections: more than two each", before, during, n)
			}
		} else if during-before > goroutineSlack && runtime.GOOS != "windows" { // gnet: a goroutine per connection there
			t.Errorf("goroutines grew from %d to %d with %d open connections; the engine must not use a goroutine per connection",
				before, during, n)
		}
	}
	closeAll(conns)
	if h == nil {
		t.Logf("external server (%s): OnClose cannot be observed", addrEnv)
		return
	}
	if !h.waitCloses(int64(n), 20*time.Second) {
		t.Fatalf("OnClose ran %d times for %d dropped connections after 20s", h.closes.Load(), n)
	}
}

// goroutinesSettle returns the process's goroutine count once it is at
// most limit, or after within if it never gets there. On the net/http road
// every upgrade runs on net/http's goroutine for its connection, which
// returns just after the client has its 101 and announces nothing, so
// under load a few of them are still finishing when the last connection
// has echoed: this polls until they are gone. A server with a goroutine
// per connection stays thousands above the limit and fails all the same.
func goroutinesSettle(limit int, within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		n := runtime.NumGoroutine()
		if n <= limit || time.Now().After(deadline) {
			return n
		}
		<-time.After(time.Millisecond) // a poll: goroutine exits announce nothing
	}
}

// goroutineSlack is how many goroutines the server may add while it has
// connections open: a few fixed helpers (timers, a writer per loop), never
// one per connection.
const goroutineSlack = 16

// TestGoroutinesDoNotGrow compares the goroutine count with a few
// connections open and with thousands open: an event-loop server must not
// spend a goroutine (and its stack) per connection.
func TestGoroutinesDoNotGrow(t *testing.T) {
	if os.Getenv(addrEnv) != "" {
		t.Skipf("%s is set: the server's goroutines are in another process", addrEnv)
	}
	if runtime.GOOS == "windows" {
		t.Skip("gnet runs a goroutine per connection on Windows (development use, per its README)")
	}
	if road == roadTLSBridge {
		t.Skip("the wss fallback bridges each connection with two goroutines, by design (TestTenThousandConnections bounds them)")
	}
	addr := startEcho(t, engineOptions())
	few := openConns(t, addr, 50)
	defer closeAll(few)
	runtime.GC()
	base := runtime.NumGoroutine()
	more := 3000
	if testing.Short() || road == roadTLS {
		more = 1000 // TLS: handshakes under -race are slow, and 1000 show the same
	}
	n := min(more, maxConnsForFDs(t, 2)-50)
	many := openConns(t, addr, n)
	defer closeAll(many)
	after := goroutinesSettle(base+goroutineSlack/2, 10*time.Second)
	t.Logf("goroutines: %d with 50 connections, %d with %d", base, after, 50+n)
	if after-base > goroutineSlack/2 {
		t.Fatalf("goroutines grew by %d when %d connections were added", after-base, n)
	}
}
