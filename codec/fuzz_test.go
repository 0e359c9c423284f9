package codec

import (
	"bytes"
	"encoding/base64"
	"errors"
	"math/rand"
	"reflect"
	"testing"
)

// fuzzConfig turns a fuzzer byte into a decoder configuration: client or
// server side, permessage-deflate RSV1 allowed or not, and a small, the
// default, or no message size limit.
func fuzzConfig(cfg uint8) Decoder {
	d := Decoder{Client: cfg&1 != 0, Compression: cfg&2 != 0}
	switch cfg >> 2 & 3 {
	case 1:
		d.MaxMessageSize = 100
	case 2:
		d.MaxMessageSize = -1
	case 3:
		d.MaxMessageSize = 1
	}
	return d
}

// fuzzRun feeds data to a decoder in pieces cut at the given offsets and
// returns the complete logical events, the error and the bytes left over.
// The driver checks the Decode contract on every call: n within the input,
// Payload a sub-slice of the consumed bytes, nothing left decodable after
// EventNone.
func fuzzRun(t *testing.T, cfg Decoder, data []byte, cuts []int) ([]rec, int, error) {
	d := cfg
	dr := &driver{t: t, d: &d}
	cp := append([]byte(nil), data...)
	start := 0
	for _, c := range append(cuts, len(cp)) {
		if c < start || c > len(cp) {
			continue
		}
		dr.feed(cp[start:c])
		start = c
		if dr.err != nil {
			break
		}
	}
	return completeOnly(dr.evs), len(dr.buf), dr.err
}

// FuzzDecoder: arbitrary bytes never panic the decoder, never make it
// consume beyond its input or return a Payload outside it, never make it
// allocate, and give the same events and the same error however they are
// split.
func FuzzDecoder(f *testing.F) {
	for _, s := range decoderSeeds() {
		f.Add(s.data, s.cfg, int64(len(s.data)))
	}
	f.Fuzz(func(t *testing.T, data []byte, cfg uint8, seed int64) {
		if len(data) > 1<<16 {
			return
		}
		dc := fuzzConfig(cfg)
		whole, leftW, errW := fuzzRun(t, dc, data, nil)
		// Random cuts, and (for short inputs) byte by byte.
		rng := rand.New(rand.NewSource(seed))
		var cuts []int
		for c := rng.Intn(8); c > 0 && len(data) > 0; c-- {
			cuts = append(cuts, rng.Intn(len(data)+1))
		}
		sortInts(cuts)
		splits := [][]int{cuts}
		if len(data) <= 512 {
			every := make([]int, 0, len(data))
			for k := 1; k < len(data); k++ {
				every = append(every, k)
			}
			splits = append(splits, every)
		}
		for _, cuts := range splits {
			got, left, err := fuzzRun(t, dc, data, cuts)
			if err != errW {
				t.Fatalf("cut at %v: err %v, whole gave %v", cuts, err, errW)
			}
			if !reflect.DeepEqual(got, whole) && !(len(got) == 0 && len(whole) == 0) {
				t.Fatalf("cut at %v:\n got %s\nwhole %s", cuts, recsString(got), recsString(whole))
			}
			if err == nil && left != leftW {
				t.Fatalf("cut at %v: %d left, whole left %d", cuts, left, leftW)
			}
		}
		if errW != nil {
			var pe *ProtocolError
			if !errors.As(errW, &pe) || (pe.Code != 1002 && pe.Code != 1007 && pe.Code != 1009) {
				t.Fatalf("error %v is not a ProtocolError with 1002/1007/1009", errW)
			}
		}
		// The decoder holds no buffer: decoding allocates nothing.
		buf := append([]byte(nil), data...)
		allocs := testing.AllocsPerRun(1, func() {
			d := dc
			p := buf
			for {
				n, ev, err := d.Decode(p)
				p = p[n:]
				if err != nil || ev.Kind == EventNone {
					return
				}
			}
		})
		if allocs != 0 {
			t.Fatalf("Decode allocated %v times", allocs)
		}
	})
}

type decoderSeed struct {
	data []byte
	cfg  uint8
}

