package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/wsloop/wsloop/engine/enginetest"
)

// What a connection upgraded from net/http costs the server, plain and over
// TLS (docs/net-http.md quotes this test):
//
//	go test -run TestBridgeCost -v ./examples/embed/
//	WSLOOP_BRIDGE_CONNS=1000 go test -run TestBridgeCost -v ./examples/embed/
//
// The clients run in a child process (this test binary again, see
// TestMain), so that every goroutine, descriptor and byte counted here is
// the server's.

const (
	envClients = "WSLOOP_BRIDGE_CLIENTS" // set in the child: "ADDR N tls|plain"
	envCA      = "WSLOOP_BRIDGE_CA"      // the server's certificate, PEM
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(envClients); spec != "" {
		if err := runClients(spec, os.Getenv(envCA)); err != nil {
			fmt.Fprintln(os.Stderr, "clients:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// sample is what the process holds at one moment.
type sample struct {
	goroutines, fds int
	heap, stack     uint64 // live heap after GC; goroutine stacks in use
}

func takeSample(t *testing.T) sample {
	t.Helper()
	runtime.GC()
	runtime.GC() // the second empties sync.Pools: what is left is held
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors here: %v", err)
	}
	return sample{runtime.NumGoroutine(), len(fds), ms.HeapAlloc, ms.StackInuse}
}

// perConn is the difference between two samples per connection.
type perConn struct{ goroutines, fds, heap, stack float64 }

func (a sample) minus(b sample, n int) perConn {
	f := float64(n)
	return perConn{
		goroutines: float64(a.goroutines-b.goroutines) / f,
		fds:        float64(a.fds-b.fds) / f,
		heap:       (float64(a.heap) - float64(b.heap)) / f,
		stack:      (float64(a.stack) - float64(b.stack)) / f,
	}
}

func (p perConn) String() string {
	return fmt.Sprintf("%5.2f goroutines  %5.2f descriptors  %7.0f B heap  %7.0f B stacks  = %5.1f KiB",
		p.goroutines, p.fds, p.heap, p.stack, (p.heap+p.stack)/1024)
}

func TestBridgeCost(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement; skipped with -short")
	}
	n := 100
	if v, err := strconv.Atoi(os.Getenv("WSLOOP_BRIDGE_CONNS")); err == nil && v > 0 {
		n = v
	}
	cert, caPEM := selfSigned(t)
	plainApp, _, _ := startApp(t, Config{})
	tlsApp, _, _ := startApp(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})

	plain := measure(t, plainApp, n, false, "")
	bridged := measure(t, tlsApp, n, true, caPEM)
	t.Logf("per connection, %d connections, idle after one small message / after one 64 KiB message:", n)
	t.Logf("plain   %v", plain[0])
	t.Logf("plain   %v", plain[1])
	t.Logf("TLS     %v", bridged[0])
	t.Logf("TLS     %v", bridged[1])
	if raceEnabled {
		t.Logf("(built with -race: heap and stack figures are inflated; run without it for the real ones)")
	}
	// A plain connection is the engine's state and its socket, nothing
	// more: no goroutine, one descriptor.
	if p := plain[0]; p.goroutines > 0.05 || p.fds < 0.95 || p.fds > 1.05 {
		t.Errorf("plain upgraded connection: %v, want no goroutine and one descriptor", p)
	}
	if b := bridged[0]; b.goroutines < 1 || b.fds < 2 {
		t.Errorf("TLS connection: %v: is it still bridged? update docs/net-http.md", b)
	}
}

// measure opens n connections to app from a child process and returns
// what each costs the server: idle after a small echo, then after a 64 KiB
// one.
func measure(t *testing.T, app *App, n int, useTLS bool, caPEM string) [2]perConn {
	t.Helper()
	settle(t, app, 0)

	mode := "plain"
	if useTLS {
		mode = "tls"
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envClients+"="+fmt.Sprintf("%s %d %s", app.Addr(), n, mode), envCA+"="+caPEM)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	ready := func(what string) {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok || l != "ready" {
				t.Fatalf("%s: the client process said %q", what, l)
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s: the client process is not ready after 2 minutes", what)
		}
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()

	// The child's pipes and process descriptor are in both samples: the
	// child opens its connections only when told to.
	ready("start")
	before := takeSample(t)
	fmt.Fprintln(stdin, "open")
	var out [2]perConn
	ready("small messages")
	settle(t, app, int64(n))
	out[0] = takeSample(t).minus(before, n)
	fmt.Fprintln(stdin, "big")
	ready("64 KiB messages")
	settle(t, app, int64(n))
	out[1] = takeSample(t).minus(before, n)

	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client process: %v", err)
	}
	settle(t, app, 0)
	return out
}

// settle waits until the app has open connections and no request of
// net/http is being served any more (an upgrade's handler returns a moment
// after its client saw the 101), nor a bridge of a closed connection
// still running.
func settle(t *testing.T, app *App, open int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		busy := goroutinesIn("net/http.(*conn).serve")
		if open == 0 {
			busy += goroutinesIn("engine.(*bridged)") + goroutinesIn("engine.(*Server).bridge")
		}
		if app.WS.Stats().Open == open && busy == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled: %d open (want %d), %d goroutines still serving", app.WS.Stats().Open, open, busy)
		}
		runtime.Gosched()
	}
}

// goroutinesIn counts the goroutines with fn on their stack.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

// runClients is the child process. It says "ready" when it has started,
// then on "open" opens the connections and echoes one small message on each,
// on "big" one 64 KiB message on each, and says "ready" after each. It ends
// when its standard input does.
func runClients(spec, caPEM string) error {
	var addr, mode string
	var n int
	if _, err := fmt.Sscanf(spec, "%s %d %s", &addr, &n, &mode); err != nil {
		return err
	}
	d := ws.Dialer{Timeout: 30 * time.Second}
	url := "ws://" + addr + "/echo"
	if mode == "tls" {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM([]byte(caPEM))
		d.TLSConfig = &tls.Config{RootCAs: pool}
		url = "wss://" + addr + "/echo"
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	echo := func(c net.Conn, msg []byte) error {
		if err := wsutil.WriteClientBinary(c, msg); err != nil {
			return err
		}
		got, _, err := wsutil.ReadServerData(c)
		if err == nil && len(got) != len(msg) {
			err = fmt.Errorf("echo of %d bytes came back with %d", len(msg), len(got))
		}
		return err
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "open":
			for range n {
				c, _, _, err := d.Dial(context.Background(), url)
				if err != nil {
					return err
				}
				conns = append(conns, c)
				if err := echo(c, []byte("ping")); err != nil {
					return err
				}
			}
		case "big":
			big := make([]byte, 64<<10)
			for _, c := range conns {
				if err := echo(c, big); err != nil {
					return err
				}
			}
		}
		fmt.Println("ready")
	}
	return nil
}

// selfSigned returns a throwaway certificate for 127.0.0.1 and its PEM.
func selfSigned(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	cert, pemCert := enginetest.Certificate(t)
	return cert, string(pemCert)
}
