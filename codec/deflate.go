package codec

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strconv"
	"sync"

	"github.com/gobwas/httphead"
	"github.com/klauspost/compress"
	"github.com/klauspost/compress/flate"
)

// This file is permessage-deflate (RFC 7692): the negotiation of its
// parameters in the opening handshake (§5, §7.1) and the compression of
// message payloads (§7.2) as I/O-free functions over byte slices. The
// framing rule it adds to RFC 6455, RSV1 set on the first frame of a
// compressed message and nowhere else (§6), is enforced by [Decoder] when
// its Compression field is set.
//
// Compression is github.com/klauspost/compress/flate, which is faster than
// the standard library's at every level and resets cheaply between
// messages. Its levels compress with a 32 KiB window, so the negotiation
// below only agrees to what it can honour exactly: see [NegotiateDeflate].

// DeflateExtension is the extension token of RFC 7692 §7.
const DeflateExtension = "permessage-deflate"

// Extension parameter names of RFC 7692 §7.1.
const (
	paramServerNoContextTakeover = "server_no_context_takeover"
	paramClientNoContextTakeover = "client_no_context_takeover"
	paramServerMaxWindowBits     = "server_max_window_bits"
	paramClientMaxWindowBits     = "client_max_window_bits"
)

// DeflateWindow is the size of the LZ77 sliding window the compressor uses
// (2^15 bytes, the largest RFC 7692 §7.1.2 allows). It is also the most a
// context-takeover decompressor must remember between messages.
const DeflateWindow = 1 << 15

// deflateTail is the empty stored block a sync flush ends with: a sender
// removes it from every compressed message and a receiver puts it back
// (RFC 7692 §7.2.1, §7.2.2).
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff}

// inflateTail is what a receiver appends to a message: the tail removed by
// the sender, then a final empty stored block, so that the decompressor ends
// with io.EOF exactly at the end of the message instead of waiting for more
// input.
var inflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// DeflateOffer is one permessage-deflate offer from a client, as parsed by
// [ParseDeflateOffer].
type DeflateOffer struct {
	// ServerNoContextTakeover asks the server not to keep its LZ77 window
	// between messages (§7.1.1.1).
	ServerNoContextTakeover bool
	// ClientNoContextTakeover tells the server that the client will not
	// keep its window between messages (§7.1.1.2).
	ClientNoContextTakeover bool
	// ServerMaxWindowBits limits the server's window to 2^N bytes, 8-15;
	// 0 when absent (§7.1.2.1).
	ServerMaxWindowBits int
	// ClientMaxWindowBits is set when the client can limit its own window
	// on request (§7.1.2.2); ClientMaxWindowBitsValue is the limit the
	// client offered, 8-15, or 0 when the parameter came without a value.
	ClientMaxWindowBits      bool
	ClientMaxWindowBitsValue int
}

// DeflatePolicy is what a server is willing to spend on a connection's
// compression contexts.
type DeflatePolicy struct {
	// ServerContextTakeover lets the server keep its compression context
	// between the messages it sends, which needs a compressor per
	// connection. When false, every accepted offer is answered with
	// server_no_context_takeover (RFC 7692 §7.1.1.1 allows it even when
	// the client did not ask).
	ServerContextTakeover bool
	// ClientContextTakeover lets the client keep its compression context,
	// which makes the server remember the last 32 KiB of the client's
	// messages. When false, every accepted offer is answered with
	// client_no_context_takeover (allowed by §7.1.1.2 even unoffered).
	ClientContextTakeover bool
}

// DeflateParams are the parameters in effect on a connection once an offer
// is accepted: what the server answers, and how both sides compress.
type DeflateParams struct {
	// ServerNoContextTakeover: the server resets its compressor before
	// every message.
	ServerNoContextTakeover bool
	// ClientNoContextTakeover: the client resets its compressor before
	// every message, so the server decompresses each message on its own.
	ClientNoContextTakeover bool
	// ServerMaxWindowBits is the server_max_window_bits value of the
	// response, 8-15, or 0 to leave the parameter out (a 32 KiB window).
	ServerMaxWindowBits int
}

