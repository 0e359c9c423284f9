package clientconformance

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// ccase is one client case: what the server sends, what the client must
// send back, and how the connection must end.
type ccase struct {
	id, doc string

	send []wire  // written by the server, in order
	want []frame // what the client must send, in order: echoed messages and pongs

	// close is the code of the client's close frame after want: the code
	// it fails the connection with, or its answer to a close frame in
	// send (then reply is set). 0 means the client must not close: the
	// server then closes with 1000 and expects it echoed.
	close uint16
	reply bool

	// failFast: rest is only written after the client's close frame
	// arrived, so a client that waits for the end of the message times
	// out instead of failing.
	failFast bool
	rest     []wire

	maxMsg  int64 // the client's MaxMessageSize; 0 for the default
	deflate bool  // the client offers permessage-deflate, the server accepts
}

// echo returns the frame the echo client sends back for a message.
func echo(f sframe) frame { return frame{fin: true, op: f.op, payload: f.payload} }

func pongF(b []byte) frame { return frame{fin: true, op: opPong, payload: b} }

// run plays the case against a fresh client connection.
func (tc ccase) run(t *testing.T, h *harness) {
	t.Helper()
	opts := &engine.DialOptions{MaxMessageSize: tc.maxMsg, Deflate: tc.deflate}
	sc, conn := h.open(t, opts)
	for i, w := range tc.send {
		if err := sc.write(w); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	for i, want := range tc.want {
		got, err := sc.readMessage()
		if err != nil {
			t.Fatalf("waiting for the client's frame %d, want %v: %v", i+1, want, err)
		}
		if got.op != want.op || !bytes.Equal(got.payload, want.payload) {
			t.Fatalf("the client's frame %d is %v, want %v", i+1, got, want)
		}
	}
	code, reply := tc.close, tc.reply
	if code == 0 {
		if err := sc.write(wire{b: closeF(closeNormal, "done").encode()}); err != nil {
			t.Fatal(err)
		}
		code, reply = closeNormal, true
	}
	got, err := sc.readMessage()
	if err != nil {
		t.Fatalf("want the client's close %d: %v", code, err)
	}
	if got.op != opClose {
		t.Fatalf("got %v, want the client's close %d", got, code)
	}
	gotCode, _, _ := parseClose(got)
	switch {
	case code == closeNormalOrEmpty:
		if gotCode != closeNoStatus && gotCode != closeNormal {
			t.Fatalf("the client's close code %d, want an empty close or 1000", gotCode)
		}
	case gotCode != code:
		t.Fatalf("the client's close code %d, want %d", gotCode, code)
	}
	if tc.failFast {
		for _, w := range tc.rest {
			if sc.write(w) != nil {
				break
			}
		}
	}
	if !reply {
		// Complete the handshake the client started (§5.5.1: echo).
		_ = sc.write(wire{b: closeF(gotCode, "").encode()})
	}
	// §7.1.1: the server closes the TCP connection first. Move the
	// client's clock to just short of its CloseTimeout: every loop has run
	// since the client handled the close, and it must still hold the
	// connection open.
	h.clk.Advance(closeTimeout / 2)
	if sc.peerClosed() {
		t.Fatal("the client closed the TCP connection before the server did (RFC 6455 §7.1.1)")
	}
	sc.c.Close()
	err = h.waitClose(t, conn)
	var ce *handler.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("the client's OnClose reported %v, want a CloseError", err)
	}
	wantCode := code
	if code == closeNormalOrEmpty {
		wantCode = closeNoStatus
	}
	if reply {
		// The client answered the server's close: it reports the
		// server's code and reason, as the peer's.
		if !ce.Remote || ce.Code != wantCode && !(code == closeNormalOrEmpty && ce.Code == closeNormal) {
			t.Fatalf("the client's OnClose reported %v, want the server's close %d", ce, wantCode)
		}
	} else if ce.Remote || ce.Code != wantCode {
		t.Fatalf("the client's OnClose reported %v, want its own close %d", ce, wantCode)
	}
}

