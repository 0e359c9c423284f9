package engine_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// dialSmallWindow upgrades a connection whose receive buffer is set small
// before connect, so that the kernel absorbs little of what the server
// sends to a client that does not read.
func dialSmallWindow(t *testing.T, addr, path string) *wsClient {
	t.Helper()
	d := net.Dialer{Timeout: readTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = setRcvBuf(fd, 4096) }) // platform_*_test.go
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := upgrade(conn, addr, path)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.conn.Close() })
	return c
}

// A client that never reads is dropped by the outbound cap: WriteMessage
// returns ErrSlowConsumer, OnClose reports it, the counter says so, and a
// client on the same event loop keeps being served meanwhile.
//
// The slow client asks for each 64 KiB message with a small frame, and the
// server writes it from OnMessage, one request per round trip of the fast
// client, so every message reaches the kernel before the next is queued:
// the cap is hit because the client's socket is full, not because a burst
// outran the loop (see TestBurstToFastReader).
func TestSlowConsumer(t *testing.T) {
	h := newRecorder()
	type result struct {
		err    error
		writes int
	}
	res := make(chan result, 1)
	writes := 0 // touched only on the slow connection's loop
	big := bytes.Repeat([]byte{1}, 64<<10)
	h.message = func(c handler.Conn, op handler.Op, data []byte) {
		if c.Path() != "/slow" {
			_ = c.WriteMessage(op, data)
			return
		}
		if writes < 0 {
			return
		}
		if err := c.WriteMessage(handler.Binary, big); err != nil {
			res <- result{err, writes}
			writes = -1
			return
		}
		writes++
	}
	srv, _ := startServer(t, h, engine.Options{EventLoops: 1, MaxOutboundBytes: 256 << 10})
	addr := srv.Addr().String()
	fast := dialWS(t, addr, "/fast")
	fast.roundTrip(t, "warm up")
	slow := dialSmallWindow(t, addr, "/slow") // never reads

	// Each round asks the slow connection for one more message, then
	// round-trips on the fast one, which is served by the same loop after
	// the request (both are read in one epoll batch at worst).
	var r result
	var worst time.Duration
	for i := 0; i < 2000 && r.err == nil; i++ {
		slowErr := slow.send(codec.OpText, []byte("more"))
		start := time.Now()
		fast.roundTrip(t, "ping "+strconv.Itoa(i))
		if d := time.Since(start); d > worst {
			worst = d
		}
		if slowErr != nil { // the server dropped it: the result is on its way
			select {
			case r = <-res:
			case <-time.After(readTimeout):
				t.Fatalf("the slow connection broke (%v) but no write failed", slowErr)
			}
		}
		select {
		case r = <-res:
		default:
		}
	}
	if r.err == nil {
		t.Fatal("the slow consumer was not dropped after 2000 messages of 64 KiB")
	}
	if !errors.Is(r.err, handler.ErrSlowConsumer) {
		t.Fatalf("after %d writes of 64 KiB: %v, want ErrSlowConsumer", r.writes, r.err)
	}
	t.Logf("dropped after %d writes of 64 KiB; slowest echo on the same loop meanwhile %v", r.writes, worst)
	if r.writes < 4 {
		t.Errorf("dropped after %d writes: the kernel and the 256 KiB cap should have taken more", r.writes)
	}
	ev := h.waitClose(t)
	if ev.c.Path() != "/slow" || !errors.Is(ev.err, handler.ErrSlowConsumer) {
		t.Errorf("OnClose(%s, %v), want /slow with ErrSlowConsumer", ev.c.Path(), ev.err)
	}
	if err := ev.c.WriteMessage(handler.Binary, []byte("x")); !errors.Is(err, handler.ErrClosed) {
		t.Errorf("write after the drop: %v", err)
	}
	for i := 0; i < 10; i++ {
		fast.roundTrip(t, "after "+strconv.Itoa(i))
	}
	if st := srv.Stats(); st.SlowConsumers != 1 || st.Open != 1 || st.ClosesByCode[codec.ClosePolicyViolation] != 1 {
		t.Errorf("Stats: SlowConsumers %d, Open %d, ClosesByCode %v; want 1, 1 and one 1008", st.SlowConsumers, st.Open, st.ClosesByCode)
	}
	h.check(t)
}