// CompressLimit returns the largest message the server may compress under
// p, or 0 for no limit. The compressor uses a 32 KiB window, so when
// the client asked for a window of 2^N < 2^15 bytes the server honours it
// exactly by compressing each message on its own (no context takeover) and
// only when the message is at most 2^N bytes: no back-reference can then
// reach further than the message itself (RFC 7692 §7.1.2.1: the window the
// server uses must not exceed the value it answered). Larger messages are
// sent uncompressed, which §6 allows for any message.
func (p DeflateParams) CompressLimit() int {
	if p.ServerMaxWindowBits > 0 && p.ServerMaxWindowBits < 15 {
		return 1 << p.ServerMaxWindowBits
	}
	return 0
}

// AppendResponse appends the Sec-WebSocket-Extensions value that accepts
// the offer with parameters p, e.g.
// "permessage-deflate; server_no_context_takeover; client_no_context_takeover".
// Each parameter appears at most once (RFC 7692 §7: a response must not
// repeat one); client_max_window_bits is never sent, because the server can
// decompress any window up to 32 KiB and §7.1.2.2 only lets a server send
// it when the client offered it.
func (p DeflateParams) AppendResponse(dst []byte) []byte {
	dst = append(dst, DeflateExtension...)
	if p.ServerNoContextTakeover {
		dst = append(dst, "; "+paramServerNoContextTakeover...)
	}
	if p.ClientNoContextTakeover {
		dst = append(dst, "; "+paramClientNoContextTakeover...)
	}
	if p.ServerMaxWindowBits > 0 {
		dst = append(dst, "; "+paramServerMaxWindowBits+"="...)
		dst = strconv.AppendInt(dst, int64(p.ServerMaxWindowBits), 10)
	}
	return dst
}

// parseWindowBits parses a max_window_bits value: "a decimal integer value
// without leading zeroes between 8 to 15, inclusive" (RFC 7692 §7.1.2.1 and
// §7.1.2.2). It returns 0 for anything else.
func parseWindowBits(v []byte) int {
	switch len(v) {
	case 1:
		if v[0] >= '8' && v[0] <= '9' {
			return int(v[0] - '0')
		}
	case 2:
		if v[0] == '1' && v[1] >= '0' && v[1] <= '5' {
			return 10 + int(v[1]-'0')
		}
	}
	return 0
}

// ErrDeflateOffer is returned by [ParseDeflateOffer] for an offer a server
// must decline (RFC 7692 §5): an unknown parameter, a parameter with an
// invalid value, or a parameter given twice.
var ErrDeflateOffer = errors.New("websocket: malformed permessage-deflate offer")

// deflateParam applies one parameter of an offer to o. seen tracks the
// parameters already given, one bit each.
func deflateParam(o *DeflateOffer, seen *uint8, name, value []byte) bool {
	var bit uint8
	switch {
	case bytes.EqualFold(name, []byte(paramServerNoContextTakeover)):
		// §7.1.1.1: the parameter "has no value".
		bit = 1
		if value != nil {
			return false
		}
		o.ServerNoContextTakeover = true
	case bytes.EqualFold(name, []byte(paramClientNoContextTakeover)):
		// §7.1.1.2: no value either.
		bit = 2
		if value != nil {
			return false
		}
		o.ClientNoContextTakeover = true
	case bytes.EqualFold(name, []byte(paramServerMaxWindowBits)):
		// §7.1.2.1: a value is required.
		bit = 4
		if o.ServerMaxWindowBits = parseWindowBits(value); o.ServerMaxWindowBits == 0 {
			return false
		}
	case bytes.EqualFold(name, []byte(paramClientMaxWindowBits)):
		// §7.1.2.2: "no value or a decimal integer value ...".
		bit = 8
		o.ClientMaxWindowBits = true
		if value != nil {
			if o.ClientMaxWindowBitsValue = parseWindowBits(value); o.ClientMaxWindowBitsValue == 0 {
				return false
			}
		}
	default:
		// §5: "an extension parameter not defined for use in an offer".
		return false
	}
	// §5: "multiple extension parameters with the same name".
	if *seen&bit != 0 {
		return false
	}
	*seen |= bit
	return true
}