// runCases runs every case as a subtest on one harness.
func runCases(t *testing.T, cases []ccase) {
	h := newHarness(t)
	seen := map[string]bool{}
	for _, tc := range cases {
		if seen[tc.id] {
			t.Fatalf("duplicate case id %s", tc.id)
		}
		seen[tc.id] = true
		t.Run(tc.id, func(t *testing.T) {
			if tc.doc != "" {
				t.Log(tc.doc)
			}
			tc.run(t, h)
		})
	}
}

// 1.x: data framing: the client echoes text and binary of every length
// encoding (§5.2).
func TestFraming(t *testing.T) {
	var cases []ccase
	for i, n := range []int{0, 125, 126, 127, 128, 65535, 65536} {
		f := textB(repeat("*", n))
		cases = append(cases, ccase{id: fmt.Sprintf("1.1.%d", i+1), doc: fmt.Sprintf("text of %d bytes", n), send: send(f), want: []frame{echo(f)}})
		b := bin(repeat("\xfe", n))
		cases = append(cases, ccase{id: fmt.Sprintf("1.2.%d", i+1), doc: fmt.Sprintf("binary of %d bytes", n), send: send(b), want: []frame{echo(b)}})
	}
	f := textB(repeat("*", 65536))
	cases = append(cases, ccase{id: "1.1.8", doc: "text of 65536 bytes, written 997 bytes at a time", send: chopped(997, f), want: []frame{echo(f)}})
	runCases(t, cases)
}

// 2.x: pings and pongs (§5.5.2, §5.5.3).
func TestPingPong(t *testing.T) {
	var pings []sframe
	var pongs []frame
	for i := 0; i < 10; i++ {
		p := []byte(fmt.Sprintf("payload-%d", i))
		pings = append(pings, ping(p))
		pongs = append(pongs, pongF(p))
	}
	cases := []ccase{
		{id: "2.1", doc: "ping without payload: a pong without payload", send: send(ping(nil)), want: []frame{pongF(nil)}},
		{id: "2.2", doc: "ping with text payload", send: send(ping([]byte("Hello, world!"))), want: []frame{pongF([]byte("Hello, world!"))}},
		{id: "2.3", doc: "ping with binary payload", send: send(ping([]byte{0, 0xff, 0xfe, 0xfd})), want: []frame{pongF([]byte{0, 0xff, 0xfe, 0xfd})}},
		{id: "2.4", doc: "ping with 125 bytes", send: send(ping(repeat("\xfe", 125))), want: []frame{pongF(repeat("\xfe", 125))}},
		{id: "2.5", doc: "ping with 126 bytes: fail (§5.5)", send: send(ping(repeat("\xfe", 126))), close: closeProtocol},
		{id: "2.6", doc: "ping with 125 bytes, written a byte at a time", send: chopped(1, ping(repeat("\xfe", 125))), want: []frame{pongF(repeat("\xfe", 125))}},
		{id: "2.7", doc: "unsolicited pong without payload: ignored", send: send(pong(nil))},
		{id: "2.8", doc: "unsolicited pong with payload: ignored", send: send(pong([]byte("unsolicited")))},
		{id: "2.9", doc: "unsolicited pong, then a ping", send: send(pong([]byte("x")), ping([]byte("y"))), want: []frame{pongF([]byte("y"))}},
		{id: "2.10", doc: "10 pings: 10 pongs in order", send: send(pings...), want: pongs},
		{id: "2.11", doc: "10 pings in one write, chopped", send: chopped(3, pings...), want: pongs},
	}
	runCases(t, cases)
}

