package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// Expected events.

func msg(op OpCode, data string) rec {
	return rec{Kind: EventData, Op: op, Data: data, First: true, Final: true}
}

func piece(op OpCode, data string, first, final bool) rec {
	return rec{Kind: EventData, Op: op, Data: data, First: first, Final: final}
}

func ctl(op OpCode, data string) rec { return rec{Kind: EventControl, Op: op, Data: data} }

func cls(code uint16, reason string) rec {
	data := ""
	if code != CloseNoStatus {
		data = string(binary.BigEndian.AppendUint16(nil, code)) + reason
	}
	return rec{Kind: EventControl, Op: OpClose, Data: data, Code: code, Reason: reason}
}

// frameCase is one row of the frame tables: a byte stream, the decoder's
// configuration, the events it must give when fed whole, and the error it
// must end with (nil: the stream is valid and fully consumed).
type frameCase struct {
	name string
	dec  Decoder
	in   []byte
	want []rec
	err  error
	// leftover is the number of bytes left unconsumed at the end of a
	// valid stream (an incomplete frame).
	leftover int
}

// completeOnly keeps the logical events that a split of the input cannot
// change: control frames and finished messages.
func completeOnly(rs []rec) []rec {
	var out []rec
	for _, r := range logical(rs) {
		if r.Kind == EventControl || r.Final {
			out = append(out, r)
		}
	}
	return out
}

func runFrameCases(t *testing.T, cases []frameCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := c.dec
			got, left, err := decodeAll(t, &d, c.in)
			if !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
				t.Fatalf("fed whole: err = %v, want %v", err, c.err)
			}
			if c.err != nil {
				if closeCode(err) != closeCode(c.err) {
					t.Fatalf("close code %d, want %d", closeCode(err), closeCode(c.err))
				}
			} else if left != c.leftover {
				t.Fatalf("fed whole: %d bytes left, want %d", left, c.leftover)
			}
			if !reflect.DeepEqual(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
				t.Fatalf("fed whole:\n got %s\nwant %s", recsString(got), recsString(c.want))
			}
			// One byte at a time: the same messages and control frames,
			// the same error.
			d = c.dec
			got1, left1, err1 := decodeBytewise(t, &d, c.in)
			if err1 != err {
				t.Fatalf("fed bytewise: err = %v, whole gave %v", err1, err)
			}
			a, b := completeOnly(got1), completeOnly(got)
			if !reflect.DeepEqual(a, b) && !(len(a) == 0 && len(b) == 0) {
				t.Fatalf("fed bytewise:\n got %s\nwant %s", recsString(a), recsString(b))
			}
			if err == nil && left1 != left {
				t.Fatalf("fed bytewise: %d bytes left, whole left %d", left1, left)
			}
		})
	}
}

// TestRFCExamples decodes the examples of RFC 6455 §5.7 byte for byte.
func TestRFCExamples(t *testing.T) {
	hello := []byte{0x48, 0x65, 0x6c, 0x6c, 0x6f}
	big256 := bytes.Repeat([]byte{0xAB}, 256)
	big64k := bytes.Repeat([]byte{0xCD}, 65536)
	client := Decoder{Client: true}
	runFrameCases(t, []frameCase{
		{name: "single-frame unmasked text", dec: client,
			in: cat([]byte{0x81, 0x05}, hello), want: []rec{msg(OpText, "Hello")}},
		{name: "single-frame masked text", in: []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58},
			want: []rec{msg(OpText, "Hello")}},
		{name: "fragmented unmasked text", dec: client,
			in:   []byte{0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f},
			want: []rec{piece(OpText, "Hel", true, false), piece(OpText, "lo", false, true)}},
		{name: "unmasked ping", dec: client, in: cat([]byte{0x89, 0x05}, hello), want: []rec{ctl(OpPing, "Hello")}},
		{name: "masked pong", in: []byte{0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58},
			want: []rec{ctl(OpPong, "Hello")}},
		{name: "256 bytes binary, 16-bit length", dec: client,
			in: cat([]byte{0x82, 0x7E, 0x01, 0x00}, big256), want: []rec{msg(OpBinary, string(big256))}},
		{name: "64KiB binary, 64-bit length", dec: client,
			in:   cat([]byte{0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0}, big64k),
			want: []rec{msg(OpBinary, string(big64k))}},
	})
}

// TestFrameLengths covers RFC 6455 §5.2 payload length forms (Autobahn
// 1.1.x text, 1.2.x binary): 7-bit up to 125, 16-bit 126..65535, 64-bit
// beyond, and the boundaries of each.
func TestFrameLengths(t *testing.T) {
	type lc struct {
		n   int
		hdr string // the length bits after the MASK bit
	}
	lens := []lc{
		{0, "0000000"},
		{1, "0000001"},
		{125, "1111101"},
		{126, "1111110 00000000 01111110"},
		{127, "1111110 00000000 01111111"},
		{128, "1111110 00000000 10000000"},
		{65535, "1111110 11111111 11111111"},
		{65536, "1111111 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000000"},
		{65537, "1111111 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000001"},
	}
	var cases []frameCase
	for _, l := range lens {
		text := strings.Repeat("*", l.n)
		bin := bytes.Repeat([]byte{0xFE}, l.n)
		cases = append(cases,
			frameCase{name: "text/" + itoa(l.n), in: cframe("1 000 0001  1 "+l.hdr, []byte(text)),
				want: []rec{msg(OpText, text)}},
			frameCase{name: "binary/" + itoa(l.n), in: cframe("1 000 0010  1 "+l.hdr, bin),
				want: []rec{msg(OpBinary, string(bin))}},
			// The same frame as a server sends it, to a client decoder.
			frameCase{name: "client/binary/" + itoa(l.n), dec: Decoder{Client: true},
				in: cat(bits("1 000 0010  0 "+l.hdr), bin), want: []rec{msg(OpBinary, string(bin))}},
		)
	}
	// A 64-bit length form for a short payload (non-minimal, which §5.2
	// forbids senders but receivers tolerate) still decodes.
	cases = append(cases, frameCase{name: "non-minimal 16-bit length",
		in: cframe("1 000 0010 1 1111110 00000000 00000011", []byte("abc")), want: []rec{msg(OpBinary, "abc")}})
	runFrameCases(t, cases)
}

