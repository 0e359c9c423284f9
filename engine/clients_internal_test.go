package engine

import (
	"net"
	"runtime"
	"testing"
	"time"
)

func tcpAddr(s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		panic(err)
	}
	return a
}

// A client is an IPv4 address, or an IPv6 prefix of ClientIPv6Prefix
// bits; an IPv4-mapped IPv6 address is the IPv4 client; a peer without an
// IP address is not a client.
func TestClientKeys(t *testing.T) {
	for _, tc := range []struct {
		prefix int
		a, b   string
		same   bool
	}{
		{64, "192.0.2.1:1", "192.0.2.1:2", true},
		{64, "192.0.2.1:1", "192.0.2.2:1", false},
		{64, "192.0.2.1:1", "[::ffff:192.0.2.1]:1", true},
		{64, "[2001:db8:1:2::1]:1", "[2001:db8:1:2:ffff::9]:1", true},
		{64, "[2001:db8:1:2::1]:1", "[2001:db8:1:3::1]:1", false},
		{128, "[2001:db8:1:2::1]:1", "[2001:db8:1:2::2]:1", false},
		{48, "[2001:db8:1:2::1]:1", "[2001:db8:1:ffff::1]:1", true},
		{48, "[2001:db8:1::1]:1", "[2001:db8:2::1]:1", false},
		{96, "[::]:1", "0.0.0.0:1", false}, // an IPv6 /96 of zeros is not the IPv4 client 0.0.0.0
	} {
		o := Options{MaxConnsPerClient: 1, ClientIPv6Prefix: tc.prefix}
		o = o.withDefaults()
		tb := newClientTable(&o)
		ka, ok1 := tb.keyOf(tcpAddr(tc.a))
		kb, ok2 := tb.keyOf(tcpAddr(tc.b))
		if !ok1 || !ok2 || (ka == kb) != tc.same {
			t.Errorf("/%d: %s and %s: same client %v, want %v", tc.prefix, tc.a, tc.b, ka == kb, tc.same)
		}
	}
	o := Options{MaxConnsPerClient: 1}
	o = o.withDefaults()
	if _, ok := newClientTable(&o).keyOf(&net.UnixAddr{Name: "ws.sock", Net: "unix"}); ok {
		t.Error("a Unix socket's peer has a client key")
	}
}

func newTable(t *testing.T, o Options) *clientTable {
	t.Helper()
	o = o.withDefaults()
	tb := newClientTable(&o)
	if tb == nil {
		t.Fatal("no table")
	}
	return tb
}

// MaxConnsPerClient counts open connections; a client whose last one
// closes is forgotten at once when no rate limit remembers it.
func TestClientTableConns(t *testing.T) {
	tb := newTable(t, Options{MaxConnsPerClient: 2})
	a, _ := tb.keyOf(tcpAddr("192.0.2.1:1"))
	b, _ := tb.keyOf(tcpAddr("192.0.2.2:1"))
	for i, want := range []clientVerdict{clientAdmitted, clientAdmitted, clientOverConns} {
		if v := tb.admit(a, 0); v != want {
			t.Fatalf("connection %d: %v, want %v", i, v, want)
		}
	}
	if v := tb.admit(b, 0); v != clientAdmitted {
		t.Fatalf("another client: %v", v)
	}
	tb.release(a, 0)
	if v := tb.admit(a, 0); v != clientAdmitted {
		t.Fatalf("after a close: %v", v)
	}
	if n := tb.tracked.Load(); n != 2 {
		t.Errorf("tracked %d, want 2", n)
	}
	tb.release(a, 0)
	tb.release(a, 0)
	tb.release(b, 0)
	if n := tb.tracked.Load(); n != 0 {
		t.Errorf("tracked %d after every connection closed, want 0", n)
	}
}

// MaxHandshakesPerClient: a burst of the rate, then one every 1/rate
// seconds; a client without connections stays tracked until its burst is
// whole again, then the sweep forgets it.
func TestClientTableRate(t *testing.T) {
	tb := newTable(t, Options{MaxHandshakesPerClient: 4})
	a, _ := tb.keyOf(tcpAddr("192.0.2.1:1"))
	now := int64(time.Hour)
	for i := 0; i < 4; i++ {
		if v := tb.admit(a, now); v != clientAdmitted {
			t.Fatalf("handshake %d of the burst: %v", i, v)
		}
		tb.release(a, now) // short connections: the rate still counts them
	}
	if v := tb.admit(a, now); v != clientOverRate {
		t.Fatalf("fifth handshake in the same instant: %v", v)
	}
	if v := tb.admit(a, now+int64(240*time.Millisecond)); v != clientOverRate {
		t.Fatalf("after 240 ms: %v", v)
	}
	if v := tb.admit(a, now+int64(250*time.Millisecond)); v != clientAdmitted {
		t.Fatalf("after 250 ms (one interval): %v", v)
	}
	tb.release(a, now+int64(250*time.Millisecond))
	tb.sweep(now + int64(500*time.Millisecond))
	if n := tb.tracked.Load(); n != 1 {
		t.Fatalf("tracked %d while its history counts, want 1", n)
	}
	tb.sweep(now + int64(1250*time.Millisecond))
	if n := tb.tracked.Load(); n != 0 {
		t.Fatalf("tracked %d a second after its last handshake, want 0", n)
	}
}

