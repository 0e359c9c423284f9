package engine

import (
	"cmp"
	"runtime"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// This file is permessage-deflate (RFC 7692) in the engine: negotiation in
// the handshake, decompression of received messages, compression of sent
// ones, and the memory budget for context takeover. The codec does the
// parsing and the compression itself (codec/deflate.go). The calls into
// this file are marked "permessage-deflate" where they are: negotiation in
// handshake.go (native listener) and upgrade.go (net/http), the client's
// offer in dial.go, decompression in read.go, compression in write.go and
// broadcast.go, and the release of a reservation in close.go.
//
// Memory. A flate writer costs about 0.8 MB and a reader about 50 KB, so
// neither belongs to a connection: each event loop owns one compressor and
// one decompressor, and the server at most GOMAXPROCS spare compressors
// for writers that meet on one loop (takeDeflater). By default every connection is answered with
// server_no_context_takeover and client_no_context_takeover, and each
// message is compressed and decompressed on its own; an idle connection
// then costs nothing more than without compression. Context takeover (a
// connection keeps its LZ77 windows between messages, which compresses
// small similar messages much better) is granted per connection under
// Deflate.ContextTakeoverBudget. Such a connection owns no compressor: it
// keeps the last Deflate.TakeoverWindow bytes it sent compressed (4 KiB by
// default, allocated at its first compressed send), and the loop's
// compressor is primed with them before each of its messages
// (codec.Deflater.DeflateDict). It also remembers the last 32 KiB it
// received (allocated at its first compressed receive), because the client
// may refer that far back. Past the budget, new connections get no context
// takeover.

// Deflate configures permessage-deflate (RFC 7692). The zero value leaves it
// off: the server then declines every offer and never sets RSV1.
//
// With it on, a compressed message is decompressed whole before the handler
// sees it (a [handler.StreamHandler] gets it as one chunk, first and final),
// under Options.MaxMessageSize applied to the decompressed size. Messages
// sent with WriteMessage, WritePrepared, Broadcast and BroadcastAll are
// compressed from Threshold bytes on; NextWriter sends its fragments
// uncompressed. A message that does not shrink is sent uncompressed unless
// the connection keeps its compression context.
//
// A message is compressed on the goroutine that writes it, with its loop's
// compressor. Goroutines that write to connections of one loop at the same
// time do not wait for each other: one that finds the loop's compressor
// busy takes a spare, of which the server makes at most GOMAXPROCS, on
// first need, and keeps (about 0.8 MB each at level 1). Compressors thus
// never exceed EventLoops + GOMAXPROCS, whatever the number of writers.
type Deflate struct {
	// Enabled accepts the first acceptable permessage-deflate offer of
	// each client (see codec.NegotiateDeflate for what is accepted).
	Enabled bool

	// Level is the flate level (github.com/klauspost/compress/flate)
	// for sent messages: 1 (flate.BestSpeed) to 9, flate.HuffmanOnly
	// (-2), or flate.DefaultCompression (-1, which is level 5); these
	// two named constants are the only negative values it takes. 0
	// means DefaultDeflateLevel, flate.BestSpeed. Levels 1 to 6
	// reset cheaply between messages; 7 to 9 clear 640 KB of hash tables
	// before every message, which costs more than compressing a small
	// one. At levels 1 to 6 a message under 128 bytes is Huffman-coded on
	// its own, without the connection's context.
	Level int

	// Threshold is the size below which a sent message goes
	// uncompressed: compressing a few bytes costs CPU and saves nothing.
	// 0 means DefaultDeflateThreshold (128 bytes); negative: off, every
	// message is compressed.
	// Received messages are decompressed whatever their size.
	Threshold int

	// ContextTakeoverBudget is the most memory, in bytes, that
	// connections keeping a compression context may reserve together. A
	// connection whose offer allows context takeover reserves what it
	// needs at the handshake: TakeoverWindow bytes for the end of what it
	// sent unless the client asked for server_no_context_takeover, and
	// 32 KiB for the window of the client's messages unless the client
	// offered client_no_context_takeover. If that does not fit, the
	// connection is answered with both no_context_takeover parameters
	// instead (RFC 7692 §7.1.1 lets a server add them to any response).
	// The reservation is returned when the connection closes. 0 (the
	// default) grants no context takeover at all; negative is invalid.
	ContextTakeoverBudget int64

	// TakeoverWindow is how many bytes of what a context-takeover
	// connection sent compressed it keeps, to compress its next message
	// against: 256 to 32768, 0 meaning DefaultTakeoverWindow (4 KiB);
	// other values are invalid. Priming the compressor costs about as much
	// as compressing the window again, once per message, while similar
	// messages (chat, updates of one JSON shape) find most of their
	// matches in the last few KiB; a compressor may use less than the
	// negotiated 32 KiB window (RFC 7692 §7.1.2.1), so the client is not
	// told.
	TakeoverWindow int
}

// The accessors below apply the zero rule themselves, so that they are
// right on a Deflate that did not go through Options.withDefaults.

// level returns the flate level of sent messages.
func (o *Deflate) level() int { return cmp.Or(o.Level, DefaultDeflateLevel) }

// window returns the bytes of sent history a takeover connection keeps.
func (o *Deflate) window() int { return cmp.Or(o.TakeoverWindow, DefaultTakeoverWindow) }

// threshold returns the smallest message compressed; a negative Threshold
// (off) compresses every message.
func (o *Deflate) threshold() int { return max(cmp.Or(o.Threshold, DefaultDeflateThreshold), 0) }

// Memory of the state a context-takeover connection owns, checked against
// what it allocates by TestDeflateCostEstimates: the end of what it sent
// (server takeover) and the window of what it received (client takeover).
// The connDeflate holding them is charged to the first.
const (
	deflateStateCost   = 128 // the connDeflate, a size class of the heap
	deflateHistoryCost = codec.DeflateWindow
)

// windowCost is what server context takeover reserves.
func (o *Deflate) windowCost() int64 { return int64(o.window()) + deflateStateCost }

// serverDeflate is the server-wide permessage-deflate state.
type serverDeflate struct {
	used       atomic.Int64 // bytes reserved by context-takeover connections
	takeover   atomic.Int64 // open connections holding a reservation
	downgraded atomic.Int64 // connections refused takeover by the budget
	negotiated atomic.Int64 // handshakes that accepted permessage-deflate

	// spares are compressors for a writer that finds its loop's busy
	// (takeDeflater). At most cap(spares) are ever made, lazily, so a
	// server whose writers never meet on one loop makes none.
	spareOnce sync.Once
	spares    chan *codec.Deflater
	spareMade atomic.Int32
}

// reserve takes n bytes from the budget if they fit.
func (d *serverDeflate) reserve(n, budget int64) bool {
	for {
		u := d.used.Load()
		if u+n > budget {
			return false
		}
		if d.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// DeflateStats are the server's permessage-deflate counters, in
// [Stats].Deflate.
type DeflateStats struct {
	// Negotiated counts handshakes that accepted permessage-deflate.
	Negotiated int64
	// Takeover is the number of open connections keeping a compression
	// context, and BudgetUsed the bytes they reserved.
	Takeover, BudgetUsed int64
	// Downgraded counts connections answered with no context takeover
	// because the budget was spent.
	Downgraded int64
}

// loopDeflate is one event loop's compressor and decompressor.
type loopDeflate struct {
	// mu guards def: messages written from other goroutines are
	// compressed on the writing goroutine, with the loop's compressor
	// when it is free (takeDeflater). It serves the loop's
	// context-takeover connections too, primed with each one's history.
	mu       sync.Mutex
	def      codec.Deflater
	compress func(dst, payload []byte) ([]byte, error) // takeDeflater's, for PreparedFrame.Deflated

	inf     codec.Inflater // loop only
	charged int            // loop only: inbound budget bytes charged for inf's output
	resp    []byte         // loop only: the Sec-WebSocket-Extensions value being written

	once sync.Once // makes compress: not under mu, which a writer may hold
}

// compressor returns the loop's shared compression function.
func (lp *loop) compressor() func(dst, payload []byte) ([]byte, error) {
	d := &lp.defl
	d.once.Do(func() {
		d.compress = func(dst, payload []byte) ([]byte, error) {
			def, spare := lp.takeDeflater()
			c, err := def.Deflate(dst, payload, false)
			lp.putDeflater(def, spare)
			return c, err
		}
	})
	return d.compress
}

// takeDeflater returns a compressor set to the server's level, for one
// message: the loop's own when it is free; else, so that goroutines
// writing to one loop's connections compress in parallel rather than
// queue on its lock, one of the server's spares (at most GOMAXPROCS at
// Start, each made on first need and kept: a level-1 flate writer holds
// about 0.8 MB); else, every spare being in use, the loop's own once it
// is free. Every message is compressed on its own (RFC 7692 §7.1.1.1: no
// context takeover) or against a history given with it (DeflateDict), so
// any compressor will do. putDeflater gives it back. Safe from any
// goroutine.
func (lp *loop) takeDeflater() (def *codec.Deflater, spare bool) {
	d, sd := &lp.defl, &lp.srv.defl
	level := lp.srv.opts.Deflate.level()
	if d.mu.TryLock() {
		d.def.Level = level
		return &d.def, false
	}
	sd.spareOnce.Do(func() { sd.spares = make(chan *codec.Deflater, max(runtime.GOMAXPROCS(0), 1)) })
	select {
	case def = <-sd.spares:
		return def, true
	default:
	}
	if sd.spareMade.Add(1) <= int32(cap(sd.spares)) {
		return &codec.Deflater{Level: level}, true
	}
	sd.spareMade.Add(-1)
	d.mu.Lock()
	d.def.Level = level
	return &d.def, false
}

// putDeflater gives back what takeDeflater returned.
func (lp *loop) putDeflater(def *codec.Deflater, spare bool) {
	if !spare {
		lp.defl.mu.Unlock()
		return
	}
	lp.srv.defl.spares <- def // never blocks: no more are made than it holds
}

// connDeflate is a connection's permessage-deflate state. Connections
// without context takeover share the read-only values in sharedDeflate, so
// they cost one pointer.
type connDeflate struct {
	limit          int  // largest message compressed, 0 for any (DeflateParams.CompressLimit)
	serverTakeover bool // compress against sent
	clientTakeover bool // decompress against hist
	reserved       int64

	// mu serializes compressing against sent, adding to it and queueing
	// the frame, so frames leave in the order of the compressed stream
	// and sent is what the client decompressed, in that order.
	mu     sync.Mutex
	sent   codec.DeflateHistory // the end of what was sent compressed
	closed bool

	hist codec.DeflateHistory // loop only
}

// sharedDeflate holds the state of connections without context takeover,
// indexed by the server_max_window_bits of their response (0 when absent).
var sharedDeflate [16]connDeflate

func init() {
	for bits := range sharedDeflate {
		sharedDeflate[bits].limit = codec.DeflateParams{ServerMaxWindowBits: bits}.CompressLimit()
	}
}

// negotiateDeflate runs permessage-deflate negotiation for an accepted
// upgrade request on the loop. It sets up wc and returns the
// Sec-WebSocket-Extensions value of the response, or nil. Loop only.
func (s *Server) negotiateDeflate(wc *wsConn, r *codec.Request) []byte {
	d := &wc.lp.defl
	cd, resp := s.deflateFor(r, d.resp[:0])
	d.resp = resp[:0]
	if cd == nil {
		return nil
	}
	wc.applyDeflate(cd)
	return resp
}

// deflateFor negotiates permessage-deflate for an upgrade request: it
// returns the connection's deflate state and appends the response's
// Sec-WebSocket-Extensions value to resp, or returns nil when the
// extension is off or not offered. Safe from any goroutine.
func (s *Server) deflateFor(r *codec.Request, resp []byte) (*connDeflate, []byte) {
	o := &s.opts.Deflate
	if !o.Enabled {
		return nil, resp
	}
	budget := o.ContextTakeoverBudget
	p, ok := codec.NegotiateDeflate(r, codec.DeflatePolicy{ServerContextTakeover: budget > 0, ClientContextTakeover: budget > 0})
	if !ok {
		return nil, resp
	}
	cd := &sharedDeflate[p.ServerMaxWindowBits]
	if !p.ServerNoContextTakeover || !p.ClientNoContextTakeover {
		var cost int64
		if !p.ServerNoContextTakeover {
			cost += o.windowCost()
		}
		if !p.ClientNoContextTakeover {
			cost += deflateHistoryCost
		}
		if s.defl.reserve(cost, budget) {
			s.defl.takeover.Add(1)
			cd = &connDeflate{
				limit:          p.CompressLimit(),
				serverTakeover: !p.ServerNoContextTakeover,
				clientTakeover: !p.ClientNoContextTakeover,
				reserved:       cost,
				sent:           codec.DeflateHistory{Size: o.window()},
			}
		} else {
			// RFC 7692 §7.1.1.1 and §7.1.1.2: a server MAY include
			// either no_context_takeover parameter in a response
			// even when the offer did not.
			p.ServerNoContextTakeover, p.ClientNoContextTakeover = true, true
			s.defl.downgraded.Add(1)
		}
	}
	s.defl.negotiated.Add(1)
	return cd, p.AppendResponse(resp)
}

// applyDeflate gives a connection its negotiated deflate state, before it
// opens.
func (wc *wsConn) applyDeflate(cd *connDeflate) {
	wc.extra().defl = cd
	// RFC 7692 §6: RSV1 marks the first frame of a compressed message.
	wc.dec.Compression = true
}

// releaseDeflate returns the reservation of a negotiated deflate state whose
// connection never opened.
func (s *Server) releaseDeflate(cd *connDeflate) {
	if cd == nil || cd.reserved == 0 {
		return
	}
	s.defl.used.Add(-cd.reserved)
	s.defl.takeover.Add(-1)
	cd.reserved = 0
}

// closeDeflate returns a closed connection's reservation and drops its
// histories. Loop only, from OnClose.
func (s *Server) closeDeflate(wc *wsConn) {
	cd := wc.deflate()
	if cd == nil || cd.reserved == 0 {
		return
	}
	cd.mu.Lock()
	cd.closed = true
	cd.sent = codec.DeflateHistory{}
	cd.mu.Unlock()
	cd.hist = codec.DeflateHistory{}
	s.defl.used.Add(-cd.reserved)
	s.defl.takeover.Add(-1)
	cd.reserved = 0
}

// deliverCompressed handles a data event of a compressed message: it
// assembles the compressed payload, decompresses it under the message size
// limit, checks the UTF-8 of text and hands the message to the handler.
// The compressed payload and the output are charged to the inbound budget.
// Loop only.
func (s *Server) deliverCompressed(wc *wsConn, ev *codec.Event) {
	payload := ev.Payload
	var x *connExtra
	if !(ev.First && ev.Final) {
		x = wc.extra()
		if !s.growAssembly(x, len(ev.Payload)) {
			s.refuseInbound(wc, len(x.asm)+len(ev.Payload))
			return
		}
		x.asm = append(x.asm, ev.Payload...)
		if !ev.Final {
			return
		}
		payload = x.asm
	}
	cd := wc.deflate()
	var dict []byte
	if cd.clientTakeover {
		dict = cd.hist.Bytes()
	}
	lp := wc.lp
	d := &lp.defl
	if d.inf.Grow == nil {
		d.inf.Grow = lp.growInflated
	}
	est := 4 * len(payload)
	if est < 512 {
		est = 512
	}
	if max := s.opts.MaxMessageSize; max > 0 && int64(est) > max+1 {
		est = int(max + 1)
	}
	buf := newMsgBuf(est)
	d.charged = 0
	if !s.inbound.take(int64(cap(buf))) {
		freeMsgBuf(buf)
		if x != nil {
			s.releaseAssembly(x)
		}
		s.refuseInbound(wc, est)
		return
	}
	d.charged = cap(buf)
	// RFC 7692 §7.2.2: decompress after appending 00 00 ff ff; the limit
	// applies to the decompressed size, so a bomb ends with 1009 as soon
	// as the output passes MaxMessageSize.
	msg, err := d.inf.Inflate(buf, payload, dict, s.opts.MaxMessageSize)
	if x != nil {
		s.releaseAssembly(x)
	}
	defer func() {
		s.inbound.give(int64(d.charged))
		d.charged = 0
		freeMsgBuf(msg)
	}()
	if err == nil && ev.Op == codec.OpText && !utf8.Valid(msg) {
		// RFC 6455 §8.1; the codec cannot check compressed text.
		err = codec.ErrInvalidUTF8
	}
	if err != nil {
		if err == codec.ErrInflateRefused {
			s.refuseInbound(wc, cap(msg))
			return
		}
		perr, ok := err.(*codec.ProtocolError)
		if !ok {
			perr = codec.ErrDeflateData
		}
		wc.fail(perr.Code, perr.Reason, &handler.CloseError{Code: perr.Code, Reason: perr.Reason})
		return
	}
	if cd.clientTakeover {
		cd.hist.Add(msg) // before the handler, which may scribble on msg
	}
	if wc.streamer() != nil {
		s.callChunk(wc, ev.Op, msg, true, true)
	} else {
		s.callMessage(wc, ev.Op, msg)
	}
}

// growInflated is the loop's Inflater.Grow: it grows a decompression
// buffer, charging the growth to the inbound budget, and refuses (returns
// b full) when the budget is spent.
func (lp *loop) growInflated(b []byte, n int) []byte {
	size := msgBufSize(len(b) + n)
	if !lp.srv.inbound.take(int64(size - cap(b))) {
		return b[:cap(b)]
	}
	lp.defl.charged += size - cap(b)
	return resizeMsgBuf(b, size)
}

// deflateBufSize is the buffer to compress n bytes into, with room for the
// frame header in front: DEFLATE output is at most 5 bytes per 64 KiB
// stored block larger than its input, plus a few bytes of block headers.
func deflateBufSize(n int) int { return codec.MaxHeaderSize + n + n>>13 + 64 }

// frameInPlace writes the header of a final, compressed frame of type op in
// front of the payload b[MaxHeaderSize:] and returns the frame.
func frameInPlace(b []byte, op codec.OpCode) []byte {
	var h [codec.MaxHeaderSize]byte
	// RFC 7692 §6: RSV1 on the first frame of a compressed message; the
	// message is one frame here.
	hdr := codec.AppendFrameHeader(h[:0], true, op, 0x40, len(b)-codec.MaxHeaderSize)
	start := codec.MaxHeaderSize - len(hdr)
	copy(b[start:], hdr)
	return b[start:]
}

// writeDeflate sends a whole data message on a connection that negotiated
// permessage-deflate: compressed when it is large enough and the window
// limit allows, as a plain frame otherwise. Safe from any goroutine.
func (wc *wsConn) writeDeflate(op codec.OpCode, payload []byte, applying bool) error {
	cd := wc.deflate()
	s := wc.lp.srv
	if len(payload) < s.opts.Deflate.threshold() || cd.limit > 0 && len(payload) > cd.limit {
		return wc.enqueueFrame(nil, true, op, payload, true, applying)
	}
	buf := getBuf(deflateBufSize(len(payload)))[:codec.MaxHeaderSize]
	if cd.serverTakeover {
		// The client's window is the compressed messages in the order
		// it gets them: compressing against sent, adding to it and
		// queueing the frame happen under one lock.
		cd.mu.Lock()
		defer cd.mu.Unlock()
		if cd.closed {
			putBuf(buf)
			return handler.ErrClosed
		}
		if !applying && wc.fenced() {
			// Broadcasts wait on the loop, so this message waits
			// behind them (write.go); it is compressed in its turn,
			// since the client's window follows the order of the
			// wire, which is decided then.
			putBuf(buf)
			wc.mu.Lock()
			if wc.phase() != phaseOpen {
				wc.mu.Unlock()
				return handler.ErrClosed
			}
			return wc.deferLocked(deferredWrite{frame: append(getBuf(len(payload)), payload...), data: true, fin: true, compress: true, op: op})
		}
		// Decided under cd.mu: from here the message goes where it is
		// compressed, in order, without waiting.
		applying = byQueue
		def, spare := wc.lp.takeDeflater()
		c, err := def.DeflateDict(buf, payload, cd.sent.Bytes())
		wc.lp.putDeflater(def, spare)
		if err != nil || len(c)-codec.MaxHeaderSize >= len(payload) {
			// No gain: plain, and out of the window, since the client
			// decompresses only what has RSV1 (RFC 7692 §6, §7.2.2).
			putBuf(c)
			return wc.enqueueFrame(nil, true, op, payload, true, applying)
		}
		cd.sent.Add(payload)
		err = wc.enqueueRaw(frameInPlace(c, op), true, applying)
		putBuf(c)
		return err
	}
	def, spare := wc.lp.takeDeflater()
	c, err := def.Deflate(buf, payload, false)
	wc.lp.putDeflater(def, spare)
	if err != nil || len(c)-codec.MaxHeaderSize >= len(payload) {
		// No gain: send it plain (RFC 7692 §6 allows any message to
		// go uncompressed; there is no shared context to keep in step).
		putBuf(c)
		return wc.enqueueFrame(nil, true, op, payload, true, applying)
	}
	err = wc.enqueueRaw(frameInPlace(c, op), true, applying)
	putBuf(c)
	return err
}

// preparedFrame returns the bytes to send for f on this connection: the
// plain frame, or its compressed variant shared by every connection without
// server context takeover. ok is false when the connection keeps a
// compression context, so f must be compressed against its own history.
func (wc *wsConn) preparedFrame(f *codec.PreparedFrame) (b []byte, ok bool) {
	cd := wc.deflate()
	if cd == nil || f.Op().IsControl() {
		return f.Bytes(), true
	}
	n := len(f.Payload())
	if n < wc.lp.srv.opts.Deflate.threshold() || cd.limit > 0 && n > cd.limit {
		return f.Bytes(), true
	}
	if cd.serverTakeover {
		return nil, false
	}
	return f.Deflated(wc.lp.compressor()), true
}

// writePreparedDeflate is WritePrepared on a connection that negotiated
// permessage-deflate. Safe from any goroutine.
func (wc *wsConn) writePreparedDeflate(f *codec.PreparedFrame) error {
	b, ok := wc.preparedFrame(f)
	if !ok {
		return wc.writeDeflate(f.Op(), f.Payload(), byCaller)
	}
	return wc.enqueueRaw(b, f.Op().IsData(), byCaller)
}

// writePreparedOnLoop is writeOnLoop for a prepared frame, compressed for
// the connection when it negotiated permessage-deflate. Loop only.
func (wc *wsConn) writePreparedOnLoop(f *codec.PreparedFrame) {
	b, ok := wc.preparedFrame(f)
	if ok {
		wc.writeOnLoop(b, f.Op().IsData())
		return
	}
	if wc.phase() != phaseOpen {
		return
	}
	// Through the queue: the connection's compressed frames are ordered
	// under its lock, and writeOnLoop could run OnClose (which takes
	// that lock) from inside a failed write.
	_ = wc.writeDeflate(f.Op(), f.Payload(), byQueue)
	wc.flush()
}
