package codec

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// deflRequest parses an upgrade request carrying the given
// Sec-WebSocket-Extensions header lines.
func deflRequest(t testing.TB, ext ...string) *Request {
	t.Helper()
	h := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, e := range ext {
		h += "Sec-WebSocket-Extensions: " + e + "\r\n"
	}
	h += "\r\n"
	var r Request
	if err := ParseRequest([]byte(h), &r); err != nil {
		t.Fatalf("ParseRequest: %v", err)
	}
	return &r
}

// TestNegotiateDeflate checks offer parsing and the response against RFC
// 7692 §5 and §7.1: the first acceptable offer wins, malformed offers are
// declined (not fatal), and the response only carries what the RFC allows.
func TestNegotiateDeflate(t *testing.T) {
	none := DeflatePolicy{}
	both := DeflatePolicy{ServerContextTakeover: true, ClientContextTakeover: true}
	const (
		pmd  = "permessage-deflate"
		nctx = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
	)
	cases := []struct {
		name  string
		ext   []string
		pol   DeflatePolicy
		want  string // "" means declined
		limit int
	}{
		{"no header", nil, none, "", 0},
		{"plain offer, no takeover policy: both no_context_takeover added (§7.1.1.1, §7.1.1.2 MAY)", []string{pmd}, none, nctx, 0},
		{"plain offer, takeover policy", []string{pmd}, both, pmd, 0},
		{"server_no_context_takeover offered is echoed (§7.1.1.1 MUST)", []string{pmd + "; server_no_context_takeover"}, both, pmd + "; server_no_context_takeover", 0},
		{"client_no_context_takeover offered is echoed", []string{pmd + "; client_no_context_takeover"}, both, pmd + "; client_no_context_takeover", 0},
		{"client_max_window_bits without value: not answered (§7.1.2.2)", []string{pmd + "; client_max_window_bits"}, both, pmd, 0},
		{"client_max_window_bits=10: not answered, any window decompresses", []string{pmd + "; client_max_window_bits=10"}, both, pmd, 0},
		{"server_max_window_bits=15 answered with 15 (§7.1.2.1)", []string{pmd + "; server_max_window_bits=15"}, both, pmd + "; server_max_window_bits=15", 0},
		{"server_max_window_bits=10: honoured by no takeover and a size limit", []string{pmd + "; server_max_window_bits=10"}, both, pmd + "; server_no_context_takeover; server_max_window_bits=10", 1024},
		{"server_max_window_bits=8", []string{pmd + "; server_max_window_bits=8"}, none, nctx + "; server_max_window_bits=8", 256},
		{"quoted value (RFC 6455 §9.1)", []string{pmd + `; server_max_window_bits="9"`}, none, nctx + "; server_max_window_bits=9", 512},
		{"all four parameters", []string{pmd + "; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=9"}, both, nctx + "; server_max_window_bits=12", 4096},
		{"names ignore case", []string{"Permessage-Deflate; Server_No_Context_Takeover"}, both, pmd + "; server_no_context_takeover", 0},

		// §5: "A server MUST decline an extension negotiation offer for
		// this extension if ..."
		{"unknown parameter declined", []string{pmd + "; foo"}, none, "", 0},
		{"unknown parameter with value declined", []string{pmd + "; foo=1"}, none, "", 0},
		{"duplicate parameter declined", []string{pmd + "; server_no_context_takeover; server_no_context_takeover"}, none, "", 0},
		{"duplicate window bits declined", []string{pmd + "; client_max_window_bits; client_max_window_bits=10"}, none, "", 0},
		{"no_context_takeover with a value declined", []string{pmd + "; client_no_context_takeover=1"}, none, "", 0},
		{"server_max_window_bits without value declined", []string{pmd + "; server_max_window_bits"}, none, "", 0},
		{"server_max_window_bits=7 declined", []string{pmd + "; server_max_window_bits=7"}, none, "", 0},
		{"server_max_window_bits=16 declined", []string{pmd + "; server_max_window_bits=16"}, none, "", 0},
		{"leading zero declined", []string{pmd + "; server_max_window_bits=09"}, none, "", 0},
		{"client_max_window_bits=abc declined", []string{pmd + "; client_max_window_bits=abc"}, none, "", 0},
		{"client_max_window_bits=-1 declined", []string{pmd + "; client_max_window_bits=-1"}, none, "", 0},
		{"malformed header list ignored", []string{pmd + ";;"}, none, "", 0},
		{"other extension only", []string{"x-webkit-deflate-frame"}, none, "", 0},

		// The first acceptable offer wins.
		{"bad offer then good offer", []string{pmd + "; foo, " + pmd + "; client_no_context_takeover"}, both, pmd + "; client_no_context_takeover", 0},
		{"first of two good offers", []string{pmd + "; server_max_window_bits=10, " + pmd}, both, pmd + "; server_no_context_takeover; server_max_window_bits=10", 1024},
		{"other extension before", []string{"x-foo; a=1; b, " + pmd + "; server_no_context_takeover"}, both, pmd + "; server_no_context_takeover", 0},
		{"other extension after a bad offer", []string{pmd + "; bad, x-foo; a, " + pmd}, both, pmd, 0},
		{"second header line", []string{"x-foo", pmd}, both, pmd, 0},
		{"bad first header line, good second", []string{pmd + "; x=1", pmd + "; client_max_window_bits"}, both, pmd, 0},
		{"malformed first line ignored as a whole", []string{pmd + ", ;", pmd + "; server_no_context_takeover"}, both, pmd + "; server_no_context_takeover", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := NegotiateDeflate(deflRequest(t, tc.ext...), tc.pol)
			if tc.want == "" {
				if ok {
					t.Fatalf("accepted %q with %+v, want declined", tc.ext, p)
				}
				return
			}
			if !ok {
				t.Fatalf("declined %q, want %q", tc.ext, tc.want)
			}
			if got := string(p.AppendResponse(nil)); got != tc.want {
				t.Fatalf("response %q, want %q", got, tc.want)
			}
			if got := p.CompressLimit(); got != tc.limit {
				t.Fatalf("CompressLimit %d, want %d", got, tc.limit)
			}
		})
	}
}

