package codec

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestAppendFrameHeader checks the encoder against the RFC 6455 §5.2
// diagram written bit by bit, at every length form and its boundaries.
func TestAppendFrameHeader(t *testing.T) {
	for _, c := range []struct {
		fin    bool
		op     OpCode
		rsv    byte
		length int
		want   string
	}{
		{true, OpText, 0, 0, "1 000 0001 0 0000000"},
		{true, OpText, 0, 5, "1 000 0001 0 0000101"},
		{false, OpBinary, 0, 125, "0 000 0010 0 1111101"},
		{true, OpBinary, 0, 126, "1 000 0010 0 1111110 00000000 01111110"},
		{true, OpBinary, 0, 127, "1 000 0010 0 1111110 00000000 01111111"},
		{true, OpBinary, 0, 65535, "1 000 0010 0 1111110 11111111 11111111"},
		{true, OpBinary, 0, 65536, "1 000 0010 0 1111111 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000000"},
		{true, OpBinary, 0, 1 << 40, "1 000 0010 0 1111111 00000000 00000000 00000001 00000000 00000000 00000000 00000000 00000000"},
		{false, OpContinuation, 0, 3, "0 000 0000 0 0000011"},
		{true, OpClose, 0, 2, "1 000 1000 0 0000010"},
		{true, OpPing, 0, 0, "1 000 1001 0 0000000"},
		{true, OpPong, 0, 125, "1 000 1010 0 1111101"},
		{true, OpText, 0x40, 1, "1 100 0001 0 0000001"},
		{true, OpText, 0x20, 1, "1 010 0001 0 0000001"},
		{true, OpText, 0x10, 1, "1 001 0001 0 0000001"},
		{true, OpText, 0xFF, 1, "1 111 0001 0 0000001"}, // bits outside 0x70 are ignored
	} {
		got := AppendFrameHeader([]byte("x"), c.fin, c.op, c.rsv, c.length)
		if want := cat([]byte("x"), bits(c.want)); !bytes.Equal(got, want) {
			t.Errorf("AppendFrameHeader(%v, %v, %#x, %d) = %08b, want %08b", c.fin, c.op, c.rsv, c.length, got, want)
		}
	}
	// The masked encoder sets the MASK bit and writes the key after the
	// length (§5.2, §5.3).
	got := AppendMaskedFrame(nil, true, OpText, 0, testMask, []byte("Hello"))
	want := []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58} // RFC 6455 §5.7
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendMaskedFrame = %x, want %x", got, want)
	}
}

// TestEncodeRoundTrip: what the server encoder writes, a client decoder
// reads; what the client encoder writes, a server decoder reads; at every
// length form.
func TestEncodeRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 4, 5, 124, 125, 126, 127, 128, 1000, 65535, 65536, 65537, 200000} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i*31 + 7)
		}
		orig := append([]byte(nil), payload...)
		for _, op := range []OpCode{OpBinary, OpPing} {
			if op.IsControl() && n > 125 {
				continue
			}
			for _, masked := range []bool{false, true} {
				prefix := []byte("prefix")
				var f []byte
				d := Decoder{Client: !masked}
				if masked {
					f = AppendMaskedFrame(append([]byte(nil), prefix...), true, op, 0, [4]byte{0xde, 0xad, 0xbe, 0xef}, payload)
				} else {
					f = AppendFrame(append([]byte(nil), prefix...), true, op, 0, payload)
				}
				if !bytes.Equal(payload, orig) {
					t.Fatal("the encoder modified the payload")
				}
				if !bytes.HasPrefix(f, prefix) {
					t.Fatal("the encoder lost dst's contents")
				}
				f = f[len(prefix):]
				wantHdr := 2
				switch {
				case n > 65535:
					wantHdr = 10
				case n > 125:
					wantHdr = 4
				}
				if masked {
					wantHdr += 4
				}
				if len(f) != wantHdr+n {
					t.Fatalf("n=%d masked=%v: frame of %d bytes, want %d", n, masked, len(f), wantHdr+n)
				}
				evs, left, err := decodeAll(t, &d, f)
				if err != nil || left != 0 {
					t.Fatalf("n=%d masked=%v: %v, %d left", n, masked, err, left)
				}
				l := logical(evs)
				if len(l) != 1 || l[0].Op != op || l[0].Data != string(payload) {
					t.Fatalf("n=%d masked=%v op=%v: decoded %s", n, masked, op, recsString(l))
				}
			}
		}
	}
	// Fragments and RSV1 survive the round trip.
	var s []byte
	s = AppendFrame(s, false, OpText, 0x40, []byte("ab"))
	s = AppendFrame(s, true, OpContinuation, 0, []byte("cd"))
	d := Decoder{Client: true, Compression: true}
	evs, _, err := decodeAll(t, &d, s)
	if err != nil || len(evs) != 2 || !evs[0].Comp || !evs[1].Comp || evs[0].Final || !evs[1].Final {
		t.Fatalf("%v %s", err, recsString(evs))
	}
}