// keysInOneShard returns n client keys that fall in the same shard.
func keysInOneShard(tb *clientTable, n int) []clientKey {
	byShard := map[*clientShard][]clientKey{}
	for i := 1; ; i++ {
		k, _ := tb.keyOf(&net.TCPAddr{IP: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)), Port: 1})
		sh := tb.shard(k)
		byShard[sh] = append(byShard[sh], k)
		if len(byShard[sh]) == n {
			return byShard[sh]
		}
	}
}

// At the cap, a new client pushes out one without connections (losing its
// rate history), and is refused only when every client of its shard has
// connections.
func TestClientTableCap(t *testing.T) {
	tb := newTable(t, Options{MaxConnsPerClient: 10, MaxHandshakesPerClient: 10, MaxTrackedClients: 2 * clientShards})
	ks := keysInOneShard(tb, 4)
	now := int64(time.Hour)
	for _, k := range ks[:2] {
		if v := tb.admit(k, now); v != clientAdmitted {
			t.Fatal(v)
		}
	}
	if v := tb.admit(ks[2], now); v != clientTableFull {
		t.Fatalf("a third client in a full shard whose clients have connections: %v", v)
	}
	tb.release(ks[0], now) // no connections left, history still counting
	if v := tb.admit(ks[2], now); v != clientAdmitted {
		t.Fatalf("with a client without connections to push out: %v", v)
	}
	if _, ok := tb.shard(ks[0]).m[ks[0]]; ok {
		t.Error("the client pushed out is still tracked")
	}
	if v := tb.admit(ks[3], now); v != clientTableFull {
		t.Fatalf("again full: %v", v)
	}
	if n := tb.tracked.Load(); n != 2 {
		t.Errorf("tracked %d, want the shard's cap, 2", n)
	}
}

// A shard whose map a flood grew moves into a smaller one once it holds
// an eighth of its peak.
func TestClientTableShrinks(t *testing.T) {
	tb := newTable(t, Options{MaxConnsPerClient: 1})
	ks := keysInOneShard(tb, 2000)
	for _, k := range ks {
		tb.admit(k, 0)
	}
	sh := tb.shard(ks[0])
	if sh.peak != 2000 {
		t.Fatalf("peak %d", sh.peak)
	}
	for _, k := range ks[:1900] {
		tb.release(k, 0)
	}
	tb.sweep(0)
	if sh.peak != 100 || len(sh.m) != 100 {
		t.Fatalf("after the sweep: peak %d, %d entries; want a map of 100", sh.peak, len(sh.m))
	}
	for _, k := range ks[1900:] {
		if v := tb.admit(k, 0); v != clientOverConns {
			t.Fatalf("a client kept across the move lost its count: %v", v)
		}
	}
}

// BenchmarkClientTable measures what the per-client limits add to each
// connection: one admit at accept and one release at close, for clients
// spread over many addresses (both limits on).
//
//	go test -run=^$ -bench=ClientTable -benchmem ./engine
func BenchmarkClientTable(b *testing.B) {
	o := Options{MaxConnsPerClient: 100, MaxHandshakesPerClient: 1 << 20}
	o = o.withDefaults()
	tb := newClientTable(&o)
	keys := make([]clientKey, 4096)
	for i := range keys {
		keys[i], _ = tb.keyOf(&net.TCPAddr{IP: net.IPv4(10, 0, byte(i>>8), byte(i)), Port: 1})
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			k := keys[i%len(keys)]
			now := int64(i) * 1000
			if tb.admit(k, now) == clientAdmitted {
				tb.release(k, now)
			}
			i++
		}
	})
}

// TestClientTableMemory reports the heap a tracked client costs (run with
// -v); it asserts only that dropping them gives the memory back.
func TestClientTableMemory(t *testing.T) {
	const n = 100_000
	o := Options{MaxConnsPerClient: 10}
	o = o.withDefaults()
	tb := newClientTable(&o)
	keys := make([]clientKey, n)
	for i := range keys {
		keys[i], _ = tb.keyOf(&net.TCPAddr{IP: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)), Port: 1})
	}
	var before, during, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, k := range keys {
		tb.admit(k, 0)
	}
	runtime.GC()
	runtime.ReadMemStats(&during)
	for _, k := range keys {
		tb.release(k, 0)
	}
	tb.sweep(0) // moves the emptied maps into small ones
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(during.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%d clients tracked: %.0f B of heap each; after they left: %d B kept", n, per, int64(after.HeapAlloc)-int64(before.HeapAlloc))
	if tb.tracked.Load() != 0 || after.HeapAlloc > before.HeapAlloc+uint64(n*per/4) {
		t.Errorf("after every client left: %d tracked, heap %d B above the start", tb.tracked.Load(), int64(after.HeapAlloc)-int64(before.HeapAlloc))
	}
}
