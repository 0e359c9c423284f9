package engine_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
)

// Tests of the per-client limits (Options.MaxConnsPerClient,
// MaxHandshakesPerClient, MaxTrackedClients) over real sockets, with
// clients spread over many loopback addresses.

// srcAddr is the i-th test client address, in 127.0.(base).(1+i).
func srcAddr(base, i int) string { return fmt.Sprintf("127.0.%d.%d", base+i/250, 1+i%250) }

// attemptUpgrade is tryUpgrade for a goroutine other than the test's: it
// returns its error, and the caller closes the connection.
func attemptUpgrade(src, addr string) (*wsClient, error) {
	d := net.Dialer{Timeout: readTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := newClient(conn)
	if err := c.request(upgradeRequest(addr, "/")); err != nil {
		conn.Close()
		return nil, fmt.Errorf("from %s: %w", src, err)
	}
	return c, nil
}

// engineTLS is a server TLS configuration for a test.
func engineTLS(t testing.TB) *tls.Config { return enginetest.TLSConfig(t) }

// tlsClient wraps conn in a TLS client when on.
func tlsClient(conn net.Conn, on bool) net.Conn {
	if !on {
		return conn
	}
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	_ = tc.SetDeadline(time.Now().Add(readTimeout))
	return tc
}

// tryUpgrade dials from src and asks for an upgrade; it returns the client
// whatever the answer.
func tryUpgrade(t testing.TB, src, addr string) *wsClient {
	t.Helper()
	c := dialFrom(t, src, addr)
	if err := c.request(upgradeRequest(addr, "/")); err != nil {
		t.Fatalf("from %s: %v", src, err)
	}
	return c
}

func expectStatus(t testing.TB, c *wsClient, status int, retryAfter, reason string) {
	t.Helper()
	if c.resp.StatusCode != status {
		t.Fatalf("from %s: %s %q, want %d", c.conn.LocalAddr(), c.resp.Status, c.body, status)
	}
	if status == http.StatusSwitchingProtocols {
		return
	}
	if got := c.resp.Header.Get("Retry-After"); got != retryAfter || !strings.Contains(c.body, reason) {
		t.Fatalf("from %s: Retry-After %q, body %q; want %q and %q", c.conn.LocalAddr(), got, c.body, retryAfter, reason)
	}
}

// MaxConnsPerClient, with 100 clients on as many loopback addresses: each
// gets its limit and a 429 past it, without touching the others; a client
// that closes a connection may open another; when all are gone, nothing is
// tracked.
func TestMaxConnsPerClient(t *testing.T) {
	const clients, limit = 100, 2
	rec := newRecorder()
	srv, _ := startServer(t, rec, engine.Options{MaxConnsPerClient: limit})
	addr := srv.Addr().String()
	open := make([][]*wsClient, clients)
	t.Cleanup(func() {
		for _, cs := range open {
			for _, c := range cs {
				c.conn.Close()
			}
		}
	})
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() { // four clients at a time; errors go to the test's goroutine
			defer wg.Done()
			for i := w; i < clients; i += 4 {
				src := srcAddr(20, i)
				for j := 0; j <= limit; j++ {
					c, err := attemptUpgrade(src, addr)
					if err != nil {
						errs <- err
						break
					}
					open[i] = append(open[i], c)
					want := http.StatusSwitchingProtocols
					if j == limit {
						want = http.StatusTooManyRequests
					}
					if c.resp.StatusCode != want || j == limit && (c.resp.Header.Get("Retry-After") != "5" || !strings.Contains(c.body, "too many connections from your address")) {
						errs <- fmt.Errorf("connection %d from %s: %s %v %q, want %d", j, src, c.resp.Status, c.resp.Header, c.body, want)
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range open {
		open[i][limit].conn.Close() // the refused one
		open[i] = open[i][:limit]
	}
	// The 101 goes out just before the loop counts the connection open and
	// runs OnOpen: Stats is read once every OnOpen has run.
	waitN(t, rec.opened, clients*limit, readTimeout)
	st := srv.Stats()
	if st.ClientConnLimited != clients || st.Rejected["429 client connections"] != clients || st.TrackedClients != clients || st.Open != clients*limit {
		t.Fatalf("Stats: ClientConnLimited %d, Rejected %v, TrackedClients %d, Open %d",
			st.ClientConnLimited, st.Rejected, st.TrackedClients, st.Open)
	}

	// One connection of the first client closes: it may open one again.
	open[0][0].closeCleanly(t)
	waitN(t, rec.closed, 1, readTimeout)
	c := tryUpgrade(t, srcAddr(20, 0), addr)
	expectStatus(t, c, http.StatusSwitchingProtocols, "", "")
	open[0][0] = c

	for _, cs := range open {
		for _, c := range cs {
			c.conn.Close()
		}
	}
	waitN(t, rec.closed, clients*limit, 2*readTimeout)
	if st := srv.Stats(); st.TrackedClients != 0 {
		t.Errorf("TrackedClients %d after every client left, want 0", st.TrackedClients)
	}
}

// MaxHandshakesPerClient, on the server's clock: a burst of the rate, then
// 429 with Retry-After: 1 until time passes; other clients are not
// affected; a client gone quiet is forgotten within a second.
func TestMaxHandshakesPerClient(t *testing.T) {
	const rate = 3
	srv, clk, _ := startClocked(t, newRecorder(), engine.Options{MaxHandshakesPerClient: rate})
	addr := srv.Addr().String()
	burst := func(src string, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			c := tryUpgrade(t, src, addr)
			expectStatus(t, c, http.StatusSwitchingProtocols, "", "")
			c.closeCleanly(t)
		}
	}
	burst("127.0.30.1", rate)
	c := tryUpgrade(t, "127.0.30.1", addr)
	expectStatus(t, c, http.StatusTooManyRequests, "1", "slow down")
	burst("127.0.30.2", rate) // another client has its own

	clk.Advance(time.Second / rate) // one handshake's worth
	burst("127.0.30.1", 1)
	c = tryUpgrade(t, "127.0.30.1", addr)
	expectStatus(t, c, http.StatusTooManyRequests, "1", "slow down")

	clk.Advance(time.Second) // a whole burst again
	burst("127.0.30.1", rate)

	st := srv.Stats()
	if st.ClientRateLimited != 2 || st.Rejected["429 client handshake rate"] != 2 {
		t.Errorf("Stats: ClientRateLimited %d, Rejected %v", st.ClientRateLimited, st.Rejected)
	}
	if st.TrackedClients == 0 {
		t.Error("no client tracked right after their handshakes")
	}
	clk.Advance(2 * time.Second) // the sweep runs on the server's tick
	if st := srv.Stats(); st.TrackedClients != 0 {
		t.Errorf("TrackedClients %d two seconds after the last handshake, want 0", st.TrackedClients)
	}
}

// At MaxTrackedClients, with every tracked client holding a connection, a
// new client is refused with 503 and counted; once they leave it is
// served.
func TestMaxTrackedClients(t *testing.T) {
	const cap, clients = 16, 64 // one client per shard
	rec := newRecorder()
	srv, _ := startServer(t, rec, engine.Options{MaxConnsPerClient: 10, MaxTrackedClients: cap})
	addr := srv.Addr().String()
	var admitted []*wsClient
	var refused []string
	for i := 0; i < clients; i++ {
		c := tryUpgrade(t, srcAddr(40, i), addr)
		switch c.resp.StatusCode {
		case http.StatusSwitchingProtocols:
			admitted = append(admitted, c)
		default:
			expectStatus(t, c, http.StatusServiceUnavailable, "1", "too many client addresses")
			refused = append(refused, srcAddr(40, i))
			c.conn.Close()
		}
	}
	st := srv.Stats()
	if len(admitted) > cap || len(refused) == 0 || st.ClientTableFull != int64(len(refused)) || st.TrackedClients != int64(len(admitted)) {
		t.Fatalf("%d admitted, %d refused; Stats: ClientTableFull %d, TrackedClients %d (cap %d)",
			len(admitted), len(refused), st.ClientTableFull, st.TrackedClients, cap)
	}
	for _, c := range admitted {
		c.conn.Close()
	}
	waitN(t, rec.closed, len(admitted), readTimeout)
	c := tryUpgrade(t, refused[0], addr)
	expectStatus(t, c, http.StatusSwitchingProtocols, "", "")
}

// Behind a balancer, the limits count the clients its PROXY headers name,
// not the balancer; its health checks (LOCAL) are not counted. On the TLS
// port a refused client is closed: it has no TLS to be answered in yet.
func TestClientLimitsBehindProxy(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls %v", useTLS), func(t *testing.T) {
			opts := engine.Options{ProxyProtocol: loopback, MaxConnsPerClient: 1}
			if useTLS {
				opts.TLSConfig = engineTLS(t)
			}
			srv, _ := startServer(t, newRecorder(), opts)
			addr := srv.Addr().String()
			connect := func(client string) (*wsClient, error) {
				raw := dialFrom(t, "127.0.0.9", addr)
				hdr := header(2, client, "198.51.100.1:443", nil)
				if client == "" {
					hdr = header(2, "", "", nil)
				}
				if _, err := raw.conn.Write(hdr); err != nil {
					t.Fatal(err)
				}
				conn := tlsClient(raw.conn, useTLS)
				c := newClient(conn)
				return c, c.request(upgradeRequest(addr, "/"))
			}
			for _, client := range []string{"203.0.113.1:1", "203.0.113.2:1", "", ""} {
				if c, err := connect(client); err != nil || c.resp.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("client %q: %v %v", client, c.resp, err)
				}
			}
			c, err := connect("203.0.113.1:2") // the first client's second connection
			if useTLS {
				if err == nil {
					t.Fatalf("over the limit on the TLS port: %v", c.resp)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				expectStatus(t, c, http.StatusTooManyRequests, "5", "too many connections")
			}
			if st := srv.Stats(); st.ClientConnLimited != 1 || st.TrackedClients != 2 {
				t.Errorf("Stats: ClientConnLimited %d, TrackedClients %d", st.ClientConnLimited, st.TrackedClients)
			}
		})
	}
}

// On the net/http road the limits count the hijacked connection's peer
// (the PROXY header's client through a ProxyListener), and Upgrade answers
// 429 itself.
func TestClientLimitsUpgrade(t *testing.T) {
	srv := engine.New(newRecorder(), engine.Options{MaxConnsPerClient: 1, ProxyProtocol: loopback, Logger: discardLogger})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	upgradeErrs := make(chan error, 8)
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, err := srv.Upgrade(w, r, nil)
			upgradeErrs <- err
		}),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = hs.Serve(srv.ProxyListener(ln)) }()
	t.Cleanup(func() { _ = hs.Close() }) // before the server's Shutdown
	connect := func(client string) *wsClient {
		c := dialFrom(t, "127.0.0.10", addr)
		if err := c.request(string(header(1, client, "198.51.100.1:80", nil)) + upgradeRequest(addr, "/")); err != nil {
			t.Fatal(err)
		}
		return c
	}
	expectStatus(t, connect("203.0.113.1:1"), http.StatusSwitchingProtocols, "", "")
	expectStatus(t, connect("203.0.113.2:1"), http.StatusSwitchingProtocols, "", "")
	expectStatus(t, connect("203.0.113.1:2"), http.StatusTooManyRequests, "5", "too many connections")
	failed := 0
	for _, err := range waitN(t, upgradeErrs, 3, readTimeout) { // in any order: the handlers run side by side
		if err != nil {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d of 3 Upgrade calls returned an error, want 1", failed)
	}
	if st := srv.Stats(); st.ClientConnLimited != 1 || st.TrackedClients != 2 {
		t.Errorf("Stats: ClientConnLimited %d, TrackedClients %d", st.ClientConnLimited, st.TrackedClients)
	}
}
