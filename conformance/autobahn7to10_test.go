package conformance

import (
	"fmt"
	"testing"
	"time"
)

// TestCloseHandling is Autobahn section 7: the closing handshake (§5.5.1,
// §7.1), what follows a close frame, close payload rules (§5.5.1) and
// close codes (§7.4).
func TestCloseHandling(t *testing.T) {
	hello := text("Hello World!")
	big := textB(repeat("BAsd7&jh23", 256<<10))
	cases := []wsCase{
		{id: "7.1.1", doc: "text then close 1000: the text is echoed, then the close (§7.1.2)",
			send: send(hello, closeFrame(closeNormal, "")), want: []frame{hello}, close: closeNormal},
		{id: "7.1.2", doc: "two closes: the second is ignored (§5.5.1: nothing is processed after a close)",
			send: send(closeFrame(closeNormal, ""), closeFrame(closeNormal, "")), close: closeNormal},
		{id: "7.1.3", doc: "close then ping: the ping is not answered (§5.5.1)",
			send: send(closeFrame(closeNormal, ""), ping([]byte("Hello World!"))), close: closeNormal},
		{id: "7.1.4", doc: "close then text: the text is not echoed (§5.5.1)",
			send: send(closeFrame(closeNormal, ""), hello), close: closeNormal},
		{id: "7.1.5", doc: "first fragment, close, last fragment: the message is never delivered (§5.5.1)",
			send:  send(frag(opText, false, "fragment1"), closeFrame(closeNormal, ""), frag(opCont, true, "fragment2")),
			close: closeNormal},
		{id: "7.1.6", doc: "256 KiB text, close, ping in one write: the text is echoed, then the close, no pong",
			send: together(big, closeFrame(closeNormal, ""), ping([]byte("Hello World!"))),
			want: []frame{big}, close: closeNormal},
		{id: "7.3.1", doc: "close without payload: a close without payload or with 1000 comes back (§5.5.1)",
			send: send(frame{fin: true, op: opClose}), close: closeNormalOrEmpty},
		{id: "7.3.2", doc: "close with a 1-byte payload fails with 1002 (§5.5.1: a body starts with a 2-byte code)",
			send: send(frame{fin: true, op: opClose, payload: []byte{0x03}}), close: closeProtocol},
		{id: "7.3.3", doc: "close 1000 without reason is echoed (§5.5.1)",
			send: send(closeFrame(closeNormal, "")), close: closeNormal},
		{id: "7.3.4", doc: "close 1000 with a reason is echoed",
			send: send(closeFrame(closeNormal, "Hello World!")), close: closeNormal},
		{id: "7.3.5", doc: "close 1000 with a 123-byte reason (125-byte payload, the maximum) is echoed (§5.5)",
			send: send(closeFrame(closeNormal, string(repeat("*", 123)))), close: closeNormal},
		{id: "7.3.6", doc: "close 1000 with a 124-byte reason (126-byte payload) fails with 1002 (§5.5)",
			send: send(closeFrame(closeNormal, string(repeat("*", 124)))), close: closeProtocol},
		{id: "7.5.1", doc: "close reason that is not UTF-8 fails with 1007 (§5.5.1, §8.1)",
			send:  send(closeFrame(closeNormal, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64")),
			close: closeInvalidData},
	}
	// 7.7: codes a peer may send are accepted and echoed (§7.4.1, §7.4.2
	// and the IANA registry).
	for i, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999} {
		cases = append(cases, wsCase{id: fmt.Sprintf("7.7.%d", i+1),
			doc:  fmt.Sprintf("close %d is a valid code and is echoed (§7.4)", code),
			send: send(closeFrame(code, "")), close: code})
	}
	// 7.9: codes that must never be on the wire fail with 1002. Autobahn
	// lists 1012-1014 here (7.9.6-7.9.8) because they were unassigned when
	// it was written; the IANA registry has since assigned them (Service
	// Restart, Try Again Later, Bad Gateway), so they are accepted here.
	for i, code := range []uint16{0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999} {
		c := wsCase{id: fmt.Sprintf("7.9.%d", i+1), send: send(closeFrame(code, ""))}
		if code >= 1012 && code <= 1014 {
			c.doc = fmt.Sprintf("close %d (registered with IANA after Autobahn was written) is echoed", code)
			c.close = code
		} else {
			c.doc = fmt.Sprintf("close %d may not be sent (§7.4.1, §7.4.2): 1002", code)
			c.close = closeProtocol
		}
		cases = append(cases, c)
	}
	// 7.13: codes past the §7.4.2 ranges.
	for i, code := range []uint16{5000, 65535} {
		cases = append(cases, wsCase{id: fmt.Sprintf("7.13.%d", i+1),
			doc:  fmt.Sprintf("close %d is outside every range of §7.4.2: 1002", code),
			send: send(closeFrame(code, "")), close: closeProtocol})
	}
	runCases(t, cases)
}

// TestLimits is Autobahn section 9, trimmed to stay within seconds under
// -race: large messages whole, fragmented and chopped, echoed byte for
// byte, and many small messages in sequence.
func TestLimits(t *testing.T) {
	sizes := []int{64 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20, 16 << 20}
	if testing.Short() {
		sizes = sizes[:3]
	}
	var cases []wsCase
	for i, n := range sizes {
		p := repeat("BAsd7&jh23", n)
		cases = append(cases, wsCase{id: fmt.Sprintf("9.1.%d", i+1),
			doc:  fmt.Sprintf("text message of %d bytes in one frame is echoed", n),
			send: send(textB(p)), want: []frame{textB(p)}, timeout: largeTimeout})
	}
	for i, n := range sizes {
		p := pattern(n)
		cases = append(cases, wsCase{id: fmt.Sprintf("9.2.%d", i+1),
			doc:  fmt.Sprintf("binary message of %d bytes in one frame is echoed", n),
			send: send(bin(p)), want: []frame{bin(p)}, timeout: largeTimeout})
	}
	// 9.3/9.4: Autobahn fragments 4 MiB; 1 MiB keeps 64-byte fragments
	// (16384 frames) cheap under -race and still spans many reads.
	const fragMsg = 1 << 20
	for s, op := range []byte{opText, opBinary} {
		var p []byte
		if op == opText {
			p = repeat("BAsd7&jh23", fragMsg)
		} else {
			p = pattern(fragMsg)
		}
		for i, fs := range []int{64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20} {
			cases = append(cases, wsCase{id: fmt.Sprintf("9.%d.%d", 3+s, i+1),
				doc:  fmt.Sprintf("%v message of %d bytes in fragments of %d bytes is echoed whole (§5.4)", opName(op), fragMsg, fs),
				send: together(fragments(op, p, fs)...), want: []frame{{fin: true, op: op, payload: p}}, timeout: largeTimeout})
		}
	}
	// 9.5/9.6: one 1 MiB frame written in chops, so the server sees the
	// payload trickle in.
	const chopMsg = 1 << 20
	for s, op := range []byte{opText, opBinary} {
		var p []byte
		if op == opText {
			p = repeat("BAsd7&jh23", chopMsg)
		} else {
			p = pattern(chopMsg)
		}
		chops := []int{64, 128, 256, 512, 1024, 2048}
		if testing.Short() {
			chops = chops[2:]
		}
		for i, chop := range chops {
			f := frame{fin: true, op: op, payload: p}
			cases = append(cases, wsCase{id: fmt.Sprintf("9.%d.%d", 5+s, i+1),
				doc:  fmt.Sprintf("%v frame of %d bytes written in chops of %d bytes is echoed", opName(op), chopMsg, chop),
				send: chopped(chop, f), want: []frame{f}, timeout: largeTimeout})
		}
	}
	addr := startEcho(t, engineOptions())
	runCasesAt(t, addr, cases)

	// 9.7/9.8: round trips of many small messages, one at a time.
	for s, op := range []byte{opText, opBinary} {
		for i, n := range []int{0, 16, 64, 256, 1024, 4096} {
			id := fmt.Sprintf("9.%d.%d", 7+s, i+1)
			t.Run(id, func(t *testing.T) {
				const count = 1000
				t.Logf("%d %v messages of %d bytes, each sent after the previous echo", count, opName(op), n)
				c := dial(t, addr)
				defer c.Close()
				f := frame{fin: true, op: op, payload: repeat("*", n)}
				enc := encodeFrame(f)
				start := time.Now()
				for k := range count {
					if err := c.write(enc, 0); err != nil {
						t.Fatalf("message %d: %v", k, err)
					}
					got, err := c.readMessage(readTimeout)
					if err != nil {
						t.Fatalf("message %d: %v", k, err)
					}
					if !equalFrame(f, got) {
						t.Fatalf("message %d: got %v, want %v", k, got, f)
					}
				}
				t.Logf("%v per round trip", time.Since(start)/count)
				if err := c.closeNormally(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestAutoFragmentation is Autobahn section 10: a 65536-byte text message
// sent by a client that fragments every message (Autobahn uses frames of
// 1300 bytes) is echoed whole (§5.4). Other fragment sizes, down to one
// byte per frame, run as subtests of 10.1.1.
func TestAutoFragmentation(t *testing.T) {
	addr := startEcho(t, engineOptions())
	p := repeat("BAsd7&jh23", 65536)
	t.Run("10.1.1", func(t *testing.T) {
		wsCase{id: "10.1.1", doc: "65536-byte text message in 1300-byte fragments is echoed whole",
			send: together(fragments(opText, p, 1300)...), want: []frame{textB(p)}, timeout: largeTimeout}.run(t, addr)
		for _, fs := range []int{1, 2, 3, 7, 125, 126, 127, 4096, 65535, 65536} {
			t.Run(fmt.Sprintf("fragsize=%d", fs), func(t *testing.T) {
				wsCase{id: fmt.Sprintf("10.1.1/%d", fs), doc: fmt.Sprintf("65536-byte text message in %d-byte fragments is echoed whole", fs),
					send: together(fragments(opText, p, fs)...), want: []frame{textB(p)}, timeout: largeTimeout}.run(t, addr)
			})
		}
	})
}

// fragments splits payload into a message of frames of at most size bytes.
func fragments(op byte, payload []byte, size int) []frame {
	var fs []frame
	for first := true; first || len(payload) > 0; first = false {
		n := min(size, len(payload))
		f := frame{op: opCont, payload: payload[:n]}
		if first {
			f.op = op
		}
		payload = payload[n:]
		f.fin = len(payload) == 0
		fs = append(fs, f)
	}
	return fs
}

func opName(op byte) string {
	switch op {
	case opText:
		return "text"
	case opBinary:
		return "binary"
	}
	return fmt.Sprintf("op %#x", op)
}
