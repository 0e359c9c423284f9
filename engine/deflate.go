package engine

import (
	"compress/flate"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// This file is permessage-deflate (RFC 7692) in the engine: negotiation in
// the handshake, decompression of received messages, compression of sent
// ones, and the memory budget for context takeover. The codec does the
// parsing and the compression itself (codec/deflate.go); the hooks in
// server.go and conn.go that call in here are marked "permessage-deflate".
//
// Memory. A compress/flate writer costs about 1 MB and a reader about
// 40 KB, so by default neither belongs to a connection: each event loop owns
// one compressor and one decompressor, every connection is answered with
// server_no_context_takeover and client_no_context_takeover, and each
// message is compressed and decompressed on its own. An idle connection
// then costs nothing more than without compression. Context takeover (a
// connection keeps its LZ77 windows between messages, which compresses
// small similar messages much better) is granted per connection under
// Deflate.ContextTakeoverBudget: such a connection owns a compressor
// (allocated at its first compressed send) and remembers the last 32 KiB it
// received (allocated at its first compressed receive). Past the budget,
// new connections get no context takeover.

// DefaultDeflateThreshold is the Deflate.Threshold used when it is zero.
const DefaultDeflateThreshold = 128

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
type Deflate struct {
	// Enabled accepts the first acceptable permessage-deflate offer of
	// each client (see codec.NegotiateDeflate for what is accepted).
	Enabled bool

	// Level is the compress/flate level for sent messages: 1
	// (flate.BestSpeed) to 9, or flate.HuffmanOnly. 0 picks per
	// connection: 1 without context takeover, 6 with it. Without context
	// takeover the compressor is reset before every message, which at
	// levels other than 1 clears 640 KB of hash tables each time. With
	// context takeover level 1 is a poor choice: compress/flate's
	// BestSpeed encodes a message under 128 bytes on its own, ignoring
	// the previous ones, which is where takeover pays most. Values that
	// are not a compress/flate level count as 0.
	Level int

	// Threshold is the size below which a sent message goes
	// uncompressed: compressing a few bytes costs CPU and saves nothing.
	// 0 means DefaultDeflateThreshold; negative compresses every message.
	// Received messages are decompressed whatever their size.
	Threshold int

	// ContextTakeoverBudget is the most memory, in bytes, that
	// connections keeping a compression context may reserve together. A
	// connection whose offer allows context takeover reserves what it
	// needs at the handshake: about 0.8 MB (1.2 MB at level 1) for its
	// own compressor unless the client asked for
	// server_no_context_takeover, and 32 KiB for the window of the
	// client's messages unless the client offered
	// client_no_context_takeover. If that does not fit, the connection
	// is answered with both no_context_takeover parameters instead
	// (RFC 7692 §7.1.1 lets a server add them to any response). The
	// reservation is returned when the connection closes. 0 (the
	// default) grants no context takeover at all.
	ContextTakeoverBudget int64
}

// level returns the compress/flate level for a connection.
func (o *Deflate) level(takeover bool) int {
	switch {
	case o.Level >= flate.HuffmanOnly && o.Level <= flate.BestCompression && o.Level != flate.NoCompression:
		return o.Level
	case takeover:
		return flate.DefaultCompression
	}
	return flate.BestSpeed
}

func (o *Deflate) threshold() int {
	switch {
	case o.Threshold == 0:
		return DefaultDeflateThreshold
	case o.Threshold < 0:
		return 0
	}
	return o.Threshold
}

// Estimated memory of the state a context-takeover connection owns, checked
// against measurements by TestDeflateCostEstimates.
const (
	deflateWriterCostL1    = 1200 << 10 // flate.NewWriter at BestSpeed
	deflateWriterCostOther = 800 << 10  // at levels 2-9
	deflateWriterCostHuff  = 730 << 10  // at HuffmanOnly
	deflateHistoryCost     = codec.DeflateWindow
)

func deflateWriterCost(level int) int64 {
	switch level {
	case flate.BestSpeed:
		return deflateWriterCostL1
	case flate.HuffmanOnly:
		return deflateWriterCostHuff
	}
	return deflateWriterCostOther
}

// serverDeflate is the server-wide permessage-deflate state.
type serverDeflate struct {
	used       atomic.Int64 // bytes reserved by context-takeover connections
	takeover   atomic.Int64 // open connections holding a reservation
	downgraded atomic.Int64 // connections refused takeover by the budget
	negotiated atomic.Int64 // handshakes that accepted permessage-deflate
	writers    sync.Pool    // *codec.Deflater released by closed takeover connections
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

// DeflateStats reports the server's permessage-deflate counters.
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

// DeflateStats returns a snapshot of the permessage-deflate counters.
func (s *Server) DeflateStats() DeflateStats {
	return DeflateStats{
		Negotiated: s.defl.negotiated.Load(),
		Takeover:   s.defl.takeover.Load(),
		BudgetUsed: s.defl.used.Load(),
		Downgraded: s.defl.downgraded.Load(),
	}
}

// loopDeflate is one event loop's compressor and decompressor.
type loopDeflate struct {
	// mu guards def: messages written from other goroutines are
	// compressed on the writing goroutine, with the loop's compressor.
	mu       sync.Mutex
	def      codec.Deflater
	compress func(dst, payload []byte) ([]byte, error) // def under mu, for PreparedFrame.Deflated

	inf     codec.Inflater // loop only
	charged int            // loop only: inbound budget bytes charged for inf's output
	resp    []byte         // loop only: the Sec-WebSocket-Extensions value being written
}

// compressor returns the loop's shared compression function.
func (lp *loop) compressor() func(dst, payload []byte) ([]byte, error) {
	d := &lp.defl
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.compress == nil {
		level := lp.srv.opts.Deflate.level(false)
		d.compress = func(dst, payload []byte) ([]byte, error) {
			d.mu.Lock()
			defer d.mu.Unlock()
			d.def.Level = level
			return d.def.Deflate(dst, payload, false)
		}
	}
	return d.compress
}

// connDeflate is a connection's permessage-deflate state. Connections
// without context takeover share the read-only values in sharedDeflate, so
// they cost one pointer.
type connDeflate struct {
	limit          int  // largest message compressed, 0 for any (DeflateParams.CompressLimit)
	serverTakeover bool // compress with the connection's own Deflater
	clientTakeover bool // decompress against hist
	reserved       int64

	// mu serializes compression with def and the queueing of its output,
	// so frames leave in the order of the compressed stream.
	mu     sync.Mutex
	def    *codec.Deflater
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
			cost += deflateWriterCost(o.level(true))
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

// closeDeflate returns a closed connection's reservation and compressor.
// Loop only, from OnClose.
func (s *Server) closeDeflate(wc *wsConn) {
	cd := wc.deflate()
	if cd == nil || cd.reserved == 0 {
		return
	}
	cd.mu.Lock()
	cd.closed = true
	if cd.def != nil {
		cd.def.Reset()
		s.defl.writers.Put(cd.def)
		cd.def = nil
	}
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
func (wc *wsConn) writeDeflate(op codec.OpCode, payload []byte) error {
	cd := wc.deflate()
	s := wc.lp.srv
	if len(payload) < s.opts.Deflate.threshold() || cd.limit > 0 && len(payload) > cd.limit {
		return wc.enqueueFrame(true, op, payload, true)
	}
	buf := getBuf(deflateBufSize(len(payload)))[:codec.MaxHeaderSize]
	if cd.serverTakeover {
		// The compressed stream continues from message to message: the
		// compressed frame must be queued before the next one is made.
		cd.mu.Lock()
		defer cd.mu.Unlock()
		if cd.closed {
			putBuf(buf)
			return handler.ErrClosed
		}
		if cd.def == nil {
			if d, ok := s.defl.writers.Get().(*codec.Deflater); ok {
				cd.def = d
			} else {
				cd.def = &codec.Deflater{Level: s.opts.Deflate.level(true)}
			}
		}
		c, err := cd.def.Deflate(buf, payload, true)
		if err != nil {
			putBuf(buf)
			return err
		}
		err = wc.enqueueRaw(frameInPlace(c, op), true)
		putBuf(c)
		return err
	}
	d := &wc.lp.defl
	d.mu.Lock()
	d.def.Level = s.opts.Deflate.level(false)
	c, err := d.def.Deflate(buf, payload, false)
	d.mu.Unlock()
	if err != nil || len(c)-codec.MaxHeaderSize >= len(payload) {
		// No gain: send it plain (RFC 7692 §6 allows any message to
		// go uncompressed; there is no shared context to keep in step).
		putBuf(c)
		return wc.enqueueFrame(true, op, payload, true)
	}
	err = wc.enqueueRaw(frameInPlace(c, op), true)
	putBuf(c)
	return err
}

// preparedFrame returns the bytes to send for f on this connection: the
// plain frame, or its compressed variant shared by every connection without
// server context takeover. ok is false when the connection keeps a
// compression context, so f must be compressed with its own compressor.
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
		return wc.writeDeflate(f.Op(), f.Payload())
	}
	return wc.enqueueRaw(b, f.Op().IsData())
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
	// Through the queue: the connection's own compressor orders its
	// frames under its lock, and writeOnLoop could run OnClose (which
	// takes that lock) from inside a failed write.
	_ = wc.writeDeflate(f.Op(), f.Payload())
	wc.flush()
}
