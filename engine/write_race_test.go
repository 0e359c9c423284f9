package engine_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// Messages stay whole under concurrent writers (RFC 6455 §5.4: the
// fragments of a message may be interleaved only with control frames).
//
// Many goroutines drive one connection at once: WriteMessage, NextWriter
// with several fragments, WritePrepared, Broadcast, BroadcastAll, Ping, an
// echo written from the loop's own callback, and for some seeds a Close at
// a random moment. A strict reader written here from the RFC (not the
// codec under test) checks every frame as it is on the wire: no data frame
// starts inside an open message, no continuation outside one, every message
// arrives whole and intact (one cut short by our close counts as whole),
// and each goroutine's messages arrive in the order of its calls. It runs
// on the server road and the client road (masked frames), without
// permessage-deflate, with it, and with context takeover (where the
// compressed messages must also arrive in the order they were compressed,
// or the reader's window goes wrong and decompression fails).
func TestMessagesStayWhole(t *testing.T) {
	seeds := 12
	if testing.Short() {
		seeds = 2
	}
	for _, road := range []string{"server", "client"} {
		for _, dfl := range []string{"plain", "deflate", "takeover"} {
			if road == "client" && dfl == "takeover" {
				continue // the client offers no context takeover
			}
			t.Run(road+"/"+dfl, func(t *testing.T) {
				t.Parallel()
				for seed := range seeds {
					runWholeMessages(t, uint64(seed), road, dfl)
					if t.Failed() {
						t.Logf("failed with seed %d", seed)
						return
					}
				}
			})
		}
	}
}

// echoID is the writer id of the messages the handler echoes from its
// callback on the loop.
const echoID = 999

// wholeEcho echoes what the peer sends from OnMessage, on the loop, and
// hands the connection to the test when it opens.
type wholeEcho struct {
	handler.Base
	opened chan handler.Conn
	closed chan error
}

func (h *wholeEcho) OnOpen(c handler.Conn) { h.opened <- c }
func (h *wholeEcho) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	_ = c.WriteMessage(op, data) // held behind an open message, never waited for
}
func (h *wholeEcho) OnClose(c handler.Conn, err error) { h.closed <- err }

// payload returns message seq of writer g: "g:seq:n:" then n letters that
// depend on all three, so that the reader can tell a message cut, spliced
// or corrupted from a whole one. It is text (ASCII) either way.
func payload(g, seq, n int) []byte {
	b := fmt.Appendf(nil, "%d:%d:%d:", g, seq, n)
	for i := range n {
		b = append(b, byte('a'+(g*7+seq*3+i)%26))
	}
	return b
}

// parsePayload checks a received message and returns its writer and seq.
func parsePayload(b []byte) (g, seq int, err error) {
	parts := strings.SplitN(string(b), ":", 4)
	if len(parts) != 4 {
		return 0, 0, fmt.Errorf("not a test message: %.40q", b)
	}
	g, _ = strconv.Atoi(parts[0])
	seq, _ = strconv.Atoi(parts[1])
	n, _ := strconv.Atoi(parts[2])
	if want := payload(g, seq, n); !bytes.Equal(b, want) {
		return 0, 0, fmt.Errorf("message %d:%d is not whole: %d bytes, want %d", g, seq, len(b), len(want))
	}
	return g, seq, nil
}

// wireReader reads frames off a connection by RFC 6455 §5.2 alone and
// checks the order rules of §5.4 and the compression rules of RFC 7692.
type wireReader struct {
	br       *bufio.Reader
	masked   bool // frames from a client: each must be masked
	takeover bool // the sender keeps its compression context

	open   bool // a fragmented message is open
	rsv1   bool // ... and it is compressed
	op     byte
	msg    []byte
	window []byte // the last 32 KiB the sender compressed, for takeover
	trace  []string
}