func TestParseDeflateOffer(t *testing.T) {
	o, err := ParseDeflateOffer("server_no_context_takeover", "client_max_window_bits", "server_max_window_bits=11")
	if err != nil {
		t.Fatal(err)
	}
	want := DeflateOffer{ServerNoContextTakeover: true, ClientMaxWindowBits: true, ServerMaxWindowBits: 11}
	if o != want {
		t.Fatalf("got %+v, want %+v", o, want)
	}
	for _, bad := range [][]string{{"x"}, {"server_max_window_bits="}, {"client_max_window_bits=", "client_max_window_bits"}, {"client_no_context_takeover", "client_no_context_takeover"}} {
		if _, err := ParseDeflateOffer(bad...); !errors.Is(err, ErrDeflateOffer) {
			t.Errorf("%q: err %v, want ErrDeflateOffer", bad, err)
		}
	}
}

func TestNegotiateDeflateAllocs(t *testing.T) {
	r := deflRequest(t, "x-foo; a=1, permessage-deflate; bad, permessage-deflate; client_max_window_bits; server_max_window_bits=15")
	dst := make([]byte, 0, 128)
	n := testing.AllocsPerRun(100, func() {
		p, ok := NegotiateDeflate(r, DeflatePolicy{})
		if !ok {
			t.Fatal("declined")
		}
		dst = p.AppendResponse(dst[:0])
	})
	if n != 0 {
		t.Fatalf("%v allocations per negotiation, want 0", n)
	}
}

// deflPayloads returns test messages: empty, tiny, text, repetitive,
// random (incompressible) and larger than the window.
func deflPayloads() map[string][]byte {
	rng := rand.New(rand.NewSource(7))
	random := make([]byte, 70000)
	rng.Read(random)
	text := []byte(strings.Repeat("Hello, permessage-deflate! κόσμε ", 3000))
	return map[string][]byte{
		"empty":  {},
		"one":    {'x'},
		"short":  []byte("Hello"),
		"text":   text,
		"zeros":  make([]byte, 200000),
		"random": random,
	}
}