// ParseDeflateOffer parses the parameters of one permessage-deflate offer,
// given as "name" or "name=value" strings ("" value means none). It returns
// [ErrDeflateOffer] for an offer RFC 7692 §5 says to decline.
func ParseDeflateOffer(params ...string) (DeflateOffer, error) {
	var o DeflateOffer
	var seen uint8
	for _, p := range params {
		name, value, ok := bytes.Cut([]byte(p), []byte("="))
		if !ok {
			value = nil
		}
		if !deflateParam(&o, &seen, name, value) {
			return DeflateOffer{}, ErrDeflateOffer
		}
	}
	return o, nil
}

// Accept decides whether a server with policy pol can accept offer o, and
// with which parameters. It declines (ok false) only what it cannot honour:
//
//   - server_no_context_takeover in the offer is always honoured and echoed
//     (§7.1.1.1: the server "MUST include" it).
//   - Without takeover in pol, the response carries
//     server_no_context_takeover and client_no_context_takeover even if
//     not offered (§7.1.1.1 and §7.1.1.2 allow both).
//   - server_max_window_bits=15 is answered with 15. A smaller value N is
//     honoured exactly by compressing every message on its own and only
//     when it is at most 2^N bytes ([DeflateParams.CompressLimit]), so the
//     response then also carries server_no_context_takeover. It is never
//     declined.
//   - client_max_window_bits (with or without a value) needs no answer: the
//     server decompresses any window up to 32 KiB, and a response without
//     the parameter says exactly that (§7.1.2.2).
//
// So Accept declines nothing that parses; the errors are in
// [ParseDeflateOffer].
func (o DeflateOffer) Accept(pol DeflatePolicy) (p DeflateParams, ok bool) {
	p.ServerNoContextTakeover = o.ServerNoContextTakeover || !pol.ServerContextTakeover
	p.ClientNoContextTakeover = o.ClientNoContextTakeover || !pol.ClientContextTakeover
	if o.ServerMaxWindowBits != 0 {
		// §7.1.2.1: accept "by including the server_max_window_bits
		// extension parameter in the extension negotiation response ...
		// with the same or smaller value as the offer".
		p.ServerMaxWindowBits = o.ServerMaxWindowBits
		if o.ServerMaxWindowBits < 15 {
			p.ServerNoContextTakeover = true
		}
	}
	return p, true
}

// NegotiateDeflate chooses the permessage-deflate parameters for an upgrade
// request: it goes through the client's offers in order, across all its
// Sec-WebSocket-Extensions headers, and accepts the first one that parses
// and that [DeflateOffer.Accept] accepts (RFC 7692 §5: the server accepts
// at most one offer, and declines malformed ones, which lets a client list
// fallbacks). A header value that is not a valid extension list is ignored
// as a whole. ok is false when nothing acceptable was offered: the server
// then answers without the extension and neither side compresses.
//
// Extension and parameter names are compared ignoring ASCII case. It does
// not allocate.
func NegotiateDeflate(r *Request, pol DeflatePolicy) (p DeflateParams, ok bool) {
	for i := 0; i < r.nExt && !ok; i++ {
		p, ok = negotiateDeflateValue(r.extensions[i], pol)
	}
	return p, ok
}