// next returns the next complete message or control frame.
func (r *wireReader) next() (op byte, data []byte, err error) {
	for {
		var h [2]byte
		if _, err := io.ReadFull(r.br, h[:]); err != nil {
			return 0, nil, err
		}
		fin, rsv, op := h[0]&0x80 != 0, h[0]&0x70, h[0]&0x0F
		masked, n := h[1]&0x80 != 0, uint64(h[1]&0x7F)
		switch n {
		case 126:
			var x [2]byte
			if _, err := io.ReadFull(r.br, x[:]); err != nil {
				return 0, nil, err
			}
			n = uint64(binary.BigEndian.Uint16(x[:]))
		case 127:
			var x [8]byte
			if _, err := io.ReadFull(r.br, x[:]); err != nil {
				return 0, nil, err
			}
			n = binary.BigEndian.Uint64(x[:])
		}
		if masked != r.masked {
			return 0, nil, fmt.Errorf("frame masked=%v from a side that must send masked=%v (§5.1)", masked, r.masked)
		}
		var key [4]byte
		if masked {
			if _, err := io.ReadFull(r.br, key[:]); err != nil {
				return 0, nil, err
			}
		}
		if n > 64<<20 {
			return 0, nil, fmt.Errorf("frame of %d bytes", n)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r.br, p); err != nil {
			return 0, nil, err
		}
		for i := range p {
			p[i] ^= key[i%4]
		}
		r.trace = append(r.trace, fmt.Sprintf("fin=%v op=%d len=%d %.12q", fin, op, len(p), p))
		if len(r.trace) > 12 {
			r.trace = r.trace[1:]
		}
		switch {
		case op >= 8:
			if !fin || len(p) > 125 || rsv != 0 {
				return 0, nil, fmt.Errorf("bad control frame: fin=%v len=%d rsv=%x (§5.5)", fin, len(p), rsv)
			}
			return op, p, nil
		case op == 0:
			if !r.open {
				return 0, nil, fmt.Errorf("continuation frame outside a message (§5.4): %q", r.trace)
			}
			if rsv != 0 {
				return 0, nil, errors.New("RSV bits on a continuation frame (RFC 7692 §6)")
			}
		case op == 1 || op == 2:
			if r.open {
				return 0, nil, fmt.Errorf("data frame (opcode %d) inside an open message (§5.4): a message was interleaved", op)
			}
			if rsv&^0x40 != 0 {
				return 0, nil, fmt.Errorf("RSV bits %x", rsv)
			}
			r.open, r.rsv1, r.op, r.msg = true, rsv != 0, op, r.msg[:0]
		default:
			return 0, nil, fmt.Errorf("reserved opcode %d", op)
		}
		r.msg = append(r.msg, p...)
		if !fin {
			continue
		}
		r.open = false
		msg := append([]byte(nil), r.msg...)
		if r.rsv1 {
			if msg, err = r.inflate(msg); err != nil {
				return 0, nil, err
			}
		}
		return r.op, msg, nil
	}
}

// inflate decompresses a message (RFC 7692 §7.2.2), against the sender's
// window when it keeps its context.
func (r *wireReader) inflate(p []byte) ([]byte, error) {
	in := append(p, 0x00, 0x00, 0xff, 0xff)
	var fr io.ReadCloser
	if r.takeover {
		fr = flate.NewReaderDict(bytes.NewReader(in), r.window)
	} else {
		fr = flate.NewReader(bytes.NewReader(in))
	}
	out, err := io.ReadAll(fr)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("compressed message does not decompress (out of order?): %w", err)
	}
	if r.takeover {
		r.window = append(r.window, out...)
		if len(r.window) > 32<<10 {
			r.window = append([]byte(nil), r.window[len(r.window)-32<<10:]...)
		}
	}
	return out, nil
}

// wholeRun is one run: the connection under test and the peer's side.
type wholeRun struct {
	conn   handler.Conn
	srv    *engine.Server // the engine that owns conn (Broadcast goes through it)
	peer   net.Conn       // the test's own end
	reader *wireReader
	masked bool // the peer must mask what it sends (it is the client)
}