// Broadcast and BroadcastAll deliver the frame to every chosen client
// exactly once, across event loops.
func TestBroadcast(t *testing.T) {
	const n = 200
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{EventLoops: 2})
	addr := srv.Addr().String()
	clients := make(map[string]*wsClient, n)
	for i := 0; i < n; i++ {
		c := dialWS(t, addr, "/"+strconv.Itoa(i))
		clients["/"+strconv.Itoa(i)] = c
	}
	conns := waitN(t, h.opened, n, readTimeout)
	var even []handler.Conn
	for _, c := range conns {
		i, _ := strconv.Atoi(c.Path()[1:])
		if i%2 == 0 {
			even = append(even, c)
		}
	}

	big := bytes.Repeat([]byte("B"), 70000) // a 64-bit length header
	srv.Broadcast(conns, codec.NewPreparedFrame(codec.OpText, []byte("to everyone")))
	srv.Broadcast(even, codec.NewPreparedFrame(codec.OpBinary, big))
	srv.BroadcastAll(codec.NewPreparedFrame(codec.OpText, []byte("to all")))

	for path, c := range clients {
		i, _ := strconv.Atoi(path[1:])
		c.expect(t, codec.OpText, "to everyone")
		if i%2 == 0 {
			c.expect(t, codec.OpBinary, string(big))
		}
		c.expect(t, codec.OpText, "to all")
		// Nothing else was queued before the answer to this ping: no
		// duplicate.
		if err := c.send(codec.OpPing, []byte("end")); err != nil {
			t.Fatal(err)
		}
		c.expect(t, codec.OpPong, "end")
	}
	if st := srv.Stats(); st.MessagesOut != 2*n+n/2 {
		t.Errorf("MessagesOut = %d, want %d", st.MessagesOut, 2*n+n/2)
	}
	h.check(t)
}