// 3.x: reserved bits without a negotiated extension fail the connection
// (§5.2), and nothing after the bad frame is answered.
func TestReservedBits(t *testing.T) {
	hi := text("Hello")
	withRSV := func(f sframe, rsv byte) sframe { f.rsv = rsv; return f }
	cases := []ccase{
		{id: "3.1", doc: "RSV1 on a text frame", send: send(withRSV(hi, rsv1)), close: closeProtocol},
		{id: "3.2", doc: "text, then RSV2 on a text frame, then a ping", send: send(hi, withRSV(hi, rsv2), ping(nil)), want: []frame{echo(hi)}, close: closeProtocol},
		{id: "3.3", doc: "the same in one write", send: together(hi, withRSV(hi, rsv1|rsv2), ping(nil)), want: []frame{echo(hi)}, close: closeProtocol},
		{id: "3.4", doc: "the same chopped", send: chopped(1, hi, withRSV(hi, rsv3), ping(nil)), want: []frame{echo(hi)}, close: closeProtocol},
		{id: "3.5", doc: "RSV1|RSV3 on binary", send: send(withRSV(bin([]byte{1, 2}), rsv1|rsv3)), close: closeProtocol},
		{id: "3.6", doc: "RSV2|RSV3 on a ping", send: send(withRSV(ping([]byte("p")), rsv2|rsv3)), close: closeProtocol},
		{id: "3.7", doc: "all RSV bits on a close", send: send(withRSV(closeF(1000, ""), rsv1|rsv2|rsv3)), close: closeProtocol},
	}
	runCases(t, cases)
}

// 4.x: reserved opcodes fail the connection (§5.2).
func TestOpcodes(t *testing.T) {
	hi := text("Hello")
	var cases []ccase
	for i, op := range []byte{3, 4, 5, 6, 7} {
		cases = append(cases, ccase{id: fmt.Sprintf("4.1.%d", i+1), doc: fmt.Sprintf("text, opcode %d, ping", op),
			send: send(hi, sframe{fin: true, op: op, payload: []byte("x")}, ping(nil)), want: []frame{echo(hi)}, close: closeProtocol})
	}
	for i, op := range []byte{11, 12, 13, 14, 15} {
		cases = append(cases, ccase{id: fmt.Sprintf("4.2.%d", i+1), doc: fmt.Sprintf("text, opcode %d, ping in one write", op),
			send: together(hi, sframe{fin: true, op: op}, ping(nil)), want: []frame{echo(hi)}, close: closeProtocol})
	}
	runCases(t, cases)
}

// 5.x: fragmentation (§5.4) with control frames between the fragments.
func TestFragmentation(t *testing.T) {
	whole := func(s string) frame { return frame{fin: true, op: opText, payload: []byte(s)} }
	cases := []ccase{
		{id: "5.1", doc: "a ping in 2 fragments", send: send(sframe{op: opPing, payload: []byte("a")}, sframe{fin: true, op: opCont, payload: []byte("b")}), close: closeProtocol},
		{id: "5.2", doc: "a pong in 2 fragments", send: send(sframe{op: opPong, payload: []byte("a")}, sframe{fin: true, op: opCont, payload: []byte("b")}), close: closeProtocol},
		{id: "5.3", doc: "text in 2 fragments", send: send(frag(opText, false, "frag"), frag(opCont, true, "ment")), want: []frame{whole("fragment")}},
		{id: "5.4", doc: "the same in one write", send: together(frag(opText, false, "frag"), frag(opCont, true, "ment")), want: []frame{whole("fragment")}},
		{id: "5.5", doc: "the same a byte at a time", send: chopped(1, frag(opText, false, "frag"), frag(opCont, true, "ment")), want: []frame{whole("fragment")}},
		{id: "5.6", doc: "text in 2 fragments, a ping between: pong first", send: send(frag(opText, false, "frag"), ping([]byte("p")), frag(opCont, true, "ment")), want: []frame{pongF([]byte("p")), whole("fragment")}},
		{id: "5.7", doc: "the same in one write", send: together(frag(opText, false, "frag"), ping([]byte("p")), frag(opCont, true, "ment")), want: []frame{pongF([]byte("p")), whole("fragment")}},
		{id: "5.8", doc: "the same a byte at a time", send: chopped(1, frag(opText, false, "frag"), ping([]byte("p")), frag(opCont, true, "ment")), want: []frame{pongF([]byte("p")), whole("fragment")}},
		{id: "5.9", doc: "a continuation with nothing to continue (FIN)", send: send(frag(opCont, true, "x"), text("Hello")), close: closeProtocol},
		{id: "5.10", doc: "the same in one write", send: together(frag(opCont, true, "x"), text("Hello")), close: closeProtocol},
		{id: "5.11", doc: "the same a byte at a time", send: chopped(1, frag(opCont, true, "x"), text("Hello")), close: closeProtocol},
		{id: "5.12", doc: "a continuation with nothing to continue (no FIN)", send: send(frag(opCont, false, "x"), text("Hello")), close: closeProtocol},
		{id: "5.15", doc: "a text message begun inside another", send: send(frag(opText, false, "a"), frag(opCont, true, "b"), frag(opCont, false, "c"), frag(opText, true, "d")), want: []frame{whole("ab")}, close: closeProtocol},
		{id: "5.16", doc: "two continuations, then a message: fail at the first", send: send(frag(opCont, false, "a"), frag(opText, false, "b"), frag(opCont, true, "c")), close: closeProtocol},
		{id: "5.18", doc: "text begun twice", send: send(frag(opText, false, "a"), frag(opText, true, "b")), close: closeProtocol},
		{id: "5.19", doc: "text in 5 fragments with 2 pings between", send: send(frag(opText, false, "f1"), frag(opCont, false, "f2"), ping([]byte("p1")), frag(opCont, false, "f3"), frag(opCont, false, "f4"), ping([]byte("p2")), frag(opCont, true, "f5")),
			want: []frame{pongF([]byte("p1")), pongF([]byte("p2")), whole("f1f2f3f4f5")}},
		{id: "5.20", doc: "binary in fragments with a pong between", send: send(frag(opBinary, false, "\x01"), pong([]byte("u")), frag(opCont, true, "\x02")), want: []frame{{fin: true, op: opBinary, payload: []byte{1, 2}}}},
	}
	runCases(t, cases)
}