func runWholeMessages(t *testing.T, seed uint64, road, dfl string) {
	h := &wholeEcho{opened: make(chan handler.Conn, 1), closed: make(chan error, 1)}
	opts := engine.Options{
		EventLoops:       1 + int(seed%2),
		MaxOutboundBytes: 256 << 20, // the reader keeps up; this test is not about the cap
		Logger:           discardLogger,
		Deflate:          engine.Deflate{Enabled: dfl != "plain", Threshold: 64},
	}
	if dfl == "takeover" {
		opts.Deflate.ContextTakeoverBudget = 1 << 20
	}
	var r wholeRun
	if road == "server" {
		r = wholeServerRoad(t, h, opts, dfl)
	} else {
		r = wholeClientRoad(t, h, opts, dfl)
	}
	defer r.peer.Close()

	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	const writers, ops = 6, 30
	closeAt := -1 // no random close in half the seeds: then everything must arrive
	if seed%2 == 1 {
		closeAt = rng.IntN(writers * ops)
	}
	var (
		opCount  atomic.Int64
		closed   atomic.Bool
		expected atomic.Int64 // messages that must arrive when nothing closes early
		wg       sync.WaitGroup
	)
	// The peer sends messages for the handler to echo from the loop.
	const echoes = 20
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range echoes {
			if err := r.send(payload(echoID, i, i*37%300)); err != nil {
				return
			}
			expected.Add(1)
		}
	}()
	for g := range writers {
		wrng := rand.New(rand.NewPCG(seed, uint64(g)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range ops {
				if int(opCount.Add(1)) == closeAt {
					_ = r.conn.Close(codec.CloseNormal, "random close")
					closed.Store(true)
				}
				p := payload(g, seq, wrng.IntN(900))
				op := handler.Text
				if wrng.IntN(2) == 0 {
					op = handler.Binary
				}
				var err error
				switch k := wrng.IntN(10); {
				case k < 3:
					err = r.conn.WriteMessage(op, p)
				case k < 6:
					err = writeFragments(r.conn, op, p, wrng)
				case k < 7:
					err = r.conn.WritePrepared(codec.NewPreparedFrame(op, p))
				case k < 8:
					r.srv.Broadcast([]handler.Conn{r.conn}, codec.NewPreparedFrame(op, p))
				case k < 9:
					r.srv.BroadcastAll(codec.NewPreparedFrame(op, p))
				default:
					_ = r.conn.Ping([]byte("p"))
					continue
				}
				if err == nil {
					expected.Add(1)
				}
				if wrng.IntN(4) == 0 {
					runtime.Gosched()
				}
			}
		}()
	}

	// The reader: every frame checked as it comes.
	type got struct{ g, seq int }
	received := make(chan got, 4096)
	readErr := make(chan error, 1)
	go func() {
		for {
			op, data, err := r.reader.next()
			if err != nil {
				readErr <- err
				return
			}
			switch op {
			case 8:
				readErr <- nil
				return
			case 9, 10:
				continue
			}
			g, seq, err := parsePayload(data)
			if err != nil {
				readErr <- err
				return
			}
			received <- got{g, seq}
		}
	}()

	wg.Wait()
	last := map[int]int{}
	n := int64(0)
	check := func(m got) {
		n++
		if prev, ok := last[m.g]; ok && m.seq <= prev {
			t.Errorf("seed %d: writer %d's message %d arrived after its message %d: out of the order of the calls", seed, m.g, m.seq, prev)
		}
		last[m.g] = m.seq
	}
	if !closed.Load() {
		// Nothing closed early: everything written must arrive, then we
		// close. (Broadcasts are asynchronous, so wait for them.)
		want := expected.Load()
		deadline := time.After(readTimeout)
		for n < want {
			select {
			case m := <-received:
				check(m)
			case err := <-readErr:
				t.Fatalf("seed %d: %d of %d messages, then: %v", seed, n, want, err)
			case <-deadline:
				t.Fatalf("seed %d: %d of %d messages arrived", seed, n, want)
			}
		}
		_ = r.conn.Close(codec.CloseNormal, "done")
	}
	for {
		select {
		case m := <-received:
			check(m)
			continue
		case err := <-readErr:
			if err != nil && !closed.Load() {
				t.Fatalf("seed %d: %v", seed, err)
			} else if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				t.Fatalf("seed %d: %v", seed, err)
			}
		case <-time.After(readTimeout):
			t.Fatalf("seed %d: no close frame", seed)
		}
		break
	}
	for len(received) > 0 {
		check(<-received)
	}
	// Answer the close so that the connection ends cleanly; as the server
	// (client road), close the TCP connection first (RFC 6455 §7.1.1).
	_ = r.send2(8, codec.AppendClosePayload(nil, codec.CloseNormal, ""))
	if !r.masked {
		r.peer.Close()
	}
	select {
	case <-h.closed:
	case <-time.After(readTimeout):
		t.Fatalf("seed %d: OnClose did not run", seed)
	}
}

// writeFragments sends p through a NextWriter in one to four fragments,
// yielding between them so that other writers run meanwhile.
func writeFragments(c handler.Conn, op handler.Op, p []byte, rng *rand.Rand) error {
	w, err := c.NextWriter(op)
	if err != nil {
		return err
	}
	for len(p) > 0 {
		k := min(len(p), 1+rng.IntN(len(p)))
		if rng.IntN(3) == 0 {
			k = len(p)
		}
		if _, err := w.Write(p[:k]); err != nil {
			return err
		}
		p = p[k:]
		runtime.Gosched()
	}
	return w.Close()
}

// send sends one text message from the peer.
func (r *wholeRun) send(p []byte) error { return r.send2(1, p) }