// TestAppendClosePayload: the code, then as much of the reason as fits in
// 123 bytes (RFC 6455 §5.5: control payloads ≤ 125), cut on a UTF-8
// boundary.
func TestAppendClosePayload(t *testing.T) {
	for _, c := range []struct {
		name   string
		code   uint16
		reason string
		want   string // expected reason part
	}{
		{"short", 1000, "bye", "bye"},
		{"empty reason", 1001, "", ""},
		{"exactly 123", 1000, strings.Repeat("a", 123), strings.Repeat("a", 123)},
		{"124 ASCII", 1000, strings.Repeat("a", 124), strings.Repeat("a", 123)},
		{"long ASCII", 4000, strings.Repeat("b", 1000), strings.Repeat("b", 123)},
		{"3-byte chars, cut inside one", 1000, "a" + strings.Repeat("€", 50), "a" + strings.Repeat("€", 40)},
		{"2-byte chars, cut inside one", 1000, strings.Repeat("µ", 70), strings.Repeat("µ", 61)},
		{"4-byte char across 123", 1000, strings.Repeat("x", 121) + "😀", strings.Repeat("x", 121)},
		{"4-byte char ending at 123", 1000, strings.Repeat("x", 119) + "😀" + "y", strings.Repeat("x", 119) + "😀"},
	} {
		got := AppendClosePayload([]byte("z"), c.code, c.reason)
		if got[0] != 'z' || len(got) < 3 || got[1] != byte(c.code>>8) || got[2] != byte(c.code) {
			t.Fatalf("%s: %x", c.name, got)
		}
		r := got[3:]
		if string(r) != c.want || len(r) > MaxCloseReason || !utf8.Valid(r) {
			t.Fatalf("%s: reason %q (%d bytes), want %q", c.name, r, len(r), c.want)
		}
		// It decodes back.
		code, reason, err := ParseClose(got[1:])
		if err != nil || code != c.code || string(reason) != c.want {
			t.Fatalf("%s: ParseClose = %d %q %v", c.name, code, reason, err)
		}
	}
	if got := AppendClosePayload(nil, CloseNoStatus, "ignored"); len(got) != 0 {
		t.Fatalf("1005 gave %x", got)
	}
	if got := AppendClosePayload(nil, 0, ""); len(got) != 0 {
		t.Fatalf("0 gave %x", got)
	}
	// A whole close frame, as a client reads it.
	f := AppendCloseFrame(nil, CloseGoingAway, strings.Repeat("€", 60))
	if len(f) > 2+125 {
		t.Fatalf("close frame of %d bytes", len(f))
	}
	d := Decoder{Client: true}
	evs, left, err := decodeAll(t, &d, f)
	if err != nil || left != 0 || len(evs) != 1 || evs[0].Code != CloseGoingAway || evs[0].Reason != strings.Repeat("€", 41) {
		t.Fatalf("%v %d %s", err, left, recsString(evs))
	}
	f = AppendCloseFrame(nil, CloseNoStatus, "")
	if !bytes.Equal(f, bits("1 000 1000 0 0000000")) {
		t.Fatalf("empty close frame %x", f)
	}
}

// TestParseClose checks the payload rules directly (RFC 6455 §5.5.1).
func TestParseClose(t *testing.T) {
	if c, r, err := ParseClose(nil); c != CloseNoStatus || r != nil || err != nil {
		t.Fatal(c, r, err)
	}
	if _, _, err := ParseClose([]byte{3}); err != ErrCloseLength {
		t.Fatal(err)
	}
	if _, _, err := ParseClose([]byte{0x03, 0xED}); err != ErrCloseCode { // 1005 on the wire
		t.Fatal(err)
	}
	if _, _, err := ParseClose([]byte{0x03, 0xE8, 0xC0, 0x80}); err != ErrCloseReasonUTF8 {
		t.Fatal(err)
	}
	p := []byte{0x0F, 0xA0, 'o', 'k'} // 4000
	c, r, err := ParseClose(p)
	if c != 4000 || string(r) != "ok" || err != nil || &r[0] != &p[2] {
		t.Fatal(c, r, err)
	}
}

// TestPreparedFrame: encoded once, equal to AppendFrame, independent of
// the caller's payload buffer.
func TestPreparedFrame(t *testing.T) {
	for _, n := range []int{0, 125, 126, 70000} {
		payload := bytes.Repeat([]byte{'q'}, n)
		f := NewPreparedFrame(OpBinary, payload)
		want := AppendFrame(nil, true, OpBinary, 0, payload)
		for i := range payload {
			payload[i] = 'X'
		}
		if f.Op() != OpBinary || !bytes.Equal(f.Bytes(), want) {
			t.Fatalf("n=%d: prepared frame differs or aliases the payload", n)
		}
	}
}

// TestOpCodes checks the classification of all 16 opcodes (RFC 6455 §5.2).
func TestOpCodes(t *testing.T) {
	for op := OpCode(0); op < 16; op++ {
		control := op >= 8
		data := op <= 2
		reserved := !(op <= 2 || (op >= 8 && op <= 10))
		if op.IsControl() != control || op.IsData() != data || op.IsReserved() != reserved {
			t.Errorf("op %d: control=%v data=%v reserved=%v", op, op.IsControl(), op.IsData(), op.IsReserved())
		}
		if reserved != (op.String() == "reserved") {
			t.Errorf("op %d: String %q", op, op.String())
		}
	}
}