// stdInflate decompresses one compressed message with a fresh stdlib reader
// after restoring the tail (RFC 7692 §7.2.2), independently of Inflater.
func stdInflate(t *testing.T, dict, c []byte) []byte {
	t.Helper()
	r := flate.NewReaderDict(io.MultiReader(bytes.NewReader(c), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff})), dict)
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("stdlib inflate: %v", err)
	}
	return out
}

// TestDeflateRoundTrip compresses messages without and with context
// takeover and decompresses them with Inflater and with the stdlib.
func TestDeflateRoundTrip(t *testing.T) {
	for _, level := range []int{0, flate.BestCompression, flate.HuffmanOnly} {
		for _, takeover := range []bool{false, true} {
			var d Deflater
			d.Level = level
			var inf Inflater
			var hist, stdHist DeflateHistory
			for name, msg := range deflPayloads() {
				for rep := 0; rep < 2; rep++ {
					c, err := d.Deflate(nil, msg, takeover)
					if err != nil {
						t.Fatal(err)
					}
					if len(msg) == 0 && !bytes.Equal(c, []byte{0}) {
						t.Errorf("empty message compressed to %x, want 00 (RFC 7692 §7.2.3.6)", c)
					}
					var dict []byte
					if takeover {
						dict = hist.Bytes()
					}
					got, err := inf.Inflate(nil, c, dict, -1)
					if err != nil {
						t.Fatalf("level %d takeover %v %s: %v", level, takeover, name, err)
					}
					if !bytes.Equal(got, msg) {
						t.Fatalf("level %d takeover %v %s: round trip differs (%d bytes, want %d)", level, takeover, name, len(got), len(msg))
					}
					var sdict []byte
					if takeover {
						sdict = stdHist.Bytes()
					}
					if std := stdInflate(t, sdict, c); !bytes.Equal(std, msg) {
						t.Fatalf("level %d takeover %v %s: stdlib decodes differently", level, takeover, name)
					}
					hist.Add(got)
					stdHist.Add(msg)
				}
			}
		}
	}
}

// TestDeflateTakeoverGain checks that context takeover really carries the
// window: the second copy of a message costs a few bytes.
func TestDeflateTakeoverGain(t *testing.T) {
	// At least 128 bytes: at levels 1 to 6 a shorter message is
	// Huffman-coded on its own, without back-references.
	msg := []byte(`{"type":"quote","symbol":"WSLP","bid":101.25,"ask":101.27,"ts":1732460000,"venue":"XWSL","seq":123456789,"flags":["live","firm"]}`)
	var d Deflater
	d.Level = flate.DefaultCompression
	first, _ := d.Deflate(nil, msg, true)
	second, _ := d.Deflate(nil, msg, true)
	if len(second) >= len(first)/2 {
		t.Fatalf("second message %d bytes, first %d: context not kept", len(second), len(first))
	}
	var inf Inflater
	var h DeflateHistory
	for _, c := range [][]byte{first, second} {
		got, err := inf.Inflate(nil, c, h.Bytes(), -1)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("inflate: %q, %v", got, err)
		}
		h.Add(got)
	}
	// Without the history the second message cannot be decoded.
	if got, err := inf.Inflate(nil, second, nil, -1); err == nil && bytes.Equal(got, msg) {
		t.Fatal("second message decoded without its context")
	}
}