// negotiateDeflateValue looks for an acceptable offer in one header value.
func negotiateDeflateValue(v []byte, pol DeflatePolicy) (p DeflateParams, ok bool) {
	// A first pass rejects a malformed list before any of its offers is
	// accepted: ScanOptions reports a syntax error only at its end.
	if !httphead.ScanOptions(v, func(int, []byte, []byte, []byte) httphead.Control { return httphead.ControlContinue }) {
		return p, false
	}
	var (
		cur   = -1 // index of the offer being parsed; -1 before the first
		offer DeflateOffer
		seen  uint8
		bad   bool
	)
	finish := func() bool {
		if cur < 0 || bad {
			return false
		}
		p, ok = offer.Accept(pol)
		return ok
	}
	httphead.ScanOptions(v, func(index int, name, attr, value []byte) httphead.Control {
		if !bytes.EqualFold(name, []byte(DeflateExtension)) {
			// Another extension: judge the offer before it, if any,
			// and ignore this one's parameters. (Not ControlSkip:
			// it skips to the next comma, which may lie past the
			// next option.)
			if cur >= 0 && finish() {
				return httphead.ControlBreak
			}
			cur = -1
			return httphead.ControlContinue
		}
		if index != cur {
			if finish() {
				return httphead.ControlBreak
			}
			cur, offer, seen, bad = index, DeflateOffer{}, 0, false
		}
		if len(attr) > 0 && !bad && !deflateParam(&offer, &seen, attr, value) {
			bad = true // §5: decline this offer, look at the next
		}
		return httphead.ControlContinue
	})
	if !ok {
		finish()
	}
	return p, ok
}

// --- compression (RFC 7692 §7.2) ------------------------------------------

// ErrDeflateData is returned by [Inflater.Inflate] for a compressed payload
// that is not valid DEFLATE data. The connection is failed with 1007: the
// payload is not consistent with the message's type.
var ErrDeflateData = &ProtocolError{CloseInvalidPayload, "invalid permessage-deflate data"}

// ErrInflateRefused is returned by [Inflater.Inflate] when its Grow
// function refused to grow the output: the server is short of memory, for a
// while, so the close code is 1013 Try Again Later.
var ErrInflateRefused = &ProtocolError{CloseTryAgainLater, "server busy: no memory to decompress the message"}

// ErrInflatedTooBig is returned by [Inflater.Inflate] when a message
// decompresses to more than the size limit (a decompression bomb): 1009.
var ErrInflatedTooBig = &ProtocolError{CloseMessageTooBig, "decompressed message exceeds the size limit"}

// appendWriter is the io.Writer a compressor writes into: it appends to b.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// Deflater compresses message payloads for permessage-deflate. It holds one
// flate writer, created on first use, of 0.3 MB (HuffmanOnly) to 1.4 MB
// (level 9), 0.8 MB at the default level 1, and at levels 1 to 6 a 0.3 MB
// Huffman-only writer created when first needed (see [Deflater.Deflate]):
// it belongs to an event loop, not to a connection. A connection that
// keeps its compression context (RFC 7692 §7.1.1) can still share it: keep
// the last bytes the connection sent compressed in a [DeflateHistory] and
// compress each message with [Deflater.DeflateDict]. A Deflater is not safe
// for concurrent use and must not be copied after first use.
type Deflater struct {
	// Level is the flate level: 1 (flate.BestSpeed) to 9, or
	// flate.HuffmanOnly (-2); flate.DefaultCompression (-1) is level 5.
	// 0 means flate.BestSpeed. Set it before first use. At levels 1 to 6
	// a message under 128 bytes is Huffman-coded on its own, without
	// back-references (the dictionary is not used for it).
	Level int

	fw    *flate.Writer
	huff  *flate.Writer // Huffman-only, for what the fast levels store
	level int           // the level fw was made with
	out   appendWriter
}

// ErrDeflateLevel is returned by [Deflater.Deflate] and
// [Deflater.DeflateDict] for a Level outside -2 to 9.
var ErrDeflateLevel = errors.New("websocket: permessage-deflate level must be -2 to 9")

// start makes the writer ready for a message that begins a new stream
// after dict (nil for none). The writer is created on first use.
func (d *Deflater) start(dict []byte) error {
	if d.fw == nil {
		level := d.Level
		if level == 0 {
			level = flate.BestSpeed
		}
		if level < flate.HuffmanOnly || level > flate.BestCompression {
			// Other negative values select a custom window in
			// klauspost's flate; the API does not offer them.
			return ErrDeflateLevel
		}
		fw, err := flate.NewWriter(&d.out, level)
		if err != nil {
			return err
		}
		d.fw, d.level = fw, level
		if len(dict) == 0 {
			return nil
		}
	}
	// ResetDict, never Reset: Reset would prime the window again with
	// the dictionary of the last ResetDict, which is another
	// connection's history by now. The reset itself is cheap at levels
	// 1 to 6 (no hash table is cleared); priming costs about as much as
	// compressing dict.
	d.fw.ResetDict(&d.out, dict)
	return nil
}

