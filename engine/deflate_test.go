package engine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/flate"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Tests of permessage-deflate in the engine (deflate.go): the context
// takeover budget, broadcast compressing once, writes from many goroutines
// on a connection that keeps its context, the memory an idle connection
// costs with compression on and off, and compression throughput. The
// protocol itself (every parameter, every size, the error codes) is tested
// end to end in conformance/autobahn12_13_test.go.

// dflHandler echoes messages and reports opens and closes.
type dflHandler struct {
	handler.Base
	opened chan handler.Conn
	closed chan struct{}
	echo   bool
}

func newDflHandler(echo bool) *dflHandler {
	return &dflHandler{opened: make(chan handler.Conn, 4096), closed: make(chan struct{}, 4096), echo: echo}
}

func (h *dflHandler) OnOpen(c handler.Conn) { h.opened <- c }
func (h *dflHandler) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	if h.echo {
		_ = c.WriteMessage(op, data)
	}
}
func (h *dflHandler) OnClose(handler.Conn, error) { h.closed <- struct{}{} }

func dflStart(t testing.TB, h handler.Handler, opts Options) *Server {
	t.Helper()
	opts.Addr = "127.0.0.1:0"
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if opts.EventLoops == 0 {
		opts.EventLoops = 2
	}
	s := New(h, opts)
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("server did not start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

// dflClient is a minimal permessage-deflate client built on the codec.
type dflClient struct {
	conn    net.Conn
	br      *bufio.Reader
	ext     string
	srvCtx  bool // the server keeps its context: decompress with hist
	inf     codec.Inflater
	hist    codec.DeflateHistory
	def     codec.Deflater
	lastRaw []byte // the last frame read, as it was on the wire
}

// dflDial connects and offers ext (none when empty). It reads the 101
// byte by byte up to the blank line, so no frame is swallowed.
func dflDial(t testing.TB, addr, ext string) *dflClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	req := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	if ext != "" {
		req += "Sec-WebSocket-Extensions: " + ext + "\r\n"
	}
	if _, err := conn.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	c := &dflClient{conn: conn, br: bufio.NewReader(conn)}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		if line == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && strings.EqualFold(k, "Sec-WebSocket-Extensions") {
			c.ext = strings.TrimSpace(v)
		}
	}
	c.srvCtx = c.ext != "" && !strings.Contains(c.ext, "server_no_context_takeover")
	t.Cleanup(func() { conn.Close() })
	return c
}

// send writes one masked message, compressed when compress is set.
func (c *dflClient) send(op codec.OpCode, msg []byte, compress, takeover bool) error {
	p, rsv := msg, byte(0)
	if compress {
		var err error
		if p, err = c.def.Deflate(nil, msg, takeover); err != nil {
			return err
		}
		rsv = 0x40
	}
	_, err := c.conn.Write(codec.AppendMaskedFrame(nil, true, op, rsv, [4]byte{9, 8, 7, 6}, p))
	return err
}

// read returns the next data message, decompressed, and whether it was.
func (c *dflClient) read(timeout time.Duration) (codec.OpCode, []byte, bool, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, false, err
	}
	n := int(h[1] & 0x7F)
	raw := append([]byte(nil), h[:]...)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(c.br, e[:]); err != nil {
			return 0, nil, false, err
		}
		n = int(binary.BigEndian.Uint16(e[:]))
		raw = append(raw, e[:]...)
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(c.br, e[:]); err != nil {
			return 0, nil, false, err
		}
		n = int(binary.BigEndian.Uint64(e[:]))
		raw = append(raw, e[:]...)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return 0, nil, false, err
	}
	c.lastRaw = append(raw, p...)
	op := codec.OpCode(h[0] & 0x0F)
	if h[0]&0x80 == 0 || h[0]&0x30 != 0 {
		return op, nil, false, fmt.Errorf("unexpected frame header %#x (the server sends whole messages)", h[0])
	}
	if h[0]&0x40 == 0 {
		return op, p, false, nil
	}
	if c.ext == "" || op.IsControl() {
		return op, nil, true, fmt.Errorf("RSV1 on %v without permessage-deflate or on a control frame", op)
	}
	var dict []byte
	if c.srvCtx {
		dict = c.hist.Bytes()
	}
	out, err := c.inf.Inflate(nil, p, dict, -1)
	if err != nil {
		return op, nil, true, err
	}
	c.hist.Add(out)
	return op, out, true, nil
}