func itoa(n int) string { return strconv.Itoa(n) }

func fmtInt(n int) string { return strconv.Itoa(n) }

// TestPartialHeader: §5.2 headers are 2 to 14 bytes; until all of it is
// there, nothing is consumed (the issue: "never consume a partial header").
func TestPartialHeader(t *testing.T) {
	frames := [][]byte{
		cframe("1 000 0001 1 0000101", []byte("Hello")),                                                             // 6-byte header
		cframe("1 000 0010 1 1111110 00000001 00000000", make([]byte, 256)),                                         // 8-byte header
		cframe("1 000 0010 1 1111111 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000000", nil), // 14-byte header, payload missing
		cframe("1 000 1001 1 0000011", []byte("abc")),                                                               // control: whole frame needed
	}
	for i, f := range frames {
		hs := 6
		switch i {
		case 1:
			hs = 8
		case 2:
			hs = 14
		case 3:
			hs = len(f) // a control frame is consumed whole
		}
		for k := 0; k < hs; k++ {
			var d Decoder
			in := append([]byte(nil), f[:k]...)
			n, ev, err := d.Decode(in)
			if n != 0 || ev.Kind != EventNone || err != nil {
				t.Fatalf("frame %d with %d of %d header bytes: n=%d kind=%v err=%v", i, k, hs, n, ev.Kind, err)
			}
		}
		// Exactly the header of a data frame: consumed, no event yet.
		if i < 3 {
			var d Decoder
			in := append([]byte(nil), f[:hs]...)
			n, ev, err := d.Decode(in)
			if n != hs || ev.Kind != EventNone || err != nil {
				t.Fatalf("frame %d, header only: n=%d kind=%v err=%v", i, n, ev.Kind, err)
			}
			if !d.InMessage() {
				t.Fatalf("frame %d: InMessage false after a data header", i)
			}
		}
	}
}