// Deflate appends the compressed form of msg to dst, as it goes in the
// payload of a compressed message: the DEFLATE blocks of a sync flush with
// the final 00 00 ff ff removed (RFC 7692 §7.2.1). With takeover false the
// compressor starts from an empty window (no context takeover); with true
// it continues the stream of the previous calls, so the peer must
// decompress every message this Deflater produced, in order. An empty msg
// compresses to the single byte 0x00 (§7.2.3.6).
//
// At levels 1 to 6 a message of 128 bytes or more in which the fast
// encoder finds no match at all is stored, uncompressed; when its byte
// histogram says Huffman coding alone would save an eighth, it is
// compressed again Huffman-only (binary data of a few distinct byte
// values, RFC 7692's "compressible binary"). That output refers to no
// earlier byte, so it is valid whatever the context; with takeover the
// stream then restarts from this message's end, which a sender may do at
// any message (the receiver's window only holds more than is used).
func (d *Deflater) Deflate(dst, msg []byte, takeover bool) ([]byte, error) {
	if !takeover || d.fw == nil {
		if err := d.start(nil); err != nil {
			return dst, err
		}
	}
	c, err := d.compress(dst, msg)
	if err != nil || !d.worthHuffman(len(c)-len(dst), msg) {
		return c, err
	}
	h, err := d.compressHuffman(c[:len(dst)], msg)
	if err == nil && takeover {
		// The fast writer saw msg compressed its way; the peer got it
		// Huffman-coded, so distances from what fw holds are still
		// right, but a fresh start costs nothing and leaves no doubt.
		d.fw.ResetDict(&d.out, nil)
	}
	return h, err
}

// DeflateDict is Deflate for a connection that keeps its compression
// context without owning a compressor: msg is compressed as if the
// compressor had just produced dict, the end of what the connection sent
// compressed so far (the peer's decompressor holds at least the last
// 32 KiB of it, RFC 7692 §7.2.2). Back-references reach at most into dict,
// which may be shorter than the window: a compressor may always use less
// than the negotiated window (§7.1.2.1). Priming costs about as much as
// compressing dict again, so a short dict (a few KiB) keeps most of the
// gain of context takeover for most of the saving in CPU. The caller must
// add msg to its history only if the compressed message is sent.
//
// The Huffman-only second try of [Deflater.Deflate] applies here too.
func (d *Deflater) DeflateDict(dst, msg, dict []byte) ([]byte, error) {
	if err := d.start(dict); err != nil {
		return dst, err
	}
	c, err := d.compress(dst, msg)
	if err != nil || !d.worthHuffman(len(c)-len(dst), msg) {
		return c, err
	}
	return d.compressHuffman(c[:len(dst)], msg)
}

// worthHuffman says whether msg, which the writer compressed to n bytes,
// should be tried Huffman-only: only at the fast levels, only when nothing
// was gained, only from 128 bytes (below, the fast levels already code it
// Huffman-only), and only when the histogram promises an eighth off. The
// histogram is one cheap pass, so random data pays little for the check.
func (d *Deflater) worthHuffman(n int, msg []byte) bool {
	if d.level < flate.BestSpeed || d.level > 6 || n < len(msg) || len(msg) < 128 {
		return false
	}
	return compress.ShannonEntropyBits(msg) < len(msg)*7
}

// compressHuffman appends msg Huffman-coded, with no back-reference.
func (d *Deflater) compressHuffman(dst, msg []byte) ([]byte, error) {
	if d.huff == nil {
		huff, err := flate.NewWriter(&d.out, flate.HuffmanOnly)
		if err != nil {
			return dst, err
		}
		d.huff = huff
	} else {
		d.huff.Reset(&d.out)
	}
	return d.flush(d.huff, dst, msg)
}

