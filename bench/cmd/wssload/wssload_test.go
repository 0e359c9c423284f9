package main

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/wsloop/wsloop/bench/servers"
)

// TestEchoOverTLS runs each bench server's wss:// mode in this process and
// echoes small and 16 KiB messages through the load generator's client.
func TestEchoOverTLS(t *testing.T) {
	cert, err := servers.SelfSignedTLSCert()
	if err != nil {
		t.Fatal(err)
	}
	for _, impl := range []string{"wsloop", "gws", "nbio"} {
		t.Run(impl, func(t *testing.T) {
			run, err := servers.Get(impl)
			if err != nil {
				t.Skip(err) // built without it (-tags nowsloop)
			}
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := netip.MustParseAddrPort(ln.Addr().String())
			_ = ln.Close()
			ready := make(chan struct{})
			go func() { _ = run(addr.String(), servers.Settings{TLS: cert}, func() { close(ready) }) }()
			select {
			case <-ready:
			case <-time.After(10 * time.Second):
				t.Fatal("server not ready")
			}
			d, err := newDialer(addr, []netip.Addr{netip.MustParseAddr("127.0.0.1")}, "default", 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c, err := d.dial(1)
			if err != nil {
				t.Fatal(err)
			}
			defer c.raw.Close()
			_ = c.raw.SetDeadline(time.Now().Add(10 * time.Second))
			for _, size := range []int{1, 125, 126, 1024, 16384, 70000} {
				if err := c.echo(size); err != nil {
					t.Fatalf("echo %d B: %v", size, err)
				}
			}
			if c.tc.ConnectionState().NegotiatedProtocol != "http/1.1" && impl != "nbio" {
				t.Errorf("ALPN %q", c.tc.ConnectionState().NegotiatedProtocol)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
