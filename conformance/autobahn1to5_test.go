package conformance

import (
	"fmt"
	"testing"
)

// TestFraming is Autobahn section 1: text and binary messages of lengths
// around the 7-bit, 16-bit and 64-bit length encodings of RFC 6455 §5.2.
func TestFraming(t *testing.T) {
	lengths := []int{0, 125, 126, 127, 128, 65535, 65536}
	var cases []wsCase
	for i, n := range lengths {
		p := repeat("*", n)
		cases = append(cases, wsCase{
			id:   fmt.Sprintf("1.1.%d", i+1),
			doc:  fmt.Sprintf("text message of %d bytes is echoed (§5.2 length encodings)", n),
			send: send(textB(p)),
			want: []frame{textB(p)},
		})
	}
	p := repeat("*", 65536)
	cases = append(cases, wsCase{
		id:   "1.1.8",
		doc:  "65536-byte text message written in chops of 997 bytes is echoed (§5.2: a frame may span many reads)",
		send: chopped(997, textB(p)),
		want: []frame{textB(p)},
	})
	for i, n := range lengths {
		p := repeat("\xfe", n)
		cases = append(cases, wsCase{
			id:   fmt.Sprintf("1.2.%d", i+1),
			doc:  fmt.Sprintf("binary message of %d bytes is echoed (§5.2 length encodings)", n),
			send: send(bin(p)),
			want: []frame{bin(p)},
		})
	}
	p = pattern(65536)
	cases = append(cases, wsCase{
		id:   "1.2.8",
		doc:  "65536-byte binary message written in chops of 997 bytes is echoed",
		send: chopped(997, bin(p)),
		want: []frame{bin(p)},
	})
	runCases(t, cases)
}

// TestPingPong is Autobahn section 2: pings are answered with pongs that
// carry the same application data (§5.5.2, §5.5.3); a control frame over
// 125 bytes fails the connection (§5.5).
func TestPingPong(t *testing.T) {
	bytes125 := repeat("\xfe", 125)
	binPayload := []byte{0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff}
	var tenPings, tenPongs []frame
	for i := range 10 {
		p := []byte(fmt.Sprintf("payload-%d", i))
		tenPings = append(tenPings, ping(p))
		tenPongs = append(tenPongs, pong(p))
	}
	cases := []wsCase{
		{id: "2.1", doc: "ping without payload gets a pong without payload (§5.5.3)",
			send: send(ping(nil)), want: []frame{pong(nil)}},
		{id: "2.2", doc: "ping with a text payload gets a pong with the same payload (§5.5.3)",
			send: send(ping([]byte("Hello, world!"))), want: []frame{pong([]byte("Hello, world!"))}},
		{id: "2.3", doc: "ping with a binary payload gets a pong with the same bytes (§5.5.3)",
			send: send(ping(binPayload)), want: []frame{pong(binPayload)}},
		{id: "2.4", doc: "ping with the maximum 125-byte payload gets its pong (§5.5)",
			send: send(ping(bytes125)), want: []frame{pong(bytes125)}},
		{id: "2.5", doc: "ping with a 126-byte payload fails the connection with 1002 (§5.5: control payloads are at most 125 bytes)",
			send: send(ping(repeat("\xfe", 126))), close: closeProtocol},
		{id: "2.6", doc: "125-byte ping written one byte at a time gets its pong",
			send: chopped(1, ping(bytes125)), want: []frame{pong(bytes125)}},
		{id: "2.7", doc: "unsolicited pong without payload is ignored (§5.5.3)",
			send: send(pong(nil))},
		{id: "2.8", doc: "unsolicited pong with payload is ignored (§5.5.3)",
			send: send(pong([]byte("unsolicited pong payload")))},
		{id: "2.9", doc: "unsolicited pong, then ping: only the ping is answered (§5.5.3)",
			send: send(pong([]byte("unsolicited pong payload")), ping([]byte("ping payload"))),
			want: []frame{pong([]byte("ping payload"))}},
		{id: "2.10", doc: "10 pings are answered by 10 pongs in order (§5.5.3)",
			send: send(tenPings...), want: tenPongs},
		{id: "2.11", doc: "10 pings written one byte at a time are answered by 10 pongs in order",
			send: chopped(1, tenPings...), want: tenPongs},
	}
	runCases(t, cases)
}