// compress runs msg through the writer as it stands and ends it with a
// sync flush whose tail it removes.
func (d *Deflater) compress(dst, msg []byte) ([]byte, error) {
	return d.flush(d.fw, dst, msg)
}

// flush writes msg to fw, which writes into d.out, and ends it with a sync
// flush whose tail it removes.
func (d *Deflater) flush(fw *flate.Writer, dst, msg []byte) ([]byte, error) {
	d.out.b = dst
	start := len(dst)
	_, err := fw.Write(msg)
	if err == nil {
		err = fw.Flush()
	}
	out := d.out.b
	d.out.b = nil
	if err != nil {
		return dst, err
	}
	// §7.2.1: remove the 00 00 ff ff the sync flush ended with.
	if len(out)-start < len(deflateTail) || !bytes.Equal(out[len(out)-4:], deflateTail) {
		return dst, errors.New("websocket: flate flush did not end with 00 00 ff ff")
	}
	return out[:len(out)-4], nil
}

// Reset drops the compression context, so that the next Deflate with
// takeover starts a new stream.
func (d *Deflater) Reset() {
	if d.fw != nil {
		d.fw.ResetDict(&d.out, nil)
	}
}

// maxKeptInput is the largest input copy an [Inflater] keeps between
// messages; a larger one is dropped after use, so that one big message
// does not pin its size in every event loop.
const maxKeptInput = 64 << 10

// Inflater decompresses message payloads for permessage-deflate. It holds
// one flate reader, about 50 KB, created on first use; a connection's
// context, when the client keeps one, is a [DeflateHistory] passed to each
// call, so one Inflater serves every connection of an event loop. It is not
// safe for concurrent use.
type Inflater struct {
	// Grow, if set, returns b with room for at least n more bytes (a
	// pooled buffer); nil uses append. A Grow that returns a buffer with
	// no room left refuses: Inflate then stops with [ErrInflateRefused]
	// (a server out of memory for inbound messages).
	Grow func(b []byte, n int) []byte

	fr io.ReadCloser
	// in is the payload followed by inflateTail in one slice, read
	// through rd: the decoder has a fast path for a *bytes.Reader that a
	// reader chaining the two pieces would miss (an interface call per
	// input byte). Copying the compressed bytes costs far less than
	// decompressing them.
	in []byte
	rd bytes.Reader
}

// Inflate appends the decompressed form of a compressed message's payload
// (all its frames' payloads together) to dst. dict is the window the client
// compressed against: the recent output of this connection when it keeps
// its context (see [DeflateHistory]), nil otherwise. The output is limited
// to max bytes (a negative max means no limit): past it Inflate stops at
// once, having grown dst by at most max+1 bytes, and returns
// [ErrInflatedTooBig], so a small payload cannot expand into a large
// allocation. Invalid data gives [ErrDeflateData].
//
// An empty payload decompresses to an empty message (RFC 7692 §7.2.3.6
// sends an empty message as a single 0x00 byte; an empty payload is
// accepted too).
func (f *Inflater) Inflate(dst, payload, dict []byte, max int64) ([]byte, error) {
	if len(payload) == 0 {
		return dst, nil
	}
	// RFC 7692 §7.2.2: append 00 00 ff ff; then a final empty stored
	// block, so that the decoder ends with io.EOF exactly at the end of
	// the message and a message cut inside a block is an error.
	f.in = append(append(f.in[:0], payload...), inflateTail...)
	f.rd.Reset(f.in)
	if f.fr == nil {
		f.fr = flate.NewReaderDict(&f.rd, dict)
	} else if err := f.fr.(flate.Resetter).Reset(&f.rd, dict); err != nil {
		return dst, err
	}
	defer f.release()
	start := len(dst)
	for {
		if len(dst) == cap(dst) {
			n := 4 << 10
			if len(payload) > n {
				n = len(payload) * 2
			}
			if f.Grow != nil {
				if dst = f.Grow(dst, n); len(dst) == cap(dst) {
					return dst[:start], ErrInflateRefused
				}
			} else {
				dst = slices.Grow(dst, n)
			}
		}
		room := dst[len(dst):cap(dst)]
		if max >= 0 {
			// Read at most one byte past the limit.
			if left := max + 1 - int64(len(dst)-start); int64(len(room)) > left {
				room = room[:left]
			}
		}
		n, err := f.fr.Read(room)
		dst = dst[:len(dst)+n]
		if max >= 0 && int64(len(dst)-start) > max {
			return dst[:start], ErrInflatedTooBig
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst[:start], ErrDeflateData
		}
	}
}