// TestDeflateDict: a shared Deflater primed with each connection's own
// history gives the gain of context takeover, interleaving connections;
// the peers decode with their full 32 KiB window (the stdlib decoder here,
// independently of Inflater). A message sent without a dictionary right
// after one sent with a dictionary must not refer to that dictionary.
func TestDeflateDict(t *testing.T) {
	type peer struct {
		sent, recv DeflateHistory // sender's short dictionary, receiver's window
		sizes      []int
	}
	const window = 4 << 10
	peers := make([]*peer, 3)
	for i := range peers {
		peers[i] = &peer{sent: DeflateHistory{Size: window}}
	}
	var d Deflater // one for all: the per-loop compressor
	rng := rand.New(rand.NewSource(3))
	for round := 0; round < 40; round++ {
		for i, p := range peers {
			msg := fmt.Appendf(nil, `{"peer":%d,"round":%d,"user":"user-%d","text":"the same words every time, the same words every time","more":"and then some more of them"}`, i, round, rng.Intn(1000))
			if round%7 == 6 {
				msg = bytes.Repeat(msg, 200) // past the short dictionary
			}
			c, err := d.DeflateDict(nil, msg, p.sent.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if got := stdInflate(t, p.recv.Bytes(), c); !bytes.Equal(got, msg) {
				t.Fatalf("peer %d round %d: decoded differently", i, round)
			}
			p.sent.Add(msg)
			p.recv.Add(msg)
			if len(msg) < 1000 {
				p.sizes = append(p.sizes, len(c))
			}
		}
		// A message without context in between, on the same Deflater:
		// it must decode with no dictionary at all.
		plain := fmt.Appendf(nil, `{"peer":%d,"round":%d,"user":"user-%d","text":"the same words every time, the same words every time"}`, 0, round, 1)
		c, err := d.Deflate(nil, plain, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := stdInflate(t, nil, c); !bytes.Equal(got, plain) {
			t.Fatalf("round %d: a message without context referred to a dictionary", round)
		}
	}
	if len(peers[0].sent.Bytes()) != window {
		t.Fatalf("sent history holds %d bytes, want its Size %d", len(peers[0].sent.Bytes()), window)
	}
	for i, p := range peers {
		if last := p.sizes[len(p.sizes)-1]; last >= p.sizes[0]/2 {
			t.Errorf("peer %d: compressed sizes %v: the dictionary was not used", i, p.sizes)
		}
	}
}

// TestDeflateHuffmanFallback: binary data of few distinct byte values has
// no LZ77 match, so the fast levels would store it; Huffman coding alone
// halves it. It must decode with and without takeover, and the stream must
// go on correctly after it. Random data stays stored.
func TestDeflateHuffmanFallback(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	nibbles := make([]byte, 4096)
	for i := range nibbles {
		nibbles[i] = byte(rng.Intn(16)) * 17
	}
	random := make([]byte, 4096)
	rng.Read(random)
	text := []byte(strings.Repeat("text after the binary, with matches, text after the binary. ", 10))
	for _, takeover := range []bool{false, true} {
		var d Deflater
		var hist DeflateHistory
		for _, m := range []struct {
			name string
			msg  []byte
			max  int // largest acceptable compressed size
		}{{"nibbles", nibbles, len(nibbles) * 6 / 10}, {"text", text, len(text) / 3}, {"random", random, len(random) + 16}, {"text", text, len(text) / 3}} {
			c, err := d.Deflate(nil, m.msg, takeover)
			if err != nil {
				t.Fatal(err)
			}
			if len(c) > m.max {
				t.Errorf("takeover %v, %s: %d bytes compressed to %d, want at most %d", takeover, m.name, len(m.msg), len(c), m.max)
			}
			var dict []byte
			if takeover {
				dict = hist.Bytes()
			}
			if got := stdInflate(t, dict, c); !bytes.Equal(got, m.msg) {
				t.Fatalf("takeover %v, %s: decoded differently", takeover, m.name)
			}
			hist.Add(m.msg)
		}
	}
	var d Deflater
	var h DeflateHistory
	h.Add(text)
	c, err := d.DeflateDict(nil, nibbles, h.Bytes())
	if err != nil || len(c) > len(nibbles)*6/10 {
		t.Fatalf("DeflateDict: %d bytes, %v", len(c), err)
	}
	if got := stdInflate(t, h.Bytes(), c); !bytes.Equal(got, nibbles) {
		t.Fatal("DeflateDict: decoded differently")
	}
}

// TestDeflateDictAllocs: the shared compressor allocates nothing per
// message once warm, with or without a dictionary, so a takeover
// connection costs exactly its histories.
func TestDeflateDictAllocs(t *testing.T) {
	var d Deflater
	var h DeflateHistory
	h.Size = 4 << 10
	msg := []byte(strings.Repeat(`{"k":"v","n":12345},`, 40))
	buf := make([]byte, 0, 2*len(msg)+64)
	h.Add(msg)
	_, _ = d.DeflateDict(buf, msg, h.Bytes())
	if n := testing.AllocsPerRun(100, func() {
		_, _ = d.DeflateDict(buf[:0], msg, h.Bytes())
		_, _ = d.Deflate(buf[:0], msg, false)
		h.Add(msg)
	}); n != 0 {
		t.Fatalf("%v allocations per message", n)
	}
}

// TestInflateLimit is the decompression bomb: the output stops one byte
// past the limit, whatever the payload expands to.
func TestInflateLimit(t *testing.T) {
	var d Deflater
	bomb, _ := d.Deflate(nil, make([]byte, 8<<20), false)
	t.Logf("8 MiB of zeros compress to %d bytes", len(bomb))
	var inf Inflater
	var grown int
	inf.Grow = func(b []byte, n int) []byte {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		grown = cap(nb)
		return nb
	}
	const max = 64 << 10
	dst := []byte("keep")
	out, err := inf.Inflate(dst, bomb, nil, max)
	if !errors.Is(err, ErrInflatedTooBig) {
		t.Fatalf("err %v, want ErrInflatedTooBig", err)
	}
	if err.(*ProtocolError).Code != CloseMessageTooBig {
		t.Fatalf("code %d, want 1009", err.(*ProtocolError).Code)
	}
	if string(out) != "keep" {
		t.Fatalf("dst changed to %d bytes on error", len(out))
	}
	if grown > 4*max {
		t.Fatalf("buffer grew to %d bytes for a limit of %d", grown, max)
	}
	// Exactly at the limit is fine.
	msg := bytes.Repeat([]byte("a"), max)
	c, _ := d.Deflate(nil, msg, false)
	if out, err := inf.Inflate(nil, c, nil, max); err != nil || len(out) != max {
		t.Fatalf("message of exactly the limit: %d bytes, %v", len(out), err)
	}
	if _, err := inf.Inflate(nil, c, nil, max-1); !errors.Is(err, ErrInflatedTooBig) {
		t.Fatalf("one byte over: %v", err)
	}
}

func TestInflateInvalid(t *testing.T) {
	var inf Inflater
	for _, p := range [][]byte{
		{0xff, 0xff, 0xff},             // reserved block type 11
		{0x02, 0x00, 0x00, 0x00, 0x00}, // stored block, LEN/NLEN mismatch... after BTYPE bits
		[]byte("not deflate at all, just text"),
	} {
		if _, err := inf.Inflate(nil, p, nil, 1<<20); !errors.Is(err, ErrDeflateData) {
			t.Errorf("%x: err %v, want ErrDeflateData", p, err)
		}
	}
	// A truncated stream (the message cut in the middle of a block) is
	// invalid too, not a shorter message.
	var d Deflater
	c, _ := d.Deflate(nil, []byte(strings.Repeat("abcdefgh", 1000)), false)
	if _, err := inf.Inflate(nil, c[:len(c)/2], nil, 1<<20); err == nil {
		t.Error("truncated stream accepted")
	}
	// An empty payload is an empty message.
	if out, err := inf.Inflate(nil, nil, nil, 10); err != nil || len(out) != 0 {
		t.Errorf("empty payload: %q, %v", out, err)
	}
	// And the inflater still works after errors.
	good, _ := d.Deflate(nil, []byte("fine"), false)
	if out, err := inf.Inflate(nil, good, nil, 10); err != nil || string(out) != "fine" {
		t.Errorf("after errors: %q, %v", out, err)
	}
}

func TestDeflateHistory(t *testing.T) {
	for _, size := range []int{0, 4 << 10, DeflateWindow, DeflateWindow + 1} {
		h := DeflateHistory{Size: size}
		keep := size
		if keep == 0 || keep > DeflateWindow {
			keep = DeflateWindow
		}
		var all []byte
		rng := rand.New(rand.NewSource(1))
		for _, n := range []int{0, 10, 1000, 30000, 5000, DeflateWindow, 40000, 1, 7, 4095, 4096, 3} {
			m := make([]byte, n)
			rng.Read(m)
			h.Add(m)
			all = append(all, m...)
			want := all
			if len(want) > keep {
				want = want[len(want)-keep:]
			}
			if !bytes.Equal(h.Bytes(), want) {
				t.Fatalf("size %d, after adding %d bytes: window of %d bytes differs", size, n, len(h.Bytes()))
			}
			if cap(h.Bytes()) != keep {
				t.Fatalf("size %d: buffer of %d bytes, want %d", size, cap(h.Bytes()), keep)
			}
		}
	}
}

// TestDecoderCompressionRSV covers the framing rules RFC 7692 §6 adds to
// RFC 6455 §5.2: RSV1 is allowed on the first frame of a data message only,
// and only when permessage-deflate was negotiated.
func TestDecoderCompressionRSV(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	frame := func(fin bool, op OpCode, rsv byte, p string) []byte {
		return AppendMaskedFrame(nil, fin, op, rsv, key, []byte(p))
	}
	run := func(compression bool, in []byte) ([]Event, error) {
		d := Decoder{Compression: compression}
		var evs []Event
		for len(in) > 0 {
			n, ev, err := d.Decode(in)
			if err != nil {
				return evs, err
			}
			if n == 0 {
				break
			}
			if ev.Kind != EventNone {
				ev.Payload = append([]byte(nil), ev.Payload...)
				evs = append(evs, ev)
			}
			in = in[n:]
		}
		return evs, nil
	}

	// Allowed: RSV1 on a single frame and on the first of a fragmented
	// message; every piece of that message is marked Compressed, and the
	// next message is not.
	in := bytes.Join([][]byte{
		frame(true, OpText, 0x40, "\xff\xfe"), // not UTF-8: compressed text is checked after inflating
		frame(false, OpBinary, 0x40, "ab"),
		frame(true, OpPing, 0, "p"),
		frame(true, OpContinuation, 0, "cd"),
		frame(true, OpText, 0, "plain"),
	}, nil)
	evs, err := run(true, in)
	if err != nil {
		t.Fatalf("valid stream: %v", err)
	}
	wantComp := []bool{true, true, false, true, false}
	if len(evs) != len(wantComp) {
		t.Fatalf("%d events, want %d", len(evs), len(wantComp))
	}
	for i, ev := range evs {
		if ev.Compressed != wantComp[i] {
			t.Errorf("event %d (%v %q): Compressed %v, want %v", i, ev.Op, ev.Payload, ev.Compressed, wantComp[i])
		}
	}

	bad := []struct {
		name        string
		compression bool
		in          []byte
	}{
		{"RSV1 without negotiation", false, frame(true, OpText, 0x40, "x")},
		{"RSV1 on a continuation frame", true, append(frame(false, OpText, 0x40, "a"), frame(true, OpContinuation, 0x40, "b")...)},
		{"RSV1 on a continuation of an uncompressed message", true, append(frame(false, OpText, 0, "a"), frame(true, OpContinuation, 0x40, "b")...)},
		{"RSV1 on a ping", true, frame(true, OpPing, 0x40, "")},
		{"RSV1 on a pong", true, frame(true, OpPong, 0x40, "")},
		{"RSV1 on a close", true, frame(true, OpClose, 0x40, "\x03\xe8")},
		{"RSV2 on a data frame", true, frame(true, OpText, 0x20, "x")},
		{"RSV3 on a data frame", true, frame(true, OpBinary, 0x10, "x")},
		{"RSV1 and RSV2", true, frame(true, OpText, 0x60, "x")},
	}
	for _, tc := range bad {
		_, err := run(tc.compression, tc.in)
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Code != CloseProtocolError {
			t.Errorf("%s: err %v, want a 1002 protocol error", tc.name, err)
		}
	}
}

// TestPreparedFrameDeflated checks the shared compressed variant a
// broadcast uses: built once, RSV1 on a final frame, plain when it does
// not pay or for control frames.
func TestPreparedFrameDeflated(t *testing.T) {
	var mu sync.Mutex
	var d Deflater
	var calls atomic.Int32
	compress := func(dst, p []byte) ([]byte, error) {
		calls.Add(1)
		mu.Lock()
		defer mu.Unlock()
		return d.Deflate(dst, p, false)
	}
	msg := bytes.Repeat([]byte("broadcast "), 1000)
	f := NewPreparedFrame(OpText, msg)
	if !bytes.Equal(f.Payload(), msg) {
		t.Fatal("Payload differs")
	}
	var wg sync.WaitGroup
	outs := make([][]byte, 8)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = f.Deflated(compress)
		}()
	}
	wg.Wait()
	if calls.Load() != 1 {
		t.Fatalf("compressed %d times, want once", calls.Load())
	}
	b := outs[0]
	for _, o := range outs {
		if &o[0] != &b[0] {
			t.Fatal("callers got different variants")
		}
	}
	if b[0] != 0x80|0x40|byte(OpText) {
		t.Fatalf("first byte %#x, want FIN|RSV1|text", b[0])
	}
	var dec Decoder
	dec.Client, dec.Compression = true, true
	_, ev, err := dec.Decode(append([]byte(nil), b...))
	if err != nil || !ev.Compressed || !ev.Final {
		t.Fatalf("decode: %+v %v", ev, err)
	}
	var inf Inflater
	if got, err := inf.Inflate(nil, ev.Payload, nil, -1); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("inflate: %v", err)
	}

	// Random bytes do not compress: the plain frame is used.
	rnd := make([]byte, 1000)
	rand.New(rand.NewSource(3)).Read(rnd)
	fr := NewPreparedFrame(OpBinary, rnd)
	if got := fr.Deflated(compress); !bytes.Equal(got, fr.Bytes()) {
		t.Fatal("incompressible payload: want the plain frame")
	}
	fp := NewPreparedFrame(OpPing, []byte("ping ping ping ping ping ping ping ping"))
	if got := fp.Deflated(compress); !bytes.Equal(got, fp.Bytes()) {
		t.Fatal("control frame compressed (RFC 7692 §6 forbids it)")
	}
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		f := NewPreparedFrame(OpBinary, make([]byte, n))
		if len(f.Payload()) != n {
			t.Fatalf("Payload of a %d-byte frame is %d bytes", n, len(f.Payload()))
		}
	}
}