// TestDeflateCostEstimates checks what the budget charges a
// context-takeover connection against what its state really allocates once
// both directions have been used: the connDeflate, the end of what it sent
// (TakeoverWindow bytes) and the window of what it received (32 KiB).
// Compression itself allocates nothing per connection: the loop's
// compressor is primed with the sent history (codec's
// TestDeflateDictAllocs).
func TestDeflateCostEstimates(t *testing.T) {
	msg := dflPayload(40 << 10) // past both windows
	for _, window := range []int{0, 1 << 10, 16 << 10, codec.DeflateWindow} {
		o := &Deflate{TakeoverWindow: window}
		const runs = 64
		keep := make([]*connDeflate, 0, runs)
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for i := 0; i < runs; i++ {
			// As negotiateDeflate, writeDeflate and deliverCompressed
			// build it.
			cd := &connDeflate{serverTakeover: true, clientTakeover: true, sent: codec.DeflateHistory{Size: o.window()}}
			cd.sent.Add(msg[:100])
			cd.sent.Add(msg)
			cd.hist.Add(msg[:100])
			cd.hist.Add(msg)
			keep = append(keep, cd)
		}
		runtime.ReadMemStats(&m1)
		runtime.KeepAlive(keep)
		got, est := int64(m1.TotalAlloc-m0.TotalAlloc)/runs, o.windowCost()+deflateHistoryCost
		t.Logf("TakeoverWindow %d: a takeover connection allocates %d bytes, estimate %d", window, got, est)
		if got < est*95/100 || got > est*105/100 {
			t.Errorf("TakeoverWindow %d: estimate %d is off the measured %d by more than 5%%", window, est, got)
		}
	}
}

// TestDeflateBudget: takeover is granted while the budget lasts, refused
// with both no_context_takeover parameters past it, and given back when the
// connection closes.
func TestDeflateBudget(t *testing.T) {
	h := newDflHandler(true)
	one := (&Deflate{}).windowCost() + deflateHistoryCost
	// Room for one full reservation and one history, not two full ones.
	s := dflStart(t, h, Options{Deflate: Deflate{Enabled: true, ContextTakeoverBudget: one + deflateHistoryCost}})
	addr := s.Addr().String()

	a := dflDial(t, addr, "permessage-deflate; client_max_window_bits")
	<-h.opened
	if a.ext != "permessage-deflate" {
		t.Fatalf("first connection: %q, want context takeover", a.ext)
	}
	b := dflDial(t, addr, "permessage-deflate")
	<-h.opened
	if b.ext != "permessage-deflate; server_no_context_takeover; client_no_context_takeover" {
		t.Fatalf("second connection past the budget: %q", b.ext)
	}
	// Only the history fits: a client that asked for
	// server_no_context_takeover needs no compressor.
	c := dflDial(t, addr, "permessage-deflate; server_no_context_takeover")
	<-h.opened
	if c.ext != "permessage-deflate; server_no_context_takeover" {
		t.Fatalf("third connection (history only): %q", c.ext)
	}
	st := s.Stats().Deflate
	if st.Negotiated != 3 || st.Takeover != 2 || st.Downgraded != 1 || st.BudgetUsed != one+deflateHistoryCost {
		t.Fatalf("stats %+v", st)
	}
	// All three work, with context where granted: the same message
	// twice, the second time much smaller on the wire with takeover.
	msg := []byte(strings.Repeat(`{"event":"tick","symbol":"WSLP"}`, 5))
	for _, cl := range []*dflClient{a, b, c} {
		var sizes []int
		for i := 0; i < 3; i++ {
			if err := cl.send(codec.OpText, msg, true, !strings.Contains(cl.ext, "client_no_context_takeover")); err != nil {
				t.Fatal(err)
			}
			_, got, comp, err := cl.read(5 * time.Second)
			if err != nil || !bytes.Equal(got, msg) || !comp {
				t.Fatalf("%q: echo %q compressed=%v: %v", cl.ext, got, comp, err)
			}
			sizes = append(sizes, len(cl.lastRaw))
		}
		if cl.srvCtx && sizes[2] >= sizes[0]/2 {
			t.Errorf("%q: echo sizes %v: the server did not use its context", cl.ext, sizes)
		}
	}
	a.conn.Close()
	<-h.closed
	if st := s.Stats().Deflate; st.Takeover != 1 || st.BudgetUsed != deflateHistoryCost {
		t.Fatalf("after a takeover connection closed: %+v", st)
	}
	d := dflDial(t, addr, "permessage-deflate")
	<-h.opened
	if d.ext != "permessage-deflate" {
		t.Fatalf("after the budget came back: %q", d.ext)
	}
}