// TestReservedBits is Autobahn section 3: a frame with an RSV bit set and
// no extension negotiated that defines it fails the connection with 1002
// (§5.2), and nothing sent after it is processed.
func TestReservedBits(t *testing.T) {
	hello := []byte("Hello, world!")
	withRSV := func(f frame, rsv byte) frame { f.rsv = rsv; return f }
	cases := []wsCase{
		{id: "3.1", doc: "text frame with RSV3 set fails with 1002 (§5.2)",
			send: send(withRSV(textB(hello), rsv3)), close: closeProtocol},
		{id: "3.2", doc: "text, text with RSV2, ping in one write: the first is echoed, then 1002, the ping is not answered (§5.2)",
			send: together(textB(hello), withRSV(textB(hello), rsv2), ping(hello)),
			want: []frame{textB(hello)}, close: closeProtocol},
		{id: "3.3", doc: "text, text with RSV2|RSV3, ping frame-wise: echo, then 1002 (§5.2)",
			send: send(textB(hello), withRSV(textB(hello), rsv2|rsv3), ping(hello)),
			want: []frame{textB(hello)}, close: closeProtocol},
		{id: "3.4", doc: "text, text with RSV1, ping octet-wise: echo, then 1002 (§5.2)",
			send: chopped(1, textB(hello), withRSV(textB(hello), rsv1), ping(hello)),
			want: []frame{textB(hello)}, close: closeProtocol},
		{id: "3.5", doc: "binary frame with RSV1|RSV3 fails with 1002 (§5.2)",
			send: send(withRSV(bin([]byte{0, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0, 0xff}), rsv1|rsv3)), close: closeProtocol},
		{id: "3.6", doc: "ping with RSV1|RSV2 fails with 1002 and gets no pong (§5.2)",
			send: send(withRSV(ping(hello), rsv1|rsv2)), close: closeProtocol},
		{id: "3.7", doc: "close 1000 with all RSV bits set fails with 1002 instead of being echoed (§5.2)",
			send: send(withRSV(closeFrame(closeNormal, ""), rsv1|rsv2|rsv3)), close: closeProtocol},
	}
	runCases(t, cases)
}

// TestReservedOpcodes is Autobahn section 4: frames with the reserved
// non-control opcodes 0x3-0x7 and control opcodes 0xB-0xF fail the
// connection with 1002 (§5.2: "If an unknown opcode is received, the
// receiving endpoint MUST _Fail the WebSocket Connection_").
func TestReservedOpcodes(t *testing.T) {
	hello := []byte("Hello, world!")
	var cases []wsCase
	for g, ops := range [][]byte{{3, 4, 5, 6, 7}, {0xB, 0xC, 0xD, 0xE, 0xF}} {
		id := func(i int) string { return fmt.Sprintf("4.%d.%d", g+1, i) }
		cases = append(cases,
			wsCase{id: id(1), doc: fmt.Sprintf("empty frame with reserved opcode %#x fails with 1002", ops[0]),
				send: send(frame{fin: true, op: ops[0]}), close: closeProtocol},
			wsCase{id: id(2), doc: fmt.Sprintf("frame with reserved opcode %#x and a payload fails with 1002", ops[1]),
				send: send(frame{fin: true, op: ops[1], payload: []byte("reserved opcode payload")}), close: closeProtocol},
			wsCase{id: id(3), doc: fmt.Sprintf("text, empty opcode %#x, ping: echo, then 1002, no pong", ops[2]),
				send: send(textB(hello), frame{fin: true, op: ops[2]}, ping(hello)),
				want: []frame{textB(hello)}, close: closeProtocol},
			wsCase{id: id(4), doc: fmt.Sprintf("text, opcode %#x with payload, ping in one write: echo, then 1002, no pong", ops[3]),
				send: together(textB(hello), frame{fin: true, op: ops[3], payload: hello}, ping(hello)),
				want: []frame{textB(hello)}, close: closeProtocol},
			wsCase{id: id(5), doc: fmt.Sprintf("text, opcode %#x with payload, ping octet-wise: echo, then 1002, no pong", ops[4]),
				send: chopped(1, textB(hello), frame{fin: true, op: ops[4], payload: hello}, ping(hello)),
				want: []frame{textB(hello)}, close: closeProtocol},
		)
	}
	runCases(t, cases)
}