// FuzzNegotiateDeflate: any header value negotiates without panicking, and
// an accepted offer gives a response that negotiates to itself.
func FuzzNegotiateDeflate(f *testing.F) {
	for _, s := range []string{
		"permessage-deflate",
		"permessage-deflate; client_max_window_bits",
		"permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
		"x-foo; a=\"b\\\"c\", permessage-deflate; foo",
		"permessage-deflate;;",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if strings.ContainsAny(v, "\r\n") {
			return
		}
		h := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
			"Sec-WebSocket-Extensions: " + v + "\r\n\r\n"
		var r Request
		if ParseRequest([]byte(h), &r) != nil {
			return
		}
		p, ok := NegotiateDeflate(&r, DeflatePolicy{ServerContextTakeover: true})
		if !ok {
			return
		}
		resp := p.AppendResponse(nil)
		p2, ok := NegotiateDeflate(deflRequest(t, string(resp)), DeflatePolicy{ServerContextTakeover: true})
		if !ok || p2 != p {
			t.Fatalf("response %q renegotiates to %+v %v, want %+v", resp, p2, ok, p)
		}
	})
}

// FuzzInflate: whatever a client sends as a compressed payload, Inflate
// returns a message within the limit or one of its two errors, never
// panics, and the same Inflater then decodes a good message correctly (no
// state leaks from a failed message into the next connection's).
func FuzzInflate(f *testing.F) {
	var d Deflater
	good := []byte(strings.Repeat(`{"ok":true,"n":1},`, 20))
	goodC, _ := d.Deflate(nil, good, false)
	f.Add(goodC, []byte(nil), uint16(1000))
	f.Add([]byte{0x00}, []byte("dict"), uint16(10))
	f.Add([]byte{0xff, 0xff, 0xff}, []byte(nil), uint16(100))
	bomb, _ := d.Deflate(nil, make([]byte, 1<<16), false)
	f.Add(bomb, []byte(nil), uint16(500))
	f.Fuzz(func(t *testing.T, payload, dict []byte, max uint16) {
		var inf Inflater
		out, err := inf.Inflate([]byte("x"), payload, dict, int64(max))
		switch {
		case err == nil:
			if len(out)-1 > int(max) {
				t.Fatalf("%d bytes out for a limit of %d", len(out)-1, max)
			}
		case errors.Is(err, ErrInflatedTooBig), errors.Is(err, ErrDeflateData):
			if string(out) != "x" {
				t.Fatalf("dst changed to %d bytes on error", len(out))
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
		if got, err := inf.Inflate(nil, goodC, nil, -1); err != nil || !bytes.Equal(got, good) {
			t.Fatalf("the next message: %v", err)
		}
	})
}