// decoderSeeds are valid and invalid streams of each kind the tables
// cover, for the fuzzer to start from.
func decoderSeeds() []decoderSeed {
	cl := func(fin bool, op OpCode, rsv byte, p string) []byte {
		return AppendMaskedFrame(nil, fin, op, rsv, testMask, []byte(p))
	}
	sv := func(fin bool, op OpCode, rsv byte, p string) []byte { return AppendFrame(nil, fin, op, rsv, []byte(p)) }
	big := string(bytes.Repeat([]byte("x"), 300))
	return []decoderSeed{
		{[]byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}, 0},
		{cat(cl(false, OpText, 0, "κό"), cl(true, OpPing, 0, "p"), cl(true, OpContinuation, 0, "σμε")), 0},
		{cat(cl(true, OpBinary, 0, big), cl(true, OpClose, 0, "\x03\xe8bye")), 0},
		{cat(cl(false, OpText, 0x40, "\xff"), cl(true, OpContinuation, 0, "z")), 2},
		{cat(sv(false, OpText, 0, "\xe2\x82"), sv(true, OpContinuation, 0, "\xac")), 1},
		{cat(sv(true, OpBinary, 0, big)), 5},
		{cl(true, OpText, 0, "\xed\xa0\x80"), 0},
		{cl(true, OpClose, 0, "\x03"), 0},
		{bits("1 000 0010 1 1111111 10000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000"), 8},
		{cat(cl(false, OpText, 0, "a"), cl(true, OpText, 0, "b")), 0},
		{cl(true, OpContinuation, 0, "a"), 0},
		{cat(bits("1 000 0011 1 0000000"), testMask[:]), 0},
	}
}

// FuzzHandshake: arbitrary bytes never panic the header scanner or the
// request parser; the scanner gives the same answer trickled byte by byte;
// a parsed request's fields alias the header and its key is valid; parsing
// allocates nothing; every rejection renders.
func FuzzHandshake(f *testing.F) {
	f.Add([]byte(sampleRequest), uint16(0))
	f.Add([]byte(sampleRequest+"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"), uint16(64))
	f.Add([]byte("GET /a?b=c HTTP/1.1\nHost: x\nUpgrade: WebSocket\nConnection: keep-alive, Upgrade\nSec-WebSocket-Version: 13\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\n\n"), uint16(0))
	f.Add([]byte("GET http://h/p HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n"), uint16(0))
	f.Add([]byte("POST / HTTP/1.0\r\n\r\n"), uint16(10))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		if len(data) > 1<<14 {
			return
		}
		s := HeaderScanner{Max: int(max)}
		n, err := s.Scan(data)
		if n < 0 || n > len(data) || (err != nil && n != 0) {
			t.Fatalf("Scan = %d, %v over %d bytes", n, err, len(data))
		}
		if err != nil && err != ErrHeaderTooLarge {
			t.Fatalf("Scan error %v", err)
		}
		limit := int(max)
		if limit <= 0 {
			limit = DefaultMaxHeaderBytes
		}
		if n > limit {
			t.Fatalf("header of %d bytes over the cap %d", n, limit)
		}
		// Trickled: same result.
		s2 := HeaderScanner{Max: int(max)}
		n2, err2 := 0, error(nil)
		for i := 0; i <= len(data); i++ {
			n2, err2 = s2.Scan(data[:i])
			if n2 != 0 || err2 != nil {
				break
			}
		}
		if n2 != n || err2 != err {
			t.Fatalf("trickled Scan = %d, %v; whole = %d, %v", n2, err2, n, err)
		}
		if n == 0 {
			// Parse whatever is there anyway: ParseRequest must not
			// panic on a header without its blank line either.
			var r Request
			_ = ParseRequest(data, &r)
			return
		}
		hdr := data[:n]
		var r Request
		perr := ParseRequest(hdr, &r)
		for _, b := range [][]byte{r.Method, r.Target, r.Path, r.Host, r.Origin, r.Key, r.Version, r.RawQuery} {
			if len(b) > 0 && !within(b, hdr) && !bytes.Equal(b, []byte("/")) {
				t.Fatalf("field %q outside the header", b)
			}
		}
		r.Protocols(func([]byte) bool { return true })
		r.ExtensionHeaders(func([]byte) {})
		r.VisitHeaders(func(k, v []byte) {})
		if allocs := testing.AllocsPerRun(1, func() { _ = ParseRequest(hdr, &r) }); allocs != 0 {
			t.Fatalf("ParseRequest allocated %v times", allocs)
		}
		if perr != nil {
			var he *HandshakeError
			if !errors.As(perr, &he) || he.Status < 400 || he.Status > 599 {
				t.Fatalf("ParseRequest error %v", perr)
			}
			if out := AppendReject(nil, he); !bytes.HasPrefix(out, []byte("HTTP/1.1 4")) && !bytes.HasPrefix(out, []byte("HTTP/1.1 5")) {
				t.Fatalf("reject %q", out)
			}
			return
		}
		var key [18]byte
		if k, err := base64.StdEncoding.Decode(key[:], r.Key); err != nil || k != 16 {
			t.Fatalf("accepted key %q", r.Key)
		}
		if len(r.Host) == 0 || string(r.Method) != "GET" || string(r.Version) != "13" {
			t.Fatalf("accepted %q %q %q", r.Method, r.Host, r.Version)
		}
		out := AppendAccept(nil, r.Key, "", nil, nil)
		if !bytes.HasPrefix(out, []byte("HTTP/1.1 101 ")) {
			t.Fatalf("accept %q", out)
		}
	})
}
