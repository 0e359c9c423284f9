package engine_test

import (
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
)

// BenchmarkIdleHeapBehindProxy reports the Go heap an idle connection
// costs (server and client sides together, both in this process), direct
// and behind a PROXY protocol balancer: with the client's addresses in
// gnet's connection (the usual case) and in the connection's own info
// (where gnet's fields are not found).
//
//	go test -run=^$ -bench=IdleHeapBehindProxy -benchtime=1x ./engine
func BenchmarkIdleHeapBehindProxy(b *testing.B) {
	for _, mode := range []string{"direct", "proxy", "proxy-connInfo"} {
		b.Run(mode, func(b *testing.B) {
			opts := engine.Options{}
			if mode != "direct" {
				opts.ProxyProtocol = loopback
			}
			defer engine.SetProxyAddrsInGnet(mode != "proxy-connInfo")()
			rec := newRecorder()
			srv, _ := startServer(b, rec, opts)
			addr := srv.Addr().String()
			const n = 2000
			conns := make([]net.Conn, 0, n)
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for i := 0; i < n; i++ {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				conns = append(conns, c)
				var hdr []byte
				if mode != "direct" {
					hdr = codec.AppendProxyHeader(nil, &codec.ProxyHeader{Version: 2, Command: codec.ProxyRelay,
						Source:      netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 5000),
						Destination: netip.MustParseAddrPort("10.0.0.1:443")})
				}
				wc := newClient(c) // its reader is garbage once the 101 is read
				if err := wc.request(string(hdr) + upgradeRequest(addr, "/")); err != nil {
					b.Fatal(err)
				}
			}
			waitN(b, rec.opened, n, readTimeout) // every OnOpen ran
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heapB/conn")
		})
	}
}