func (r *wholeRun) send2(op codec.OpCode, p []byte) error {
	var b []byte
	if r.masked {
		b = codec.AppendMaskedFrame(nil, true, op, 0, randomMask(), p)
	} else {
		b = codec.AppendFrame(nil, true, op, 0, p)
	}
	_, err := r.peer.Write(b)
	return err
}

// wholeServerRoad starts a server and connects a raw client to it.
func wholeServerRoad(t *testing.T, h *wholeEcho, opts engine.Options, dfl string) wholeRun {
	srv, _ := startServer(t, h, opts)
	var hdr []string
	if dfl == "deflate" {
		hdr = append(hdr, "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover")
	} else if dfl == "takeover" {
		hdr = append(hdr, "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover")
	}
	c := dialWS(t, srv.Addr().String(), "/", hdr...)
	_ = c.conn.SetDeadline(time.Time{})
	if dfl != "plain" && !strings.Contains(c.resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
		t.Fatalf("deflate not negotiated: %q", c.resp.Header.Get("Sec-WebSocket-Extensions"))
	}
	conn := <-h.opened
	return wholeRun{conn: conn, srv: srv, peer: c.conn, masked: true,
		reader: &wireReader{br: c.br, takeover: dfl == "takeover"}}
}

// wholeClientRoad starts a client engine and a raw server for it to dial.
func wholeClientRoad(t *testing.T, h *wholeEcho, opts engine.Options, dfl string) wholeRun {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	type accepted struct {
		c  net.Conn
		br *bufio.Reader
	}
	acc := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		br := bufio.NewReaderSize(c, 64<<10)
		req, err := http.ReadRequest(br)
		if err != nil {
			c.Close()
			return
		}
		var accept [28]byte
		resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
			string(codec.AcceptKey(&accept, []byte(req.Header.Get("Sec-WebSocket-Key")))) + "\r\n"
		if strings.Contains(req.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
			resp += "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
		}
		if _, err := io.WriteString(c, resp+"\r\n"); err != nil {
			c.Close()
			return
		}
		acc <- accepted{c, br}
	}()
	opts.Addr = ""
	cli := engine.New(h, opts)
	if err := cli.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		defer cancel()
		_ = cli.Shutdown(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	conn, _, err := cli.Dial(ctx, "ws://"+ln.Addr().String()+"/", &engine.DialOptions{Deflate: dfl != "plain"})
	if err != nil {
		t.Fatal(err)
	}
	<-h.opened
	a := <-acc
	return wholeRun{conn: conn, srv: cli, peer: a.c, reader: &wireReader{br: a.br, masked: true}}
}

// The open message's own fragments are not held back: each reaches the
// peer as it is written, before the writer's Close. Data written meanwhile
// waits, and follows the final frame; a ping goes between the fragments.
func TestNextWriterFragmentsFlowWhileOthersWait(t *testing.T) {
	t.Parallel()
	h := &wholeEcho{opened: make(chan handler.Conn, 1), closed: make(chan error, 1)}
	r := wholeServerRoad(t, h, engine.Options{Logger: discardLogger}, "plain")
	expectFrame := func(fin bool, op byte, data string) {
		t.Helper()
		_ = r.peer.SetReadDeadline(time.Now().Add(readTimeout))
		var hdr [2]byte
		if _, err := io.ReadFull(r.reader.br, hdr[:]); err != nil {
			t.Fatalf("want %q: %v", data, err)
		}
		p := make([]byte, hdr[1]&0x7F)
		if _, err := io.ReadFull(r.reader.br, p); err != nil {
			t.Fatal(err)
		}
		if gotFin, gotOp := hdr[0]&0x80 != 0, hdr[0]&0x0F; gotFin != fin || gotOp != op || string(p) != data {
			t.Fatalf("got fin=%v op=%d %q, want fin=%v op=%d %q", gotFin, gotOp, p, fin, op, data)
		}
	}
	w, err := r.conn.NextWriter(handler.Text)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	expectFrame(false, 1, "one") // on the wire before Close
	if err := r.conn.WriteMessage(handler.Text, []byte("later")); err != nil {
		t.Fatalf("a write behind an open message: %v, want it queued", err)
	}
	_ = r.conn.Ping([]byte("p"))
	expectFrame(true, 9, "p") // control frames may go between fragments
	if _, err := w.Write([]byte("two")); err != nil {
		t.Fatal(err)
	}
	expectFrame(false, 0, "two")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	expectFrame(true, 0, "")
	expectFrame(true, 1, "later")
}