// 6.x: UTF-8 of text (§8.1): valid text is echoed, invalid text fails the
// connection with 1007 as soon as it is seen.
func TestUTF8(t *testing.T) {
	valid := []string{"", "Hello-µ@ßöäüàá-UTF-8!!", "κόσμε", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "\xef\xbf\xbf", "\xed\x9f\xbf", "\xee\x80\x80"}
	invalid := []string{"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64", "\x80", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xfe", "\xf8\x88\x80\x80\x80", "\xe0\x80\xaf"}
	var cases []ccase
	for i, s := range valid {
		cases = append(cases, ccase{id: fmt.Sprintf("6.1.%d", i+1), doc: fmt.Sprintf("valid text %q", s), send: send(text(s)), want: []frame{echo(text(s))}})
		// Fragmented a byte at a time: a character split between frames.
		if len(s) > 1 {
			var fs []sframe
			for j := 0; j < len(s); j++ {
				op := opCont
				if j == 0 {
					op = opText
				}
				fs = append(fs, sframe{fin: j == len(s)-1, op: op, payload: []byte{s[j]}})
			}
			cases = append(cases, ccase{id: fmt.Sprintf("6.2.%d", i+1), doc: fmt.Sprintf("valid text %q, one byte per frame", s), send: send(fs...), want: []frame{echo(text(s))}})
		}
	}
	for i, s := range invalid {
		cases = append(cases, ccase{id: fmt.Sprintf("6.3.%d", i+1), doc: fmt.Sprintf("invalid text %q", s), send: send(text(s)), close: closeInvalidData})
	}
	// Fail fast (§8.1: "as soon as" the invalid bytes are seen): the
	// first fragment is invalid, the rest only comes after the close.
	cases = append(cases,
		ccase{id: "6.4.1", doc: "invalid UTF-8 in the first of 3 fragments: fail before the rest arrives", send: send(frag(opText, false, "κόσμε\xed\xa0\x80")),
			close: closeInvalidData, failFast: true, rest: send(frag(opCont, false, "edited"), frag(opCont, true, ""))},
		ccase{id: "6.4.2", doc: "invalid UTF-8 inside one frame, sent in 2 writes: fail on the first", send: []wire{{b: text("κόσμε\xed\xa0\x80edited").encode()[:15]}},
			close: closeInvalidData, failFast: true, rest: []wire{{b: text("κόσμε\xed\xa0\x80edited").encode()[15:]}}},
		ccase{id: "6.4.3", doc: "a text message that ends in the middle of a character", send: send(frag(opText, false, "ab\xe2\x82"), frag(opCont, true, "")), close: closeInvalidData},
	)
	runCases(t, cases)
}

// 7.x: the close handshake (§5.5.1, §7).
func TestClose(t *testing.T) {
	hi := text("Hello")
	long := string(repeat("*", 123))
	var cases = []ccase{
		{id: "7.1.1", doc: "a message, then the server closes", send: send(hi, closeF(1000, "")), want: []frame{echo(hi)}, close: 1000, reply: true},
		{id: "7.1.2", doc: "the server closes twice: one answer", send: send(closeF(1000, ""), closeF(1000, "")), close: 1000, reply: true},
		{id: "7.1.3", doc: "a ping after the server's close: no pong", send: send(closeF(1000, ""), ping([]byte("late"))), close: 1000, reply: true},
		{id: "7.1.4", doc: "text after the server's close: no echo", send: send(closeF(1000, ""), text("late")), close: 1000, reply: true},
		{id: "7.1.5", doc: "a fragment, the server's close, the last fragment", send: send(frag(opText, false, "frag"), closeF(1000, ""), frag(opCont, true, "ment")), close: 1000, reply: true},
		{id: "7.1.6", doc: "a large message, then the close in the same write", send: together(textB(repeat("BAsd7&jh23", 256<<10)), closeF(1000, "")), want: []frame{{fin: true, op: opText, payload: repeat("BAsd7&jh23", 256<<10)}}, close: 1000, reply: true},
		{id: "7.3.1", doc: "an empty close: answered empty (or 1000)", send: send(sframe{fin: true, op: opClose}), close: closeNormalOrEmpty, reply: true},
		{id: "7.3.2", doc: "a close of 1 byte: fail", send: send(sframe{fin: true, op: opClose, payload: []byte{3}}), close: closeProtocol},
		{id: "7.3.3", doc: "close 1000 without reason", send: send(closeF(1000, "")), close: 1000, reply: true},
		{id: "7.3.4", doc: "close 1000 with a reason", send: send(closeF(1000, "Hello World!")), close: 1000, reply: true},
		{id: "7.3.5", doc: "close with a reason of 123 bytes", send: send(closeF(1000, long)), close: 1000, reply: true},
		{id: "7.3.6", doc: "close with a reason of 124 bytes (payload 126): fail", send: send(closeF(1000, long+"*")), close: closeProtocol},
		{id: "7.5.1", doc: "close reason not UTF-8: fail with 1007", send: send(closeF(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64")), close: closeInvalidData},
	}
	for i, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		cases = append(cases, ccase{id: fmt.Sprintf("7.7.%d", i+1), doc: fmt.Sprintf("close %d: echoed", code), send: send(closeF(code, "")), close: code, reply: true})
	}
	for i, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		cases = append(cases, ccase{id: fmt.Sprintf("7.9.%d", i+1), doc: fmt.Sprintf("close %d is not allowed on the wire: fail", code), send: send(closeF(code, "")), close: closeProtocol})
	}
	runCases(t, cases)
}

// 9.x: large messages, whole and fragmented.
func TestLargeMessages(t *testing.T) {
	var cases []ccase
	for i, n := range []int{64 << 10, 256 << 10, 1 << 20} {
		f := textB(repeat("BAsd7&jh23", n))
		cases = append(cases, ccase{id: fmt.Sprintf("9.1.%d", i+1), doc: fmt.Sprintf("text of %d bytes", n), send: send(f), want: []frame{echo(f)}})
		b := bin(repeat("\xfe\x01", n))
		cases = append(cases, ccase{id: fmt.Sprintf("9.2.%d", i+1), doc: fmt.Sprintf("binary of %d bytes", n), send: send(b), want: []frame{echo(b)}})
	}
	// 10.1.1: 64 KiB of text in fragments of 1300 bytes.
	msg := repeat("*", 65536)
	var fs []sframe
	for off := 0; off < len(msg); off += 1300 {
		end := min(off+1300, len(msg))
		op := opCont
		if off == 0 {
			op = opText
		}
		fs = append(fs, sframe{fin: end == len(msg), op: op, payload: msg[off:end]})
	}
	cases = append(cases, ccase{id: "10.1.1", doc: "64 KiB of text in fragments of 1300 bytes", send: send(fs...), want: []frame{{fin: true, op: opText, payload: msg}}})
	runCases(t, cases)
}

// M.x: a server must not mask its frames (§5.1: "A client MUST close a
// connection if it detects a masked frame").
func TestMaskedServerFrames(t *testing.T) {
	masked := func(f sframe) sframe { f.masked = true; return f }
	hi := text("Hello")
	cases := []ccase{
		{id: "M.1", doc: "a masked text frame", send: send(masked(hi)), close: closeProtocol},
		{id: "M.2", doc: "a valid text, then a masked binary frame", send: send(hi, masked(bin([]byte{1}))), want: []frame{echo(hi)}, close: closeProtocol},
		{id: "M.3", doc: "a masked ping", send: send(masked(ping([]byte("p")))), close: closeProtocol},
		{id: "M.4", doc: "a masked close", send: send(masked(closeF(1000, ""))), close: closeProtocol},
		{id: "M.5", doc: "a masked continuation", send: send(frag(opText, false, "a"), masked(frag(opCont, true, "b"))), close: closeProtocol},
		{id: "M.6", doc: "a masked empty frame, a byte at a time", send: chopped(1, masked(text(""))), close: closeProtocol},
	}
	runCases(t, cases)
}

// O.x: frames over the client's message size limit fail the connection
// with 1009 as soon as the header says so.
func TestOversized(t *testing.T) {
	const limit = 64 << 10
	hdr := func(op byte, fin bool, n uint64) []byte {
		b0 := op
		if fin {
			b0 |= 0x80
		}
		b := []byte{b0, 127}
		for i := 7; i >= 0; i-- {
			b = append(b, byte(n>>(8*i)))
		}
		return b
	}
	cases := []ccase{
		{id: "O.1", doc: "a frame header announcing a message over the limit: fail before its payload", send: []wire{{b: hdr(opBinary, true, limit+1)}}, close: closeTooBig, maxMsg: limit,
			failFast: true, rest: []wire{{b: repeat("x", limit+1)}}},
		{id: "O.2", doc: "fragments that add up to more than the limit", send: send(sframe{op: opBinary, payload: repeat("x", limit-10)}, sframe{fin: true, op: opCont, payload: repeat("y", 20)}), close: closeTooBig, maxMsg: limit},
		{id: "O.3", doc: "a message of exactly the limit passes", send: send(bin(repeat("x", limit))), want: []frame{{fin: true, op: opBinary, payload: repeat("x", limit)}}, maxMsg: limit},
		{id: "O.4", doc: "a 63-bit length with the top bit set", send: []wire{{b: hdr(opBinary, true, 1<<63)}}, close: closeProtocol},
	}
	runCases(t, cases)
}

// 12.x/13.x: permessage-deflate (RFC 7692): compressed messages from the
// server are decompressed and echoed (compressed again, from the
// client's threshold on); compression rules are enforced.
func TestDeflate(t *testing.T) {
	z := func(f sframe) sframe { f.compress = true; return f }
	withRSV := func(f sframe, rsv byte) sframe { f.rsv = rsv; return f }
	small := text("Hello, compressed world")
	big := textB(repeat(`{"sym":"ABC","px":101.25,"qty":3}`, 16<<10))
	bigBin := bin(repeat("\x00\x01\x02\x03", 100<<10))
	cases := []ccase{
		{id: "12.1.1", doc: "a small compressed text", send: send(z(small)), want: []frame{echo(small)}, deflate: true},
		{id: "12.1.2", doc: "a large compressed text", send: send(z(big)), want: []frame{echo(big)}, deflate: true},
		{id: "12.1.3", doc: "a large compressed binary, written 1000 bytes at a time", send: chopped(1000, z(bigBin)), want: []frame{echo(bigBin)}, deflate: true},
		{id: "12.1.4", doc: "compressed and plain messages mixed", send: send(z(small), bin([]byte{1, 2, 3}), z(big)), want: []frame{echo(small), {fin: true, op: opBinary, payload: []byte{1, 2, 3}}, echo(big)}, deflate: true},
		{id: "12.2.1", doc: "an empty compressed message", send: send(z(text(""))), want: []frame{echo(text(""))}, deflate: true},
		{id: "13.1.1", doc: "RSV1 on a continuation frame: fail", send: send(z(frag(opText, false, "a")), withRSV(frag(opCont, true, "b"), rsv1)), close: closeProtocol, deflate: true},
		{id: "13.1.2", doc: "RSV1 on a ping: fail", send: send(withRSV(ping(nil), rsv1)), close: closeProtocol, deflate: true},
		{id: "13.1.3", doc: "compressed data that does not inflate: fail with 1007", send: send(sframe{fin: true, op: opBinary, rsv: rsv1, payload: []byte{0xff, 0xff, 0xff, 0xff}}), close: closeInvalidData, deflate: true},
		{id: "13.1.4", doc: "compressed text that is not UTF-8: fail with 1007", send: send(z(text("ab\xed\xa0\x80"))), close: closeInvalidData, deflate: true},
		{id: "13.1.5", doc: "RSV1 without a negotiated extension: fail", send: send(z(small)), close: closeProtocol},
	}
	runCases(t, cases)
}

// The client fails a connection and the server never answers nor closes:
// the client closes the TCP connection itself once CloseTimeout passes.
func TestCloseTimeoutUnanswered(t *testing.T) {
	h := newHarness(t)
	sc, conn := h.open(t, nil)
	sc.write(wire{b: text("\xff").encode()})
	f, err := sc.readMessage()
	if err != nil || f.op != opClose {
		t.Fatalf("want the client's close: %v %v", f, err)
	}
	h.clk.Advance(closeTimeout / 2)
	if sc.peerClosed() {
		t.Fatal("the client closed before its CloseTimeout")
	}
	h.clk.Advance(closeTimeout)
	if err := sc.expectEOF(); err != nil {
		t.Fatal(err)
	}
	var ce *handler.CloseError
	if err := h.waitClose(t, conn); !errors.As(err, &ce) || ce.Code != closeInvalidData {
		t.Fatalf("OnClose %v", err)
	}
}

// The client closes (Conn.Close) and the server answers but never closes
// TCP: the client waits its CloseTimeout, then closes; OnClose reports its
// own close, answered. A close that is never answered reports
// ErrCloseTimeout.
func TestClientCloseTimeouts(t *testing.T) {
	h := newHarness(t)
	for _, answer := range []bool{true, false} {
		t.Run(fmt.Sprintf("answered=%v", answer), func(t *testing.T) {
			sc, conn := h.open(t, nil)
			conn.Close(4321, "client done")
			f, err := sc.readMessage()
			if err != nil || f.op != opClose {
				t.Fatalf("want the client's close: %v %v", f, err)
			}
			if code, reason, _ := parseClose(f); code != 4321 || reason != "client done" {
				t.Fatalf("client close %d %q", code, reason)
			}
			if answer {
				sc.write(wire{b: closeF(4321, "").encode()})
			}
			h.clk.Advance(closeTimeout / 2)
			if sc.peerClosed() {
				t.Fatal("the client closed before its CloseTimeout")
			}
			h.clk.Advance(closeTimeout)
			if err := sc.expectEOF(); err != nil {
				t.Fatal(err)
			}
			err = h.waitClose(t, conn)
			var ce *handler.CloseError
			switch {
			case answer && (!errors.As(err, &ce) || ce.Code != 4321 || ce.Remote):
				t.Fatalf("OnClose %v, want the client's own 4321", err)
			case !answer && !errors.Is(err, handler.ErrCloseTimeout):
				t.Fatalf("OnClose %v, want ErrCloseTimeout", err)
			}
		})
	}
}
