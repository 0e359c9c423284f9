//go:build linux

package engine_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// silentListener returns an address on ip at which nothing answers: a
// listening socket whose accept queue is full and that is never accepted
// from, so that the kernel drops every further SYN (tcp_conn_request,
// LISTENOVERFLOWS) and a connect to it hangs until its deadline, as for a
// host that is down behind a firewall that drops. port 0 lets the kernel
// choose.
func silentListener(t *testing.T, ip netip.Addr, port uint16) (netip.AddrPort, error) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: ip.As4(), Port: int(port)}); err != nil {
		unix.Close(fd)
		return netip.AddrPort{}, err
	}
	t.Cleanup(func() { unix.Close(fd) })
	// A backlog of 0: the accept queue holds one connection.
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(ip, uint16(sa.(*unix.SockaddrInet4).Port))
	// For a listening socket TCP_INFO gives the accept queue's length
	// (tcpi_unacked) and its limit (tcpi_sacked).
	full := func() bool {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return err == nil && info.Unacked > info.Sacked
	}
	for i := 0; i < 4 && !full(); i++ {
		c, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
		if err != nil {
			break // the kernel drops SYNs already (no room even for one)
		}
		t.Cleanup(func() { c.Close() })
		// The connection enters the queue when the listener has the
		// final ACK, which may come just after connect returned.
		for j := 0; j < 100_000 && !full(); j++ {
			runtime.Gosched()
		}
	}
	return addr, nil
}

// A first address that never answers costs its share of the deadline, not
// all of it: Dial goes on to the next address as net.Dialer does, and
// succeeds well within the handshake timeout.
func TestDialSkipsSilentAddress(t *testing.T) {
	silentIP, liveIP := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")
	// The live server listens on the silent address's port on another
	// loopback address: a resolver's answer has one port for all.
	var silent netip.AddrPort
	var ln net.Listener
	for try := 0; ln == nil; try++ {
		var err error
		if silent, err = silentListener(t, silentIP, 0); err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", netip.AddrPortFrom(liveIP, silent.Port()).String())
		if err != nil && try == 5 {
			t.Fatalf("no port free on both %v and %v: %v", silentIP, liveIP, err)
		}
	}
	srv := startLoops(t, upperHandler{}, engine.Options{})
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { srv.Upgrade(w, r, nil) })}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	cli := newMsgRecorder()
	d := dialer(t, cli, engine.Options{})
	res := testResolver(map[string][]netip.Addr{
		"silent.test":   {silentIP},
		"twoaddrs.test": {silentIP, liveIP},
	})
	port := strconv.Itoa(int(silent.Port()))

	// The silent address alone: a connect timeout, so SYNs are dropped.
	_, _, err := d.Dial(context.Background(), "ws://silent.test:"+port+"/", &engine.DialOptions{Resolver: res, HandshakeTimeout: 300 * time.Millisecond})
	var de *engine.DialError
	if !errors.As(err, &de) || de.Phase != engine.PhaseConnect || !de.Timeout() || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "connect timed out: the handshake timeout (300ms) passed") {
		t.Fatalf("the silent address alone: %v, want a connect timeout that names the handshake timeout", err)
	}

	// Silent first, live second: the dial reaches the second, in the
	// time left after the first one's share (half of it: net.Dialer's
	// split), far from the whole timeout the first once used up.
	var mu sync.Mutex
	var tried []string
	opts := &engine.DialOptions{Resolver: res, HandshakeTimeout: 8 * time.Second}
	engine.SetDialControl(opts, func(addr string) {
		mu.Lock()
		tried = append(tried, addr)
		mu.Unlock()
	})
	c, _, err := d.Dial(context.Background(), "ws://twoaddrs.test:"+port+"/", opts)
	if err != nil {
		t.Fatalf("silent address first: %v", err)
	}
	mu.Lock()
	want := []string{silent.String(), netip.AddrPortFrom(liveIP, silent.Port()).String()}
	if !slices.Equal(tried, want) {
		t.Errorf("addresses tried %v, want %v", tried, want)
	}
	mu.Unlock()
	if got := c.RemoteAddr().String(); got != netip.AddrPortFrom(liveIP, silent.Port()).String() {
		t.Fatalf("connected to %s", got)
	}
	c.WriteMessage(handler.Text, []byte("second"))
	if m := cli.next(t); string(m.data) != "SECOND" {
		t.Fatalf("echo %v", m)
	}
}