// TestFragmentation is Autobahn section 5: messages split into a first
// frame and continuation frames (§5.4), control frames between fragments,
// and the sequences §5.4 forbids.
func TestFragmentation(t *testing.T) {
	f1, f2 := "fragment1", "fragment2"
	msg := text(f1 + f2)
	pp := []byte("ping payload")
	// Fragmented control frames are forbidden (§5.5: "All control frames
	// ... MUST NOT be fragmented").
	cases := []wsCase{
		{id: "5.1", doc: "ping split into two fragments fails with 1002 (§5.5)",
			send: send(frame{op: opPing, payload: []byte(f1)}, frag(opCont, true, f2)), close: closeProtocol},
		{id: "5.2", doc: "pong split into two fragments fails with 1002 (§5.5)",
			send: send(frame{op: opPong, payload: []byte(f1)}, frag(opCont, true, f2)), close: closeProtocol},
	}
	// A text message in two fragments, delivered three ways (§5.4).
	two := []frame{frag(opText, false, f1), frag(opCont, true, f2)}
	cases = append(cases,
		wsCase{id: "5.3", doc: "text message in two fragments, one write, is echoed whole (§5.4)",
			send: together(two...), want: []frame{msg}},
		wsCase{id: "5.4", doc: "text message in two fragments, frame-wise, is echoed whole (§5.4)",
			send: send(two...), want: []frame{msg}},
		wsCase{id: "5.5", doc: "text message in two fragments, octet-wise, is echoed whole (§5.4)",
			send: chopped(1, two...), want: []frame{msg}},
	)
	// A ping between the fragments is answered at once (§5.4: control
	// frames MAY be injected in the middle of a fragmented message).
	withPing := []frame{frag(opText, false, f1), ping(pp), frag(opCont, true, f2)}
	cases = append(cases,
		wsCase{id: "5.6", doc: "text fragment, ping, final fragment in one write: pong, then the message (§5.4)",
			send: together(withPing...), want: []frame{pong(pp), msg}},
		wsCase{id: "5.7", doc: "text fragment, ping, final fragment frame-wise: pong, then the message (§5.4)",
			send: send(withPing...), want: []frame{pong(pp), msg}},
		wsCase{id: "5.8", doc: "text fragment, ping, final fragment octet-wise: pong, then the message (§5.4)",
			send: chopped(1, withPing...), want: []frame{pong(pp), msg}},
	)
	// A continuation frame with no message started is a protocol error
	// (§5.4); nothing after it may be processed.
	hello := text("Hello, world!")
	for i, fin := range []bool{true, false} {
		base := 9 + 3*i
		seq := []frame{frag(opCont, fin, "non-continuation payload"), hello}
		doc := fmt.Sprintf("continuation (FIN=%v) with no message started, then text", fin)
		cases = append(cases,
			wsCase{id: fmt.Sprintf("5.%d", base), doc: doc + ", one write: 1002, no echo (§5.4)",
				send: together(seq...), close: closeProtocol},
			wsCase{id: fmt.Sprintf("5.%d", base+1), doc: doc + ", frame-wise: 1002, no echo (§5.4)",
				send: send(seq...), close: closeProtocol},
			wsCase{id: fmt.Sprintf("5.%d", base+2), doc: doc + ", octet-wise: 1002, no echo (§5.4)",
				send: chopped(1, seq...), close: closeProtocol},
		)
	}
	cases = append(cases,
		wsCase{id: "5.15", doc: "a complete fragmented message, then a continuation with none started: echo, then 1002 (§5.4)",
			send: send(frag(opText, false, f1), frag(opCont, true, f2), frag(opCont, false, "fragment3"), frag(opText, true, "fragment4")),
			want: []frame{msg}, close: closeProtocol},
		wsCase{id: "5.16", doc: "continuation (FIN=0) first, then a fragmented text, twice: 1002 (§5.4)",
			send: send(frag(opCont, false, f1), frag(opText, false, f2), frag(opCont, true, "fragment3"),
				frag(opCont, false, f1), frag(opText, false, f2), frag(opCont, true, "fragment3")),
			close: closeProtocol},
		wsCase{id: "5.17", doc: "continuation (FIN=1) first, then a fragmented text, twice: 1002 (§5.4)",
			send: send(frag(opCont, true, f1), frag(opText, false, f2), frag(opCont, true, "fragment3"),
				frag(opCont, true, f1), frag(opText, false, f2), frag(opCont, true, "fragment3")),
			close: closeProtocol},
		wsCase{id: "5.18", doc: "a new text frame while a fragmented message is unfinished: 1002 (§5.4: only continuations may follow)",
			send: send(frag(opText, false, f1), frag(opText, true, f2)), close: closeProtocol},
	)
	// Five fragments with two pings among them (§5.4, §5.5.2).
	p1, p2 := []byte("pongme 1!"), []byte("pongme 2!")
	five := []frame{
		frag(opText, false, "fragment1"), frag(opCont, false, "fragment2"), ping(p1),
		frag(opCont, false, "fragment3"), frag(opCont, false, "fragment4"), ping(p2),
		frag(opCont, true, "fragment5"),
	}
	whole := text("fragment1fragment2fragment3fragment4fragment5")
	cases = append(cases,
		wsCase{id: "5.19", doc: "five fragments with two pings among them, frame-wise: two pongs, then the message (§5.4)",
			send: send(five...), want: []frame{pong(p1), pong(p2), whole}},
		wsCase{id: "5.20", doc: "five fragments with two pings among them, octet-wise: two pongs, then the message (§5.4)",
			send: chopped(1, five...), want: []frame{pong(p1), pong(p2), whole}},
	)
	runCases(t, cases)
}