// TestMasking covers RFC 6455 §5.1 and §5.3: a server fails on an
// unmasked client frame, a client on a masked server frame; unmasking
// follows the mask across chunk boundaries at every offset.
func TestMasking(t *testing.T) {
	runFrameCases(t, []frameCase{
		{name: "server: unmasked text", in: cat(bits("1 000 0001 0 0000010"), []byte("hi")), err: ErrUnmaskedFrame},
		{name: "server: unmasked ping", in: cat(bits("1 000 1001 0 0000000")), err: ErrUnmaskedFrame},
		{name: "server: unmasked close", in: cat(bits("1 000 1000 0 0000000")), err: ErrUnmaskedFrame},
		{name: "server: unmasked continuation", in: cat(mframe(false, OpText, 0, []byte("a")), bits("1 000 0000 0 0000001"), []byte("b")),
			want: []rec{piece(OpText, "a", true, false)}, err: ErrUnmaskedFrame},
		{name: "client: masked text", dec: Decoder{Client: true}, in: cframe("1 000 0001 1 0000010", []byte("hi")), err: ErrMaskedFrame},
		{name: "client: masked ping", dec: Decoder{Client: true}, in: cframe("1 000 1001 1 0000000", nil), err: ErrMaskedFrame},
		{name: "client: unmasked text", dec: Decoder{Client: true}, in: cat(bits("1 000 0001 0 0000010"), []byte("hi")),
			want: []rec{msg(OpText, "hi")}},
		{name: "all-zero mask", in: cat(bits("1 000 0010 1 0000011"), []byte{0, 0, 0, 0}, []byte("xyz")),
			want: []rec{msg(OpBinary, "xyz")}},
	})

	// Chunked unmasking: a 1000-byte payload delivered in pieces of every
	// size from 1 to 9 bytes must unmask to the original.
	payload := make([]byte, 1000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	for step := 1; step <= 9; step++ {
		var d Decoder
		in := mframe(true, OpBinary, 0, payload)
		var got []byte
		off := 0
		for end := 0; end < len(in); {
			end += step
			if end > len(in) {
				end = len(in)
			}
			for {
				n, ev, err := d.Decode(in[off:end])
				if err != nil {
					t.Fatal(err)
				}
				off += n
				got = append(got, ev.Payload...)
				if ev.Kind == EventNone {
					break
				}
			}
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("step %d: unmasked payload differs", step)
		}
	}
}

// TestReservedBits covers RFC 6455 §5.2 RSV1-3 (Autobahn 3.1-3.7) and their
// use by permessage-deflate (RFC 7692 §6: RSV1 on the first frame of a data
// message only).
func TestReservedBits(t *testing.T) {
	var cases []frameCase
	for rsv := 1; rsv <= 7; rsv++ {
		r := fmtBits3(rsv)
		cases = append(cases,
			frameCase{name: "text rsv=" + r, in: cframe("1 "+r+" 0001 1 0000010", []byte("hi")), err: ErrReservedBits},
			frameCase{name: "binary rsv=" + r, in: cframe("1 "+r+" 0010 1 0000010", []byte("hi")), err: ErrReservedBits},
			frameCase{name: "ping rsv=" + r, in: cframe("1 "+r+" 1001 1 0000010", []byte("hi")), err: ErrReservedBits},
			frameCase{name: "close rsv=" + r, in: cframe("1 "+r+" 1000 1 0000010", []byte{0x03, 0xE8}), err: ErrReservedBits},
			// Autobahn 3.2: a valid message first, then the bad frame.
			frameCase{name: "after a valid frame rsv=" + r,
				in:   cat(cframe("1 000 0001 1 0000010", []byte("ok")), cframe("1 "+r+" 0001 1 0000010", []byte("hi"))),
				want: []rec{msg(OpText, "ok")}, err: ErrReservedBits},
			frameCase{name: "continuation rsv=" + r,
				in:   cat(cframe("0 000 0001 1 0000001", []byte("a")), cframe("1 "+r+" 0000 1 0000001", []byte("b"))),
				want: []rec{piece(OpText, "a", true, false)}, err: ErrReservedBits},
		)
	}
	comp := Decoder{Compression: true}
	cases = append(cases,
		frameCase{name: "deflate: rsv1 on text", dec: comp, in: cframe("1 100 0001 1 0000010", []byte{0xFF, 0xFE}),
			want: []rec{{Kind: EventData, Op: OpText, Data: "\xFF\xFE", First: true, Final: true, Comp: true}}},
		frameCase{name: "deflate: rsv1 on binary, fragmented", dec: comp,
			in: cat(cframe("0 100 0010 1 0000001", []byte("a")), cframe("1 000 1001 1 0000000", nil), cframe("1 000 0000 1 0000001", []byte("b"))),
			want: []rec{{Kind: EventData, Op: OpBinary, Data: "a", First: true, Comp: true}, ctl(OpPing, ""),
				{Kind: EventData, Op: OpBinary, Data: "b", Final: true, Comp: true}}},
		frameCase{name: "deflate: next message uncompressed", dec: comp,
			in:   cat(cframe("1 100 0010 1 0000001", []byte("a")), cframe("1 000 0010 1 0000001", []byte("b"))),
			want: []rec{{Kind: EventData, Op: OpBinary, Data: "a", First: true, Final: true, Comp: true}, msg(OpBinary, "b")}},
		frameCase{name: "deflate: rsv1 on continuation", dec: comp,
			in:   cat(cframe("0 100 0001 1 0000001", []byte("a")), cframe("1 100 0000 1 0000001", []byte("b"))),
			want: []rec{{Kind: EventData, Op: OpText, Data: "a", First: true, Comp: true}}, err: ErrReservedBits},
		frameCase{name: "deflate: rsv1 on ping", dec: comp, in: cframe("1 100 1001 1 0000000", nil), err: ErrReservedBits},
		frameCase{name: "deflate: rsv1 on close", dec: comp, in: cframe("1 100 1000 1 0000000", nil), err: ErrReservedBits},
		frameCase{name: "deflate: rsv2 on text", dec: comp, in: cframe("1 010 0001 1 0000000", nil), err: ErrReservedBits},
		frameCase{name: "deflate: rsv3 on text", dec: comp, in: cframe("1 001 0001 1 0000000", nil), err: ErrReservedBits},
		frameCase{name: "deflate: rsv1+2 on text", dec: comp, in: cframe("1 110 0001 1 0000000", nil), err: ErrReservedBits},
		frameCase{name: "deflate: uncompressed text still checked", dec: comp, in: cframe("1 000 0001 1 0000001", []byte{0xFF}), err: ErrInvalidUTF8},
	)
	runFrameCases(t, cases)
}

func fmtBits3(v int) string {
	b := []byte("000")
	for i := 0; i < 3; i++ {
		if v&(4>>i) != 0 {
			b[i] = '1'
		}
	}
	return string(b)
}

// TestReservedOpcodes covers RFC 6455 §5.2 "If an unknown opcode is
// received, the receiving endpoint MUST _Fail the WebSocket Connection_"
// (Autobahn 4.1.x data opcodes 3-7, 4.2.x control opcodes 0xB-0xF).
func TestReservedOpcodes(t *testing.T) {
	var cases []frameCase
	for op := 3; op <= 15; op++ {
		if op >= 8 && op <= 10 {
			continue
		}
		opBits := string([]byte{'0' + byte(op>>3&1), '0' + byte(op>>2&1), '0' + byte(op>>1&1), '0' + byte(op&1)})
		cases = append(cases,
			frameCase{name: "op " + fmtInt(op), in: cframe("1 000 "+opBits+" 1 0000000", nil), err: ErrReservedOpcode},
			frameCase{name: "op " + fmtInt(op) + " with payload", in: cframe("1 000 "+opBits+" 1 0000011", []byte("abc")), err: ErrReservedOpcode},
			frameCase{name: "op " + fmtInt(op) + " after text, then ping",
				in:   cat(cframe("1 000 0001 1 0000010", []byte("hi")), cframe("1 000 "+opBits+" 1 0000000", nil), cframe("1 000 1001 1 0000000", nil)),
				want: []rec{msg(OpText, "hi")}, err: ErrReservedOpcode},
			frameCase{name: "op " + fmtInt(op) + " non-final", in: cframe("0 000 "+opBits+" 1 0000000", nil), err: ErrReservedOpcode},
		)
	}
	runFrameCases(t, cases)
}

// TestControlFrames covers RFC 6455 §5.5 (Autobahn 2.x and 5.1-5.2):
// control frames carry at most 125 bytes and are never fragmented; they
// may come between the fragments of a message (§5.4).
func TestControlFrames(t *testing.T) {
	p125 := strings.Repeat("p", 125)
	bin := string([]byte{0x00, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0x00, 0xFF})
	runFrameCases(t, []frameCase{
		{name: "2.1 ping empty", in: cframe("1 000 1001 1 0000000", nil), want: []rec{ctl(OpPing, "")}},
		{name: "2.2 ping text payload", in: cframe("1 000 1001 1 0001101", []byte("Hello, world!")), want: []rec{ctl(OpPing, "Hello, world!")}},
		{name: "2.3 ping binary payload", in: cframe("1 000 1001 1 0001000", []byte(bin)), want: []rec{ctl(OpPing, bin)}},
		{name: "2.4 ping 125", in: cframe("1 000 1001 1 1111101", []byte(p125)), want: []rec{ctl(OpPing, p125)}},
		{name: "2.5 ping 126", in: cframe("1 000 1001 1 1111110 00000000 01111110", []byte(p125+"p")), err: ErrControlTooLong},
		{name: "ping 127 form", in: cframe("1 000 1001 1 1111111 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001", []byte("p")), err: ErrControlTooLong},
		{name: "2.7 unsolicited pong empty", in: cframe("1 000 1010 1 0000000", nil), want: []rec{ctl(OpPong, "")}},
		{name: "2.8 unsolicited pong payload", in: cframe("1 000 1010 1 0000011", []byte("abc")), want: []rec{ctl(OpPong, "abc")}},
		{name: "2.9 pong then ping", in: cat(cframe("1 000 1010 1 0000001", []byte("x")), cframe("1 000 1001 1 0000001", []byte("y"))),
			want: []rec{ctl(OpPong, "x"), ctl(OpPing, "y")}},
		{name: "2.10 ten pings", in: bytes.Repeat(cframe("1 000 1001 1 0000010", []byte("pi")), 10),
			want: []rec{ctl(OpPing, "pi"), ctl(OpPing, "pi"), ctl(OpPing, "pi"), ctl(OpPing, "pi"), ctl(OpPing, "pi"),
				ctl(OpPing, "pi"), ctl(OpPing, "pi"), ctl(OpPing, "pi"), ctl(OpPing, "pi"), ctl(OpPing, "pi")}},
		{name: "5.1 ping fragmented", in: cat(cframe("0 000 1001 1 0000010", []byte("fr")), cframe("1 000 0000 1 0000010", []byte("ag"))), err: ErrFragmentedControl},
		{name: "5.2 pong fragmented", in: cframe("0 000 1010 1 0000010", []byte("fr")), err: ErrFragmentedControl},
		{name: "close fragmented", in: cframe("0 000 1000 1 0000000", nil), err: ErrFragmentedControl},
		{name: "7.3.6 close 126", in: cframe("1 000 1000 1 1111110 00000000 01111110", cat([]byte{0x03, 0xE8}, []byte(strings.Repeat("r", 124)))), err: ErrControlTooLong},
		{name: "control frame incomplete waits", in: cframe("1 000 1001 1 0000101", []byte("Hello"))[:9], leftover: 9},
	})
}

// TestFragmentation covers RFC 6455 §5.4 (Autobahn 5.3-5.20).
func TestFragmentation(t *testing.T) {
	T, B, C := OpText, OpBinary, OpContinuation
	runFrameCases(t, []frameCase{
		{name: "5.3 text in 2 fragments", in: cat(mframe(false, T, 0, []byte("frag")), mframe(true, C, 0, []byte("ment"))),
			want: []rec{piece(T, "frag", true, false), piece(T, "ment", false, true)}},
		{name: "5.5 text in 1-byte fragments", in: cat(mframe(false, T, 0, []byte("a")), mframe(false, C, 0, []byte("b")), mframe(true, C, 0, []byte("c"))),
			want: []rec{piece(T, "a", true, false), piece(T, "b", false, false), piece(T, "c", false, true)}},
		{name: "5.6 ping between fragments", in: cat(mframe(false, T, 0, []byte("frag")), mframe(true, OpPing, 0, []byte("ping")), mframe(true, C, 0, []byte("ment"))),
			want: []rec{piece(T, "frag", true, false), ctl(OpPing, "ping"), piece(T, "ment", false, true)}},
		{name: "pong and close between fragments", in: cat(mframe(false, B, 0, []byte("x")), mframe(true, OpPong, 0, nil), mframe(true, OpClose, 0, []byte{0x03, 0xE8})),
			want: []rec{piece(B, "x", true, false), ctl(OpPong, ""), cls(1000, "")}},
		{name: "empty fragments", in: cat(mframe(false, T, 0, nil), mframe(false, C, 0, []byte("a")), mframe(true, C, 0, nil)),
			want: []rec{piece(T, "", true, false), piece(T, "a", false, false), piece(T, "", false, true)}},
		{name: "empty message", in: mframe(true, B, 0, nil), want: []rec{msg(B, "")}},
		{name: "5.9 continuation without start, fin", in: mframe(true, C, 0, []byte("x")), err: ErrUnexpectedContinue},
		{name: "5.12 continuation without start, not fin", in: mframe(false, C, 0, []byte("x")), err: ErrUnexpectedContinue},
		{name: "5.15 continuation after finished message", in: cat(mframe(true, T, 0, []byte("a")), mframe(true, C, 0, []byte("b"))),
			want: []rec{msg(T, "a")}, err: ErrUnexpectedContinue},
		{name: "5.18 text inside unfinished text", in: cat(mframe(false, T, 0, []byte("a")), mframe(true, T, 0, []byte("b"))),
			want: []rec{piece(T, "a", true, false)}, err: ErrExpectedContinuation},
		{name: "binary inside unfinished text", in: cat(mframe(false, T, 0, []byte("a")), mframe(false, B, 0, []byte("b"))),
			want: []rec{piece(T, "a", true, false)}, err: ErrExpectedContinuation},
		{name: "text inside unfinished binary after ping", in: cat(mframe(false, B, 0, []byte("a")), mframe(true, OpPing, 0, nil), mframe(true, T, 0, []byte("b"))),
			want: []rec{piece(B, "a", true, false), ctl(OpPing, "")}, err: ErrExpectedContinuation},
		{name: "5.19 fragments with pings", in: cat(mframe(false, T, 0, []byte("f1")), mframe(false, C, 0, []byte("f2")), mframe(true, OpPing, 0, []byte("p1")),
			mframe(false, C, 0, []byte("f3")), mframe(false, C, 0, []byte("f4")), mframe(true, OpPing, 0, []byte("p2")), mframe(true, C, 0, []byte("f5"))),
			want: []rec{piece(T, "f1", true, false), piece(T, "f2", false, false), ctl(OpPing, "p1"), piece(T, "f3", false, false),
				piece(T, "f4", false, false), ctl(OpPing, "p2"), piece(T, "f5", false, true)}},
		{name: "two messages back to back", in: cat(mframe(false, B, 0, []byte("a")), mframe(true, C, 0, []byte("b")), mframe(true, T, 0, []byte("c"))),
			want: []rec{piece(B, "a", true, false), piece(B, "b", false, true), msg(T, "c")}},
	})
}

// TestInMessage checks the InMessage report across a fragmented message.
func TestInMessage(t *testing.T) {
	var d Decoder
	in := cat(mframe(false, OpText, 0, []byte("a")), mframe(true, OpPing, 0, nil), mframe(true, OpContinuation, 0, []byte("b")))
	want := []bool{true, true, false}
	for i := 0; len(in) > 0; i++ {
		n, _, err := d.Decode(in)
		if err != nil {
			t.Fatal(err)
		}
		in = in[n:]
		if d.InMessage() != want[i] {
			t.Fatalf("after event %d InMessage = %v", i, d.InMessage())
		}
	}
}

// TestLengthMSB covers RFC 6455 §5.2: "the most significant bit MUST be 0"
// in the 64-bit length form.
func TestLengthMSB(t *testing.T) {
	runFrameCases(t, []frameCase{
		{name: "msb set", dec: Decoder{MaxMessageSize: -1},
			in: bits("1 000 0010 1 1111111 10000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001  00000000 00000000 00000000 00000000"), err: ErrLengthMSB},
		{name: "all ones", dec: Decoder{MaxMessageSize: -1},
			in: bits("1 000 0010 1 1111111 11111111 11111111 11111111 11111111 11111111 11111111 11111111 11111111  00000000 00000000 00000000 00000000"), err: ErrLengthMSB},
		{name: "client msb set", dec: Decoder{Client: true, MaxMessageSize: -1},
			in: bits("1 000 0001 0 1111111 10000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000"), err: ErrLengthMSB},
		{name: "max int63 without limit waits", dec: Decoder{MaxMessageSize: -1},
			in: bits("1 000 0010 1 1111111 01111111 11111111 11111111 11111111 11111111 11111111 11111111 11111111  00000000 00000000 00000000 00000000")},
		{name: "max int63 over default limit", in: bits("1 000 0010 1 1111111 01111111 11111111 11111111 11111111 11111111 11111111 11111111 11111111  00000000 00000000 00000000 00000000"),
			err: ErrMessageTooBig},
	})
}

// TestMaxMessageSize: the limit is enforced when a frame header announces
// a length that would pass it (close 1009), before any payload arrives,
// and counts the fragments of a message together.
func TestMaxMessageSize(t *testing.T) {
	lim := Decoder{MaxMessageSize: 100}
	p := func(n int) []byte { return bytes.Repeat([]byte("m"), n) }
	s := func(n int) string { return strings.Repeat("m", n) }
	runFrameCases(t, []frameCase{
		{name: "exactly the limit", dec: lim, in: mframe(true, OpBinary, 0, p(100)), want: []rec{msg(OpBinary, s(100))}},
		{name: "one over, header only", dec: lim, in: cat(bits("1 000 0010 1 1100101"), testMask[:]), err: ErrMessageTooBig},
		{name: "16-bit over, header only", dec: lim, in: cat(bits("1 000 0010 1 1111110 00000000 11111111"), testMask[:]), err: ErrMessageTooBig},
		{name: "across fragments, at the limit", dec: lim, in: cat(mframe(false, OpText, 0, p(60)), mframe(true, OpPing, 0, p(10)), mframe(true, OpContinuation, 0, p(40))),
			want: []rec{piece(OpText, s(60), true, false), ctl(OpPing, s(10)), piece(OpText, s(40), false, true)}},
		{name: "across fragments, one over", dec: lim, in: cat(mframe(false, OpText, 0, p(60)), mframe(false, OpContinuation, 0, p(30)), cat(bits("1 000 0000 1 0001011"), testMask[:])),
			want: []rec{piece(OpText, s(60), true, false), piece(OpText, s(30), false, false)}, err: ErrMessageTooBig},
		{name: "control frames do not count", dec: Decoder{MaxMessageSize: 10}, in: cat(mframe(true, OpPing, 0, p(125)), mframe(true, OpBinary, 0, p(10))),
			want: []rec{ctl(OpPing, s(125)), msg(OpBinary, s(10))}},
		{name: "limit resets per message", dec: lim, in: cat(mframe(true, OpBinary, 0, p(100)), mframe(true, OpBinary, 0, p(100))),
			want: []rec{msg(OpBinary, s(100)), msg(OpBinary, s(100))}},
		{name: "default limit, 16 MiB + 1 announced", in: cat(bits("1 000 0010 1 1111111 00000000 00000000 00000000 00000000 00000001 00000000 00000000 00000001"), testMask[:]),
			err: ErrMessageTooBig},
		{name: "default limit, 16 MiB announced waits", in: cat(bits("1 000 0010 1 1111111 00000000 00000000 00000000 00000000 00000001 00000000 00000000 00000000"), testMask[:])},
	})
	// The default is documented as DefaultMaxMessageSize.
	if DefaultMaxMessageSize != 16<<20 {
		t.Fatalf("DefaultMaxMessageSize = %d", DefaultMaxMessageSize)
	}
}

// TestLargeMessages covers Autobahn 9.1-9.4 and 10.1 at codec level: big
// messages, whole and in many fragments, under the default limit.
func TestLargeMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("large payloads")
	}
	text := bytes.Repeat([]byte("*"), 16<<20) // 9.1.6: 16 MiB text
	for _, c := range []struct {
		name string
		size int
		frag int
		op   OpCode
	}{
		{"9.1.6 16MiB text", 16 << 20, 0, OpText},
		{"9.2.6 16MiB binary", 16 << 20, 0, OpBinary},
		{"9.3.1 4MiB text in 64B fragments", 4 << 20, 64, OpText},
		{"9.4.9 4MiB binary in 4MiB fragments", 4 << 20, 4 << 20, OpBinary},
		{"9.3.5 4MiB text in 16KiB fragments", 4 << 20, 16 << 10, OpText},
		{"10.1.1 64KiB text in 1300B fragments", 65536, 1300, OpText},
	} {
		t.Run(c.name, func(t *testing.T) {
			payload := text[:c.size]
			var in []byte
			if c.frag == 0 {
				in = mframe(true, c.op, 0, payload)
			} else {
				op := c.op
				for off := 0; off < len(payload); off += c.frag {
					end := min(off+c.frag, len(payload))
					in = AppendMaskedFrame(in, end == len(payload), op, 0, testMask, payload[off:end])
					op = OpContinuation
				}
			}
			var d Decoder
			evs, left, err := decodeAll(t, &d, in)
			if err != nil || left != 0 {
				t.Fatalf("err %v left %d", err, left)
			}
			l := logical(evs)
			if len(l) != 1 || l[0].Data != string(payload) || !l[0].Final || l[0].Op != c.op {
				t.Fatalf("got %s", recsString(l))
			}
		})
	}
}