// release drops what the last Inflate read: the reference to dict inside
// the decoder goes with the next Reset, the input copy now if it is large.
func (f *Inflater) release() {
	f.rd.Reset(nil)
	if cap(f.in) > maxKeptInput {
		f.in = nil
	}
}

// DeflateHistory is the sliding window of one direction of a connection
// that keeps its compression context: the last bytes of the messages
// decompressed so far, to be passed as dict to [Inflater.Inflate] (the
// client's messages, with the full [DeflateWindow]), or of the messages
// sent compressed, to be passed to [Deflater.DeflateDict] (where a few KiB
// are enough). Its buffer, of Size bytes, is allocated on first use.
type DeflateHistory struct {
	// Size is the most bytes kept, 1 to DeflateWindow; 0 or anything
	// else means DeflateWindow. Set it before first use.
	Size int

	buf []byte
}

// size is the number of bytes h keeps.
func (h *DeflateHistory) size() int {
	if h.Size <= 0 || h.Size > DeflateWindow {
		return DeflateWindow
	}
	return h.Size
}

// Bytes returns the window, oldest byte first.
func (h *DeflateHistory) Bytes() []byte { return h.buf }

// Add appends a message to the window, keeping its last Size bytes.
func (h *DeflateHistory) Add(msg []byte) {
	size := h.size()
	if h.buf == nil {
		h.buf = make([]byte, 0, size)
	}
	if len(msg) >= size {
		h.buf = append(h.buf[:0], msg[len(msg)-size:]...)
		return
	}
	if over := len(h.buf) + len(msg) - size; over > 0 {
		n := copy(h.buf, h.buf[over:])
		h.buf = h.buf[:n]
	}
	h.buf = append(h.buf, msg...)
}

// --- prepared frames ------------------------------------------------------

// preparedDeflate is the lazily built compressed variant of a
// [PreparedFrame].
type preparedDeflate struct {
	once  sync.Once
	frame []byte
}

// Payload returns the frame's payload. The caller must not modify it.
func (f *PreparedFrame) Payload() []byte {
	switch f.buf[1] & 0x7F {
	case 126:
		return f.buf[4:]
	case 127:
		return f.buf[10:]
	}
	return f.buf[2:]
}

// Deflated returns the frame as a compressed message (RSV1 set, RFC 7692
// §6) for receivers that negotiated server_no_context_takeover: every such
// receiver can decompress the same bytes, so a broadcast compresses once.
// compress produces the compressed payload (see [Deflater.Deflate] with
// takeover false); it is called by the first caller only and its result is
// kept. When compression does not make the frame smaller, or fails, the
// plain frame is returned: §6 lets any message go uncompressed. Safe for
// concurrent use.
func (f *PreparedFrame) Deflated(compress func(dst, payload []byte) ([]byte, error)) []byte {
	f.defl.once.Do(func() {
		f.defl.frame = f.buf
		if f.op.IsControl() {
			return // §6: control frames are never compressed
		}
		payload := f.Payload()
		c, err := compress(make([]byte, 0, len(payload)+16), payload)
		if err != nil || len(c) >= len(payload) {
			return
		}
		b := AppendFrameHeader(make([]byte, 0, MaxHeaderSize+len(c)), true, f.op, 0x40, len(c))
		f.defl.frame = append(b, c...)
	})
	return f.defl.frame
}
