package conformance

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// wire is one write the client makes: the bytes of a frame, of several
// frames, or of a piece of a frame, written in one go or in chops.
type wire struct {
	b       []byte
	chop    int  // write in pieces of this many bytes; 0 means one write
	isClose bool // the bytes hold a close frame: the client has started the closing handshake
}

// send returns the frames as one wire item each (frame-wise delivery).
func send(fs ...frame) []wire {
	ws := make([]wire, len(fs))
	for i, f := range fs {
		ws[i] = wire{b: encodeFrame(f), isClose: f.op == opClose}
	}
	return ws
}

// together returns the frames encoded back to back in a single write, so
// that the server finds them all in one read.
func together(fs ...frame) []wire {
	var w wire
	for _, f := range fs {
		w.b = append(w.b, encodeFrame(f)...)
		w.isClose = w.isClose || f.op == opClose
	}
	return []wire{w}
}

// chopped returns the frames back to back, written chop bytes at a time,
// so that headers and payloads are split across many reads.
func chopped(chop int, fs ...frame) []wire {
	w := together(fs...)
	w[0].chop = chop
	return w
}

// splitPayload returns one frame as several writes, cut at the given
// payload offsets; the first write carries the header. It models a sender
// that stalls in the middle of a frame.
func splitPayload(f frame, cuts ...int) []wire {
	b := encodeFrame(f)
	hdr := len(b) - len(f.payload)
	var ws []wire
	prev := 0
	for _, c := range cuts {
		ws = append(ws, wire{b: b[prev : hdr+c]})
		prev = hdr + c
	}
	return append(ws, wire{b: b[prev:]})
}

// cat concatenates wire sequences.
func cat(parts ...[]wire) []wire {
	var ws []wire
	for _, p := range parts {
		ws = append(ws, p...)
	}
	return ws
}

// closeNormalOrEmpty is an expected close code meaning "a close frame with
// no payload or with 1000": the two answers RFC 6455 §5.5.1 and §7.4.1
// allow to a close frame that carried no status code.
const closeNormalOrEmpty uint16 = 0xFFFF

// wsCase is one conformance case: what the client sends, what the server
// must send back, and how the connection must end.
type wsCase struct {
	id  string // Autobahn case number, also the subtest name
	doc string // what the case checks, with the RFC 6455 section

	send []wire  // written in order
	want []frame // messages and control frames the server must send, in order

	// close is the code of the close frame the server must send after
	// want. 0 means the server must not close: the client then closes
	// with 1000 and expects the echo. Either way the server must then
	// close the TCP connection (§7.1.1).
	close uint16

	// failFast marks cases where the server must fail the connection as
	// soon as the offending bytes arrive (§8.1: invalid UTF-8 fails "as
	// soon as" it is seen): rest is only written after the server's close
	// frame has arrived, so a server that waits for the end of the message
	// times out instead.
	failFast bool
	rest     []wire

	timeout time.Duration // per-read deadline; 0 means readTimeout
}

// run plays one case against the server at addr.
func (tc wsCase) run(t *testing.T, addr string) {
	t.Helper()
	if tc.failFast && (tc.close == 0 || len(tc.rest) == 0) {
		t.Fatalf("case %s: a fail-fast case needs a close code and withheld bytes", tc.id)
	}
	timeout := tc.timeout
	if timeout == 0 {
		timeout = readTimeout
	}
	c := dial(t, addr)
	defer c.Close()

	sentClose := false
	for i, w := range tc.send {
		if err := c.write(w.b, w.chop); err != nil {
			if tc.close == 0 {
				t.Fatalf("case %s: write %d: %v", tc.id, i, err)
			}
			// The server may already have failed the connection
			// and reset it; what it sent before is still readable.
			t.Logf("case %s: write %d after the server closed: %v", tc.id, i, err)
			break
		}
		sentClose = sentClose || w.isClose
	}

	for i, want := range tc.want {
		got, err := c.readMessage(timeout)
		if err != nil {
			t.Fatalf("case %s: waiting for reply %d, want %v: %v", tc.id, i+1, want, err)
		}
		if !equalFrame(want, got) {
			t.Fatalf("case %s: reply %d is %v, want %v", tc.id, i+1, got, want)
		}
	}

	if tc.close == 0 {
		if sentClose {
			t.Fatalf("case %s: table error: the client sent a close, so the case must expect one", tc.id)
		}
		if err := c.closeNormally(); err != nil {
			t.Fatalf("case %s: after the expected replies: %v", tc.id, err)
		}
		return
	}

	got, err := c.readMessage(timeout)
	if err != nil {
		if tc.failFast {
			t.Fatalf("case %s: want close %d before the rest of the message is sent (fail fast), got: %v", tc.id, tc.close, err)
		}
		t.Fatalf("case %s: want close %d, got: %v", tc.id, tc.close, err)
	}
	if got.op != opClose {
		t.Fatalf("case %s: got %v, want close %d", tc.id, got, tc.close)
	}
	code, reason, err := parseClose(got)
	if err != nil {
		t.Fatalf("case %s: %v", tc.id, err)
	}
	switch {
	case tc.close == closeNormalOrEmpty:
		if code != closeNoStatusRcvd && code != closeNormal {
			t.Fatalf("case %s: close code %d (%q), want an empty close or 1000", tc.id, code, reason)
		}
	case code != tc.close:
		t.Fatalf("case %s: close code %d (%q), want %d", tc.id, code, reason, tc.close)
	}

	if tc.failFast {
		// Prove the point: the rest arrives after the close, and the
		// server must ignore it (§5.5.1: no data after a close).
		for _, w := range tc.rest {
			if c.write(w.b, w.chop) != nil {
				break
			}
		}
	}
	if !sentClose {
		// Complete the handshake as a well-behaved client does
		// (§5.5.1: echo the status code). The server may already have
		// closed the TCP connection; then this write fails harmlessly.
		reply := closeFrame(code, "")
		if code == closeNoStatusRcvd {
			reply.payload = nil
		}
		_ = c.writeFrame(reply)
	}
	if err := c.expectTCPClose(readTimeout); err != nil {
		t.Fatalf("case %s: after the close frame: %v", tc.id, err)
	}
}

// runCases runs every case as a subtest named by its id against a fresh
// server.
func runCases(t *testing.T, cases []wsCase) {
	runCasesAt(t, startEcho(t, engineOptions()), cases)
}

// runCasesAt runs every case as a subtest named by its id against the
// server at addr.
func runCasesAt(t *testing.T, addr string, cases []wsCase) {
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
			tc.run(t, addr)
		})
	}
}

// repeat returns n bytes made of s repeated, as Autobahn builds its
// payloads.
func repeat(s string, n int) []byte {
	return bytes.Repeat([]byte(s), n/len(s)+1)[:n]
}

// pattern returns n bytes of a fixed pseudo-random binary pattern, so that
// a byte-for-byte comparison catches shifted or swapped chunks. It makes
// eight bytes per step because the suite needs tens of megabytes of it
// under -race.
func pattern(n int) []byte {
	b := make([]byte, (n+7)&^7)
	x := uint64(0x9E3779B97F4A7C15)
	for i := 0; i < len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	return b[:n]
}