// TestDecodeUTF8 covers the UTF-8 rules of RFC 6455 §5.6 and §8.1 as the
// decoder applies them to text messages (Autobahn 6.x): invalid text fails
// with 1007 at the piece that holds the bad byte, a code point may be split
// across fragments (and control frames between them), and a message must
// not end inside a code point.
func TestDecodeUTF8(t *testing.T) {
	T, C := OpText, OpContinuation
	kappa := "κόσμε" // Autobahn 6.2: "Hello-µ@ßöäüàá-UTF-8!!" style multi-byte text
	k := []byte(kappa)
	runFrameCases(t, []frameCase{
		{name: "6.2.1 valid whole", in: mframe(true, T, 0, k), want: []rec{msg(T, kappa)}},
		{name: "6.2.2 valid split at code point boundary", in: cat(mframe(false, T, 0, k[:2]), mframe(true, C, 0, k[2:])),
			want: []rec{piece(T, kappa[:2], true, false), piece(T, kappa[2:], false, true)}},
		{name: "6.2.3 valid split inside code points, 1-byte frames", in: func() []byte {
			var in []byte
			for i := range k {
				op := C
				if i == 0 {
					op = T
				}
				in = append(in, mframe(i == len(k)-1, op, 0, k[i:i+1])...)
			}
			return in
		}(), want: func() []rec {
			var w []rec
			for i := range k {
				w = append(w, piece(T, kappa[i:i+1], i == 0, i == len(k)-1))
			}
			return w
		}()},
		{name: "split code point around a ping", in: cat(mframe(false, T, 0, []byte{0xF0, 0x9F}), mframe(true, OpPing, 0, nil), mframe(true, C, 0, []byte{0x98, 0x80})),
			want: []rec{piece(T, "\xF0\x9F", true, false), ctl(OpPing, ""), piece(T, "\x98\x80", false, true)}},
		{name: "6.3.1 invalid whole", in: mframe(true, T, 0, []byte("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64")), err: ErrInvalidUTF8},
		{name: "binary is not checked", in: mframe(true, OpBinary, 0, []byte{0xFF, 0xC0}), want: []rec{msg(OpBinary, "\xFF\xC0")}},
		{name: "truncated at message end", in: mframe(true, T, 0, []byte{0xCE}), err: ErrInvalidUTF8},
		{name: "truncated 4-byte at message end", in: mframe(true, T, 0, []byte{0xF0, 0x9F, 0x98}), err: ErrInvalidUTF8},
		{name: "truncated, then empty final continuation", in: cat(mframe(false, T, 0, []byte{0xE2, 0x82}), mframe(true, C, 0, nil)),
			want: []rec{piece(T, "\xE2\x82", true, false)}, err: ErrInvalidUTF8},
		{name: "bad continuation in next fragment", in: cat(mframe(false, T, 0, []byte{0xE2, 0x82}), mframe(true, C, 0, []byte{0x41})),
			want: []rec{piece(T, "\xE2\x82", true, false)}, err: ErrInvalidUTF8},
		{name: "state resets between messages", in: cat(mframe(true, T, 0, []byte("ok")), mframe(true, T, 0, []byte{0x82})),
			want: []rec{msg(T, "ok")}, err: ErrInvalidUTF8},
		{name: "6.4.1 fail fast: invalid in first fragment", in: cat(mframe(false, T, 0, []byte("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5")),
			mframe(false, C, 0, []byte("\xf4\x90\x80\x80")), mframe(true, C, 0, []byte("\x65\x64\x69\x74\x65\x64"))),
			want: []rec{piece(T, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", true, false)}, err: ErrInvalidUTF8},
	})

	// 6.4.x fail fast within one frame: the frame announces 100 bytes,
	// only 10 have arrived and they hold an invalid byte. The decoder must
	// fail now, not wait for the message to end.
	for _, bad := range [][]byte{{0xFF}, {0xC0, 0x80}, {0xED, 0xA0, 0x80}, {0xF4, 0x90}, {0xE0, 0x80}} {
		var d Decoder
		payload := append(append([]byte("0123"), bad...), bytes.Repeat([]byte("x"), 100)...)[:100]
		in := mframe(true, T, 0, payload)[:6+10]
		_, _, err := decodeAll(t, &d, in)
		if !errors.Is(err, ErrInvalidUTF8) || closeCode(err) != 1007 {
			t.Fatalf("%x in the first 10 of 100 bytes: err %v", bad, err)
		}
	}
	// The same with the prefix valid but a lead byte at the very end of the
	// available bytes: not an error yet.
	var d Decoder
	in := mframe(true, T, 0, []byte("0123\xF0\x9F\x98\x80xxxxxxxx"))[:6+5]
	evs, _, err := decodeAll(t, &d, in)
	if err != nil || len(evs) != 1 || evs[0].Data != "0123\xF0" {
		t.Fatalf("valid prefix with a cut code point: %v %s", err, recsString(evs))
	}
}

// TestClosePayloads covers RFC 6455 §5.5.1 and §7.4 (Autobahn 7.3, 7.5,
// 7.7, 7.9, 7.13): the payload is empty or a code followed by a UTF-8
// reason; codes must be allowed on the wire.
func TestClosePayloads(t *testing.T) {
	closeFrame := func(payload []byte) []byte { return mframe(true, OpClose, 0, payload) }
	code := func(c uint16, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, c), reason...)
	}
	cases := []frameCase{
		{name: "7.3.1 empty → 1005", in: closeFrame(nil), want: []rec{cls(CloseNoStatus, "")}},
		{name: "7.3.2 one byte", in: closeFrame([]byte{0x03}), err: ErrCloseLength},
		{name: "7.3.3 code only", in: closeFrame(code(1000, "")), want: []rec{cls(1000, "")}},
		{name: "7.3.4 code and reason", in: closeFrame(code(1000, "Hello World!")), want: []rec{cls(1000, "Hello World!")}},
		{name: "7.3.5 reason 123 bytes", in: closeFrame(code(1000, strings.Repeat("*", 123))), want: []rec{cls(1000, strings.Repeat("*", 123))}},
		{name: "7.5.1 invalid utf8 reason", in: closeFrame(code(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64")), err: ErrCloseReasonUTF8},
		{name: "truncated utf8 reason", in: closeFrame(code(1000, "ab\xce")), err: ErrCloseReasonUTF8},
		{name: "multi-byte reason", in: closeFrame(code(1001, "κόσμε")), want: []rec{cls(1001, "κόσμε")}},
		{name: "client: unmasked close", dec: Decoder{Client: true}, in: sframe(true, OpClose, 0, code(1000, "bye")), want: []rec{cls(1000, "bye")}},
	}
	ok := []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999}
	bad := []uint16{0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535}
	for _, c := range ok {
		cases = append(cases, frameCase{name: "7.7 code " + fmtInt(int(c)), in: closeFrame(code(c, "r")), want: []rec{cls(c, "r")}})
	}
	for _, c := range bad {
		cases = append(cases, frameCase{name: "7.9 code " + fmtInt(int(c)), in: closeFrame(code(c, "")), err: ErrCloseCode})
	}
	runFrameCases(t, cases)

	// ValidCloseCode over the whole range, against the rule written out
	// (RFC 6455 §7.4.1-§7.4.2 and the IANA registry).
	for c := 0; c <= 0xFFFF; c++ {
		want := (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999)
		if ValidCloseCode(uint16(c)) != want {
			t.Fatalf("ValidCloseCode(%d) = %v", c, !want)
		}
	}
}

// TestProtocolErrorCodes: every framing error maps to the close code the
// RFC asks for, and can be recognised with errors.As.
func TestProtocolErrorCodes(t *testing.T) {
	for _, c := range []struct {
		err  *ProtocolError
		code uint16
	}{
		{ErrReservedOpcode, 1002}, {ErrReservedBits, 1002}, {ErrUnmaskedFrame, 1002}, {ErrMaskedFrame, 1002},
		{ErrFragmentedControl, 1002}, {ErrControlTooLong, 1002}, {ErrLengthMSB, 1002}, {ErrUnexpectedContinue, 1002},
		{ErrExpectedContinuation, 1002}, {ErrCloseLength, 1002}, {ErrCloseCode, 1002}, {ErrCloseReasonUTF8, 1007},
		{ErrInvalidUTF8, 1007}, {ErrMessageTooBig, 1009},
	} {
		var err error = c.err
		if closeCode(err) != c.code {
			t.Errorf("%v: code %d, want %d", c.err, closeCode(err), c.code)
		}
		if !strings.HasPrefix(err.Error(), "websocket: ") {
			t.Errorf("%q lacks the package prefix", err.Error())
		}
	}
}

// TestDecoderReset keeps the configuration and drops the stream state.
func TestDecoderReset(t *testing.T) {
	d := Decoder{MaxMessageSize: 10, Client: true, Compression: true}
	in := sframe(false, OpText, 0x40, []byte("\xE2"))
	if _, _, err := d.Decode(in); err != nil {
		t.Fatal(err)
	}
	if !d.InMessage() {
		t.Fatal("not in a message")
	}
	d.Reset()
	if d.InMessage() || d.MaxMessageSize != 10 || !d.Client || !d.Compression {
		t.Fatalf("after Reset: %+v", d)
	}
	// A new text message decodes from a clean UTF-8 state.
	n, ev, err := d.Decode(sframe(true, OpText, 0, []byte("ok")))
	if err != nil || n != 4 || string(ev.Payload) != "ok" || !ev.First || !ev.Final || ev.Compressed {
		t.Fatalf("after Reset: n=%d %+v %v", n, ev, err)
	}
}

// TestDecoderState: the limit passed to each call means what
// Decoder.MaxMessageSize means (zero the default, negative none), Client
// and Compression are honoured, and Reset keeps them.
func TestDecoderState(t *testing.T) {
	hdr := func(n int) []byte { // a masked binary header announcing n bytes, n < 65536
		return cat(bits("1 000 0010 1 1111110"), []byte{byte(n >> 8), byte(n)}, testMask[:])
	}
	for _, c := range []struct {
		name  string
		limit int64
		n     int
		err   error
	}{
		{"at the limit", 100, 100, nil},
		{"one over", 100, 101, ErrMessageTooBig},
		{"no limit", -1, 65535, nil},
		{"zero is the default", 0, 65535, nil},
	} {
		var st DecoderState
		n, ev, err := st.Decode(hdr(c.n), c.limit)
		if err != c.err {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.err)
			continue
		}
		if err == nil && (n != 8 || ev.Kind != EventNone || !st.InMessage()) {
			t.Errorf("%s: n=%d kind=%d in=%v, want the header consumed", c.name, n, ev.Kind, st.InMessage())
		}
	}

	st := DecoderState{Client: true, Compression: true}
	if _, _, err := st.Decode(mframe(true, OpText, 0, []byte("x")), 10); err != ErrMaskedFrame {
		t.Fatalf("client state took a masked frame: %v", err)
	}
	st = DecoderState{Client: true, Compression: true}
	if _, ev, err := st.Decode(sframe(false, OpText, 0x40, []byte("\xE2")), 10); err != nil || !ev.Compressed {
		t.Fatalf("compressed first fragment: %+v %v", ev, err)
	}
	st.Reset()
	if st.InMessage() || !st.Client || !st.Compression {
		t.Fatalf("after Reset: %+v", st)
	}
	// The stream state is 32 bytes: it is what a server keeps per connection.
	if got := unsafe.Sizeof(DecoderState{}); got != 32 {
		t.Errorf("DecoderState is %d bytes, want 32", got)
	}
}