// TestDeflateBroadcast: a broadcast is compressed once for every receiver
// without server context takeover (they get the very same bytes), against
// its own history for a receiver that keeps its context, and not at all for
// one that did not negotiate the extension.
func TestDeflateBroadcast(t *testing.T) {
	h := newDflHandler(false)
	s := dflStart(t, h, Options{EventLoops: 2, Deflate: Deflate{Enabled: true, ContextTakeoverBudget: 4 << 20}})
	addr := s.Addr().String()
	offers := []string{
		"permessage-deflate; server_no_context_takeover",
		"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
		"permessage-deflate; server_max_window_bits=15; server_no_context_takeover",
		"permessage-deflate", // takeover
		"",                   // no extension
		"permessage-deflate; server_max_window_bits=8", // compresses up to 256 bytes only
	}
	var clients []*dflClient
	var conns []handler.Conn
	for _, o := range offers {
		clients = append(clients, dflDial(t, addr, o))
		conns = append(conns, <-h.opened)
	}
	msgs := [][]byte{
		[]byte(strings.Repeat("broadcast to everyone, compressed once. ", 50)),
		[]byte(strings.Repeat("broadcast to everyone, compressed once. ", 49) + "second"),
		[]byte("short"),
	}
	for i, m := range msgs {
		f := codec.NewPreparedFrame(codec.OpText, m)
		switch i {
		case 0:
			s.BroadcastAll(f)
		case 1:
			s.Broadcast(conns, f)
		case 2:
			var wg sync.WaitGroup
			for _, c := range conns {
				wg.Add(1)
				go func() { defer wg.Done(); _ = c.WritePrepared(f) }()
			}
			wg.Wait()
		}
		var shared []byte
		for j, cl := range clients {
			_, got, comp, err := cl.read(5 * time.Second)
			if err != nil || !bytes.Equal(got, m) {
				t.Fatalf("message %d, client %q: %d bytes, %v", i, offers[j], len(got), err)
			}
			wantComp := cl.ext != "" && len(m) >= DefaultDeflateThreshold && !(strings.Contains(cl.ext, "=8") && len(m) > 256)
			if comp != wantComp {
				t.Fatalf("message %d, client %q: compressed=%v, want %v", i, offers[j], comp, wantComp)
			}
			if comp && !cl.srvCtx {
				if shared == nil {
					shared = cl.lastRaw
				} else if !bytes.Equal(shared, cl.lastRaw) {
					t.Fatalf("message %d: receivers without context got different compressed frames", i)
				}
			}
		}
	}
}