// Shutdown sends what was queued, then 1001 to everyone, refuses newcomers
// with 503 during the drain, waits for the answers, and returns nil.
func TestShutdownDrains(t *testing.T) {
	const n, pre = 50, 20
	h := newRecorder()
	srv, served := startServer(t, h, engine.Options{EventLoops: 2})
	addr := srv.Addr().String()
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = dialWS(t, addr, "/"+strconv.Itoa(i))
	}
	conns := waitN(t, h.opened, n, readTimeout)

	shut := make(chan error, 1)
	go func() {
		for _, c := range conns {
			for i := 0; i < pre; i++ {
				if err := c.WriteMessage(handler.Text, []byte(c.Path()+" pre "+strconv.Itoa(i))); err != nil {
					shut <- err
					return
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()

	for i, c := range clients {
		for j := 0; j < pre; j++ {
			c.expect(t, codec.OpText, "/"+strconv.Itoa(i)+" pre "+strconv.Itoa(j))
		}
		f := c.expectClose(t, codec.CloseGoingAway)
		if f.reason != "server shutting down" {
			t.Errorf("close reason %q", f.reason)
		}
	}
	// Everyone was told and nobody answered yet: the drain is on.
	late, err := dialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer late.conn.Close()
	if err := late.request(upgradeRequest(addr, "/late")); err != nil {
		t.Fatalf("late client: %v", err)
	}
	if late.resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(late.body, "shutting down") {
		t.Errorf("late client got %s %q, want 503", late.resp.Status, late.body)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v before the clients answered", err)
	default:
	}

	for _, c := range clients {
		if err := c.sendClose(codec.CloseGoingAway, ""); err != nil {
			t.Fatal(err)
		}
		c.expectEOF(t, readTimeout)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after every client answered")
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
	case <-time.After(readTimeout):
		t.Fatal("the server did not stop")
	}
	for _, ev := range waitN(t, h.closed, n, readTimeout) {
		var ce *handler.CloseError
		if !errors.As(ev.err, &ce) || ce.Code != codec.CloseGoingAway || ce.Remote {
			t.Errorf("OnClose(%s): %v, want the server's 1001", ev.c.Path(), ev.err)
		}
	}
	if st := srv.Stats(); st.Rejected["503 shutting down"] != 1 || st.ClosesByCode[codec.CloseGoingAway] != n {
		t.Errorf("Stats: Rejected %v, ClosesByCode %v", st.Rejected, st.ClosesByCode)
	}
	h.check(t)
}

// When the drain's context ends while a client never answers, Shutdown
// returns the context's error and the server still stops.
func TestShutdownDeadline(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	srv, served := startServer(t, h, engine.Options{})
	addr := srv.Addr().String()
	silent := dialWS(t, addr, "/silent")
	polite := dialWS(t, addr, "/polite")
	waitN(t, h.opened, 2, readTimeout)

	const wait = 300 * time.Millisecond
	shut := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	polite.expectClose(t, codec.CloseGoingAway)
	if err := polite.sendClose(codec.CloseGoingAway, ""); err != nil {
		t.Fatal(err)
	}
	polite.expectEOF(t, readTimeout)
	silent.expectClose(t, codec.CloseGoingAway)

	select {
	case err := <-shut:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
		}
		if el := time.Since(start); el < wait || el > wait+3*time.Second {
			t.Errorf("Shutdown returned after %v", el)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	select {
	case <-served:
	case <-time.After(readTimeout):
		t.Fatal("the server did not stop")
	}
	// The silent client's connection was closed by the stop.
	if err := silent.waitEOF(readTimeout); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("silent client: %v", err)
	}
	waitN(t, h.closed, 2, readTimeout)
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("the server still accepts connections after Shutdown")
	}
	h.check(t)
}

// After a scripted exchange the counters say what happened.
func TestStats(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	h.message = func(c handler.Conn, op handler.Op, data []byte) {
		if string(data) == "close me" {
			_ = c.Close(4000, "x")
			return
		}
		_ = c.WriteMessage(op, data)
	}
	srv, _ := startServer(t, h, engine.Options{})
	addr := srv.Addr().String()
	c1 := dialWS(t, addr, "/")
	c2 := dialWS(t, addr, "/")
	for _, m := range []string{"a", "bb", "ccc"} {
		c1.roundTrip(t, m)
	}
	waitN(t, h.opened, 2, readTimeout)
	if st := srv.Stats(); st.Open != 2 || st.Conns != 2 || st.Upgraded != 2 || st.Accepted != 2 {
		t.Errorf("while open: Open %d Conns %d Upgraded %d Accepted %d", st.Open, st.Conns, st.Upgraded, st.Accepted)
	}
	if err := c2.send(codec.OpBinary, []byte("close me")); err != nil {
		t.Fatal(err)
	}
	c2.expectClose(t, 4000)
	if err := c2.sendClose(4000, ""); err != nil {
		t.Fatal(err)
	}
	c2.expectEOF(t, readTimeout)
	c1.closeCleanly(t)
	waitN(t, h.closed, 2, readTimeout)

	st := srv.Stats()
	if st.Open != 0 || st.Upgraded != 2 || st.Accepted != 2 {
		t.Errorf("after: Open %d Upgraded %d Accepted %d", st.Open, st.Upgraded, st.Accepted)
	}
	if st.MessagesIn != 4 || st.BytesIn != 1+2+3+8 {
		t.Errorf("MessagesIn %d BytesIn %d, want 4 and 14", st.MessagesIn, st.BytesIn)
	}
	if st.MessagesOut != 3 {
		t.Errorf("MessagesOut %d, want 3 (the echoes)", st.MessagesOut)
	}
	if st.BytesOut < 3*2+1+2+3 {
		t.Errorf("BytesOut %d, want at least the 12 bytes of the echo frames", st.BytesOut)
	}
	if len(st.ClosesByCode) != 2 || st.ClosesByCode[4000] != 1 || st.ClosesByCode[1000] != 1 {
		t.Errorf("ClosesByCode %v, want 4000 and 1000 once", st.ClosesByCode)
	}
	if len(st.Rejected) != 0 || st.SlowConsumers != 0 || st.Timeouts != 0 {
		t.Errorf("Rejected %v SlowConsumers %d Timeouts %d", st.Rejected, st.SlowConsumers, st.Timeouts)
	}
}

// streamer receives messages in chunks.
type streamer struct {
	*recorder
	mu     sync.Mutex
	chunks []chunk
	done   chan []chunk
}

type chunk struct {
	op           handler.Op
	data         []byte
	first, final bool
}

func (s *streamer) OnMessageChunk(c handler.Conn, op handler.Op, data []byte, first, final bool) {
	s.mu.Lock()
	s.chunks = append(s.chunks, chunk{op, append([]byte(nil), data...), first, final})
	var msg []chunk
	if final {
		msg, s.chunks = s.chunks, nil
	}
	s.mu.Unlock()
	if final {
		s.done <- msg
	}
}

// A StreamHandler receives a large fragmented message as several chunks,
// first and final set on the first and last, and never gets OnMessage.
func TestStreamHandler(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	rec.message = func(c handler.Conn, op handler.Op, data []byte) {
		rec.problem("OnMessage called on a StreamHandler")
	}
	s := &streamer{recorder: rec, done: make(chan []chunk, 4)}
	srv, _ := startServer(t, s, engine.Options{})
	c := dialWS(t, srv.Addr().String(), "/")

	msg := make([]byte, 1<<20)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	const frag = 256 << 10
	var wire []byte
	for off := 0; off < len(msg); off += frag {
		op := codec.OpBinary
		if off > 0 {
			op = codec.OpContinuation
		}
		wire = codec.AppendMaskedFrame(wire, off+frag >= len(msg), op, 0, randomMask(), msg[off:off+frag])
	}
	go func() { _, _ = c.conn.Write(wire) }()

	var got []chunk
	select {
	case got = <-s.done:
	case <-time.After(readTimeout):
		t.Fatal("the message did not complete")
	}
	if len(got) < 4 {
		t.Errorf("%d chunks, want several for a 1 MiB message in 256 KiB frames", len(got))
	}
	var all []byte
	for i, ch := range got {
		if ch.op != handler.Binary || ch.first != (i == 0) || ch.final != (i == len(got)-1) {
			t.Errorf("chunk %d of %d: op %v first %v final %v", i, len(got), ch.op, ch.first, ch.final)
		}
		all = append(all, ch.data...)
	}
	if !bytes.Equal(all, msg) {
		t.Errorf("chunks add up to %d bytes, not the message sent", len(all))
	}

	// A small message is one chunk with both flags.
	if err := c.send(codec.OpText, []byte("small")); err != nil {
		t.Fatal(err)
	}
	select {
	case got = <-s.done:
	case <-time.After(readTimeout):
		t.Fatal("the small message did not arrive")
	}
	if len(got) != 1 || !got[0].first || !got[0].final || string(got[0].data) != "small" || got[0].op != handler.Text {
		t.Errorf("small message as %+v", got)
	}
	if st := srv.Stats(); st.MessagesIn != 2 || st.BytesIn != 1<<20+5 {
		t.Errorf("MessagesIn %d BytesIn %d", st.MessagesIn, st.BytesIn)
	}
	rec.check(t)
}

// Broadcasts queued while the loop is busy are written as one batch: every
// connection still gets every frame meant for it, once and in order, a
// frame for others is not sent to it, and frames of one batch do not count
// against each other under the outbound cap (no client here reads slowly).
func TestBroadcastBatch(t *testing.T) {
	const n = 20
	h := newRecorder()
	entered, release := make(chan struct{}), make(chan struct{})
	h.message = func(c handler.Conn, op handler.Op, data []byte) {
		if string(data) == "hold" {
			close(entered)
			<-release // keep the loop busy while the test queues broadcasts
		}
	}
	big := bytes.Repeat([]byte("x"), 3000)
	srv, _ := startServer(t, h, engine.Options{EventLoops: 1, MaxOutboundBytes: 4096})
	addr := srv.Addr().String()
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = dialWS(t, addr, "/"+strconv.Itoa(i))
	}
	conns := waitN(t, h.opened, n, readTimeout)
	var odd []handler.Conn
	for _, c := range conns {
		if i, _ := strconv.Atoi(c.Path()[1:]); i%2 == 1 {
			odd = append(odd, c)
		}
	}
	if err := clients[0].send(codec.OpText, []byte("hold")); err != nil {
		t.Fatal(err)
	}
	<-entered
	srv.Broadcast(conns, codec.NewPreparedFrame(codec.OpBinary, big))
	srv.BroadcastAll(codec.NewPreparedFrame(codec.OpText, []byte("second")))
	srv.Broadcast(odd, codec.NewPreparedFrame(codec.OpBinary, big))
	srv.BroadcastAll(codec.NewPreparedFrame(codec.OpText, []byte("last")))
	close(release)

	for i, c := range clients {
		c.expect(t, codec.OpBinary, string(big))
		c.expect(t, codec.OpText, "second")
		if i%2 == 1 {
			c.expect(t, codec.OpBinary, string(big))
		}
		c.expect(t, codec.OpText, "last")
		if err := c.send(codec.OpPing, []byte("end")); err != nil {
			t.Fatal(err)
		}
		c.expect(t, codec.OpPong, "end")
	}
	st := srv.Stats()
	if want := int64(3*n + n/2); st.MessagesOut != want || st.SlowConsumers != 0 {
		t.Errorf("MessagesOut %d, SlowConsumers %d; want %d, 0", st.MessagesOut, st.SlowConsumers, want)
	}
	h.check(t)
}