// Data held behind an open message counts toward MaxOutboundBytes: a
// writer that never finishes its message cannot grow the server's memory.
func TestHeldDataCountsTowardOutboundCap(t *testing.T) {
	t.Parallel()
	h := &wholeEcho{opened: make(chan handler.Conn, 1), closed: make(chan error, 1)}
	r := wholeServerRoad(t, h, engine.Options{Logger: discardLogger, MaxOutboundBytes: 64 << 10}, "plain")
	w, _ := r.conn.NextWriter(handler.Binary)
	if _, err := w.Write([]byte("open")); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 40<<10)
	if err := r.conn.WriteMessage(handler.Binary, big); err != nil {
		t.Fatalf("first held message: %v", err)
	}
	if err := r.conn.WriteMessage(handler.Binary, big); !errors.Is(err, handler.ErrSlowConsumer) {
		t.Fatalf("a second held message past the cap: %v, want ErrSlowConsumer", err)
	}
	select {
	case err := <-h.closed:
		if !errors.Is(err, handler.ErrSlowConsumer) {
			t.Errorf("OnClose: %v, want ErrSlowConsumer", err)
		}
	case <-time.After(readTimeout):
		t.Fatal("the connection was not dropped")
	}
}

// Held data older than WriteStallTimeout closes the connection with 1008
// and ErrMessageStalled: a NextWriter that is never closed cannot stall a
// connection forever. The clock moves; nothing sleeps.
func TestHeldDataStallCloses(t *testing.T) {
	t.Parallel()
	h := &wholeEcho{opened: make(chan handler.Conn, 1), closed: make(chan error, 1)}
	const stall = 4 * time.Second
	srv, clk, _ := startClocked(t, h, engine.Options{WriteStallTimeout: stall, IdleTimeout: time.Hour})
	c := dialWS(t, srv.Addr().String(), "/")
	conn := <-h.opened
	w, _ := conn.NextWriter(handler.Text)
	if _, err := w.Write([]byte("open")); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := c.rawFrame(readTimeout); err != nil {
		t.Fatal(err)
	}
	if err := conn.WriteMessage(handler.Text, []byte("held")); err != nil {
		t.Fatal(err)
	}
	// The loop stamps the held data when it flushes; a ping round trip
	// makes sure it has.
	_ = conn.Ping(nil)
	if _, _, _, err := c.rawFrame(readTimeout); err != nil {
		t.Fatal(err)
	}
	clk.Advance(stall - time.Second)
	select {
	case err := <-h.closed:
		t.Fatalf("closed before the stall timeout: %v", err)
	default:
	}
	clk.Advance(2 * time.Second)
	f := c.expectClose(t, codec.ClosePolicyViolation)
	if f.reason != "message left unfinished" {
		t.Errorf("close reason %q", f.reason)
	}
	c.conn.Close() // the server half-closed after its close frame; finish
	select {
	case err := <-h.closed:
		if !errors.Is(err, handler.ErrMessageStalled) {
			t.Errorf("OnClose: %v, want ErrMessageStalled", err)
		}
	case <-time.After(readTimeout):
		t.Fatal("OnClose did not run")
	}
	if _, err := w.Write([]byte("late")); !errors.Is(err, handler.ErrClosed) {
		t.Errorf("a fragment after the close: %v, want ErrClosed", err)
	}
}

// bcastThenAck broadcasts every message to the sender, then acknowledges
// it with WriteMessage, from the same callback: the pattern of a chat that
// relays a message to the room and confirms it to its author.
type bcastThenAck struct {
	handler.Base
	srv *engine.Server
}

func (b *bcastThenAck) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	b.srv.Broadcast([]handler.Conn{c}, codec.NewPreparedFrame(handler.Text, append([]byte("room: "), data...)))
	_ = c.WriteMessage(handler.Text, append([]byte("ack: "), data...))
}

// One goroutine's Broadcast and its later WriteMessage reach a connection
// in the order of the calls, although the broadcast waits for the loop's
// next turn.
func TestBroadcastThenWriteKeepsOrder(t *testing.T) {
	t.Parallel()
	h := &bcastThenAck{}
	srv := engine.New(h, engine.Options{Addr: "127.0.0.1:0", Logger: discardLogger})
	h.srv = srv
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, srv)
	c := dialWS(t, srv.Addr().String(), "/")
	for i := range 50 {
		msg := strconv.Itoa(i)
		if err := c.send(codec.OpText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		c.expect(t, codec.OpText, "room: "+msg)
		c.expect(t, codec.OpText, "ack: "+msg)
	}
}