// TestDeflateWritersInOrder: several goroutines write to a connection that
// keeps its compression context; every message must arrive decodable with
// the context of the ones before it, each goroutine's in its order.
func TestDeflateWritersInOrder(t *testing.T) {
	h := newDflHandler(false)
	s := dflStart(t, h, Options{Deflate: Deflate{Enabled: true, Threshold: -1, ContextTakeoverBudget: 4 << 20}})
	cl := dflDial(t, s.Addr().String(), "permessage-deflate")
	conn := <-h.opened
	if !cl.srvCtx {
		t.Fatalf("no takeover: %q", cl.ext)
	}
	const writers, each = 4, 50
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				// Over 128 bytes: a shorter message is Huffman-coded
				// alone, without the context this test is about.
				msg := fmt.Sprintf(`{"writer":%d,"seq":%d,"text":"%s","pad":"%s"}`, w, i, strings.Repeat("the same words, ", 8), strings.Repeat("x", i*7))
				if err := conn.WriteMessage(codec.OpText, []byte(msg)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	next := make([]int, writers)
	for n := 0; n < writers*each; n++ {
		_, got, comp, err := cl.read(10 * time.Second)
		if err != nil || !comp {
			t.Fatalf("message %d: compressed=%v %v", n, comp, err)
		}
		var w, i int
		if _, err := fmt.Sscanf(string(got), `{"writer":%d,"seq":%d`, &w, &i); err != nil {
			t.Fatalf("message %d garbled: %q", n, got)
		}
		if i != next[w] {
			t.Fatalf("writer %d: seq %d, want %d", w, i, next[w])
		}
		next[w]++
	}
	wg.Wait()
}

// dflStream receives messages in chunks.
type dflStream struct {
	handler.Base
	got chan string
}

func (d *dflStream) OnMessageChunk(c handler.Conn, op handler.Op, chunk []byte, first, final bool) {
	d.got <- fmt.Sprintf("%v %v %v %s", op, first, final, chunk)
}

// TestDeflateStreamHandler: a compressed message reaches a StreamHandler
// whole, as one chunk that is first and final.
func TestDeflateStreamHandler(t *testing.T) {
	h := &dflStream{got: make(chan string, 4)}
	s := dflStart(t, h, Options{Deflate: Deflate{Enabled: true}})
	cl := dflDial(t, s.Addr().String(), "permessage-deflate")
	msg := strings.Repeat("stream ", 40)
	if err := cl.send(codec.OpText, []byte(msg), true, false); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-h.got:
		if got != "text true true "+msg {
			t.Fatalf("chunk %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no chunk")
	}
}

// heapAfterGC returns the live heap.
func heapAfterGC() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// dflOpen opens a raw connection with the offer and, when active, sends
// one compressed message and waits for the start of its echo.
func dflOpen(t testing.TB, addr, offer string, active bool) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	if offer != "" {
		req += "Sec-WebSocket-Extensions: " + offer + "\r\n"
	}
	if _, err := c.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	var buf [512]byte
	got := 0
	for !bytes.Contains(buf[:got], []byte("\r\n\r\n")) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, err := c.Read(buf[got:])
		if err != nil {
			t.Fatal(err)
		}
		got += m
	}
	if offer != "" && !bytes.Contains(buf[:got], []byte("permessage-deflate")) {
		t.Fatalf("not negotiated: %q", buf[:got])
	}
	if active {
		var def codec.Deflater
		p, _ := def.Deflate(nil, []byte(strings.Repeat("hello, compressed world ", 20)), false)
		if _, err := c.Write(codec.AppendMaskedFrame(nil, true, codec.OpText, 0x40, [4]byte{1, 2, 3, 4}, p)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAtLeast(c, buf[:], 2); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// dflIdleHeap opens n connections with the offer, optionally exchanges one
// compressed message on each, and returns the heap growth per connection
// (server and client side, both in this process; the client side is the
// same in every variant, so differences between variants are the
// server's). One active connection per loop is opened before the baseline,
// so that the loops' own compressor and decompressor, a fixed cost, are
// not counted per connection.
func dflIdleHeap(t testing.TB, n int, opts Options, offer string, active bool) float64 {
	h := newDflHandler(true)
	opts.EventLoops = 2
	s := dflStart(t, h, opts)
	addr := s.Addr().String()
	var conns []net.Conn
	for i := 0; i < opts.EventLoops; i++ {
		conns = append(conns, dflOpen(t, addr, offer, offer != ""))
		<-h.opened
	}
	before := heapAfterGC()
	for i := 0; i < n; i++ {
		conns = append(conns, dflOpen(t, addr, offer, active))
		<-h.opened
	}
	after := heapAfterGC()
	for _, c := range conns {
		c.Close()
	}
	for range conns {
		<-h.closed
	}
	// Stop the server now, not at the end of the test, so that the next
	// variant's baseline does not include it being torn down.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Shutdown(ctx)
	return float64(after-before) / float64(n)
}

// TestDeflateIdleMemory reports the heap an idle connection costs with
// permessage-deflate off and on, for 1000 connections; and what a
// connection that keeps its compression context costs once it has used
// it. Without context takeover compression costs an idle connection
// nothing: the compressor and decompressor belong to the loops.
//
// Heap deltas are too noisy to assert in a test (a GC between two readings
// can make one negative), so this is a benchmark that reports them:
//
//	go test -run=^$ -bench=DeflateIdleMemory -benchtime=1x ./engine
func BenchmarkDeflateIdleMemory(b *testing.B) {
	const n = 1000
	on := Deflate{Enabled: true}
	take := on
	take.ContextTakeoverBudget = 1 << 40
	const m = 200
	for i := 0; i < b.N; i++ {
		off := dflIdleHeap(b, n, Options{}, "", false)
		noCtx := dflIdleHeap(b, n, Options{Deflate: on}, "permessage-deflate; client_max_window_bits", false)
		noCtxActive := dflIdleHeap(b, n, Options{Deflate: on}, "permessage-deflate; client_max_window_bits", true)
		takeIdle := dflIdleHeap(b, n, Options{Deflate: take}, "permessage-deflate", false)
		takeActive := dflIdleHeap(b, m, Options{Deflate: take}, "permessage-deflate", true)
		b.ReportMetric(off, "B/conn-off")
		b.ReportMetric(noCtx, "B/conn-nocontext")
		b.ReportMetric(noCtxActive, "B/conn-nocontext-used")
		b.ReportMetric(takeIdle, "B/conn-takeover")
		b.ReportMetric(takeActive, "B/conn-takeover-used")
		b.ReportMetric(float64(take.windowCost()+deflateHistoryCost), "B/conn-takeover-estimate")
	}
}

// dflPayload is realistic JSON text of about n bytes.
func dflPayload(n int) []byte {
	rng := rand.New(rand.NewSource(int64(n)))
	var b []byte
	for len(b) < n {
		b = fmt.Appendf(b, `{"id":%d,"user":"user%d","price":%d.%02d,"side":"%s","tags":["fx","eu"]},`, rng.Intn(1e6), rng.Intn(500), rng.Intn(1000), rng.Intn(100), [2]string{"buy", "sell"}[rng.Intn(2)])
	}
	return b[:n]
}

// BenchmarkDeflateCompress measures the loop's compressor on JSON messages
// (MB/s of uncompressed input), reset per message (no context takeover) or
// continuing (takeover), and reports the compression ratio.
//
//	go test -run - -bench DeflateCompress -benchmem ./engine
func BenchmarkDeflateCompress(b *testing.B) {
	for _, level := range []int{flate.BestSpeed, flate.DefaultCompression} {
		for _, takeover := range []bool{false, true} {
			for _, size := range []int{256, 4 << 10, 64 << 10} {
				b.Run(fmt.Sprintf("level=%d/takeover=%v/size=%d", level, takeover, size), func(b *testing.B) {
					msg := dflPayload(size)
					d := codec.Deflater{Level: level}
					buf := make([]byte, 0, 2*size+64)
					var out int
					b.SetBytes(int64(size))
					b.ReportAllocs()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						c, err := d.Deflate(buf[:0], msg, takeover)
						if err != nil {
							b.Fatal(err)
						}
						out = len(c)
					}
					b.ReportMetric(float64(out)/float64(size), "ratio")
				})
			}
		}
	}
}

// BenchmarkDeflateTakeoverWindow is the choice behind DefaultTakeoverWindow:
// a stream of different JSON messages of one shape sent on one takeover
// connection, compressed by a compressor of its own that continues the
// stream ("own", about 0.8 MB per connection) or by a shared one primed
// with the last W bytes sent ("dict-W", W bytes per connection). It reports
// ns per message and the compression ratio.
//
//	go test -run=^$ -bench=DeflateTakeoverWindow ./engine
func BenchmarkDeflateTakeoverWindow(b *testing.B) {
	for _, size := range []int{256, 1 << 10, 16 << 10} {
		// More distinct messages than a 32 KiB window holds, so that
		// no variant sees an exact repeat.
		msgs := make([][]byte, 0, 256)
		for i := range cap(msgs) {
			msgs = append(msgs, dflPayload(size + i)[:size])
		}
		for _, window := range []int{0, 1 << 10, 2 << 10, 4 << 10, 8 << 10, codec.DeflateWindow} {
			name := "own"
			if window > 0 {
				name = fmt.Sprintf("dict-%d", window)
			}
			b.Run(fmt.Sprintf("size=%d/%s", size, name), func(b *testing.B) {
				var d codec.Deflater
				h := codec.DeflateHistory{Size: window}
				buf := make([]byte, 0, 2*size+64)
				var in, out int64
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for i := 0; i < len(msgs); i++ { // warm: fill the windows
					h.Add(msgs[i])
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					m := msgs[i%len(msgs)]
					var c []byte
					var err error
					if window == 0 {
						c, err = d.Deflate(buf[:0], m, true)
					} else {
						c, err = d.DeflateDict(buf[:0], m, h.Bytes())
						h.Add(m)
					}
					if err != nil {
						b.Fatal(err)
					}
					in += int64(len(m))
					out += int64(len(c))
				}
				b.ReportMetric(float64(out)/float64(in), "ratio")
			})
		}
	}
}

// BenchmarkDeflateDecompress measures the loop's decompressor (MB/s of
// decompressed output).
func BenchmarkDeflateDecompress(b *testing.B) {
	for _, size := range []int{256, 4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			msg := dflPayload(size)
			var d codec.Deflater
			c, _ := d.Deflate(nil, msg, false)
			var inf codec.Inflater
			out := make([]byte, 0, size+1)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				got, err := inf.Inflate(out[:0], c, nil, int64(size))
				if err != nil || len(got) != size {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDeflateEcho is the end-to-end cost: a client sends a compressed
// JSON message, the server decompresses, the handler echoes, the server
// compresses, the client decompresses; MB/s of message payload, compared
// with the same echo without compression.
func BenchmarkDeflateEcho(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		for _, mode := range []string{"off", "no-takeover", "takeover"} {
			b.Run(fmt.Sprintf("size=%d/%s", size, mode), func(b *testing.B) {
				opts := Options{EventLoops: 1}
				offer := ""
				switch mode {
				case "no-takeover":
					opts.Deflate = Deflate{Enabled: true}
					offer = "permessage-deflate"
				case "takeover":
					opts.Deflate = Deflate{Enabled: true, ContextTakeoverBudget: 1 << 30}
					offer = "permessage-deflate"
				}
				s := dflStart(b, newDflHandler(true), opts)
				cl := dflDial(b, s.Addr().String(), offer)
				msg := dflPayload(size)
				compress := offer != ""
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if err := cl.send(codec.OpText, msg, compress, cl.srvCtx); err != nil {
						b.Fatal(err)
					}
					if _, got, _, err := cl.read(10 * time.Second); err != nil || len(got) != size {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestDeflateWriterSkipsBusyCompressor: a goroutine writing to a
// connection whose loop's compressor is busy compresses with a spare, and
// does not wait; the spare is kept for the next such writer; what it
// compressed decompresses right, with context takeover and without.
func TestDeflateWriterSkipsBusyCompressor(t *testing.T) {
	for _, ext := range []string{"permessage-deflate; server_no_context_takeover", "permessage-deflate"} {
		t.Run(ext, func(t *testing.T) {
			h := newDflHandler(false)
			s := dflStart(t, h, Options{EventLoops: 1, Deflate: Deflate{Enabled: true, Threshold: -1, ContextTakeoverBudget: 4 << 20}})
			cl := dflDial(t, s.Addr().String(), ext)
			conn := <-h.opened
			lp := conn.(*wsConn).lp
			lp.defl.mu.Lock() // the loop's compressor is busy
			unlocked := false
			defer func() {
				if !unlocked {
					lp.defl.mu.Unlock()
				}
			}()
			msgs := []string{strings.Repeat("a spare compressor, ", 20), strings.Repeat("the same spare again, ", 20), strings.Repeat("prepared, ", 30)}
			done := make(chan error, 1)
			go func() {
				for _, m := range msgs[:2] {
					if err := conn.WriteMessage(codec.OpText, []byte(m)); err != nil {
						done <- err
						return
					}
				}
				// A prepared frame's compressed variant too (compressed
				// here without context takeover, else on the loop).
				done <- conn.WritePrepared(codec.NewPreparedFrame(codec.OpText, []byte(msgs[2])))
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the writer waited for the loop's busy compressor")
			}
			if n := s.defl.spareMade.Load(); n != 1 {
				t.Fatalf("%d spare compressors made for one writer at a time, want 1", n)
			}
			lp.defl.mu.Unlock()
			unlocked = true
			msgs = append(msgs, strings.Repeat("the loop's own again, ", 20))
			if err := conn.WriteMessage(codec.OpText, []byte(msgs[3])); err != nil {
				t.Fatal(err)
			}
			for i, want := range msgs {
				_, got, comp, err := cl.read(10 * time.Second)
				if err != nil || !comp || string(got) != want {
					t.Fatalf("message %d: compressed=%v err=%v, got %q, want %q", i, comp, err, got, want)
				}
			}
		})
	}
}
