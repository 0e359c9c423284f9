package conformance

import (
	"bufio"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"
)

// unmaskedFrame encodes f as a server would, without a mask: a client must
// never send this (RFC 6455 §5.1).
func unmaskedFrame(f frame) []byte {
	b := encodeFrame(f)
	hdr := len(b) - len(f.payload) - 4
	key := [4]byte(b[hdr : hdr+4])
	out := append(append([]byte(nil), b[:hdr]...), b[hdr+4:]...)
	out[1] &^= 0x80
	maskBytes(out[hdr:], key)
	return out
}

// TestFrameRules covers frame rules Autobahn does not test because its
// client always obeys them: masking (§5.1), the 64-bit length's most
// significant bit (§5.2), and the server's message size limit, which must
// fail the connection with 1009 (§7.4.1) as soon as a header announces too
// much, before the payload is buffered.
func TestFrameRules(t *testing.T) {
	hello := text("Hello, world!")
	msb := []byte{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4}
	// 2^40 bytes: past any sane MaxMessageSize, and past the 64 MiB this
	// suite configures.
	huge := []byte{0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4}
	// The first fragment of a text message announcing 65 MiB, one more
	// than the suite's 64 MiB limit: the limit applies to the message
	// being assembled, whatever its fragments announce.
	big := binary.BigEndian.AppendUint64([]byte{0x01, 0xFF}, 65<<20)
	big = append(big, 1, 2, 3, 4)
	cases := []wsCase{
		{id: "mask.1", doc: "an unmasked text frame fails with 1002 (§5.1: the server MUST close the connection)",
			send: []wire{{b: unmaskedFrame(hello)}}, close: closeProtocol},
		{id: "mask.2", doc: "an unmasked ping after a masked text: echo, then 1002, no pong (§5.1)",
			send: append(send(hello), wire{b: unmaskedFrame(ping([]byte("p")))}), want: []frame{hello}, close: closeProtocol},
		{id: "length.1", doc: "a 64-bit length with the most significant bit set fails with 1002 (§5.2)",
			send: []wire{{b: msb}}, rest: []wire{{b: []byte("hello")}}, close: closeProtocol, failFast: true},
		{id: "length.2", doc: "a binary frame announcing 2^40 bytes fails with 1009 before any payload is sent (§7.4.1)",
			send: []wire{{b: huge}}, rest: []wire{{b: make([]byte, 1000)}}, close: 1009, failFast: true},
		{id: "length.3", doc: "a first text fragment announcing 65 MiB (limit 64 MiB) fails with 1009 before any payload is sent (§7.4.1)",
			send: []wire{{b: big}}, rest: []wire{{b: make([]byte, 1000)}}, close: 1009, failFast: true},
	}
	if addrFromEnv() {
		t.Logf("%s is set: the length cases assume the server's message limit is at most 64 MiB", addrEnv)
	}
	runCases(t, cases)
}

// TestHandshakeRejected sends opening handshakes that §4.2.1 says the
// server must refuse, and expects an HTTP error status (4xx, or 505 for
// HTTP/1.0) instead of 101
// within the read deadline, never a hang and never a WebSocket.
func TestHandshakeRejected(t *testing.T) {
	addr := startEcho(t, engineOptions())
	valid := func(drop string, add ...string) string {
		req, _ := handshakeRequest(addr, add...)
		var kept []string
		for _, line := range strings.Split(string(req), "\r\n") {
			if drop == "" || !strings.HasPrefix(strings.ToLower(line), strings.ToLower(drop)+":") {
				kept = append(kept, line)
			}
		}
		return strings.Join(kept, "\r\n")
	}
	cases := []struct {
		name    string
		req     string
		wantHdr string // a header line the response must carry, lower case
	}{
		{name: "version-8", req: valid("sec-websocket-version", "Sec-WebSocket-Version: 8"),
			wantHdr: "sec-websocket-version: 13"}, // §4.2.2 step 4 / §4.4
		{name: "no-version", req: valid("sec-websocket-version")},
		{name: "no-key", req: valid("sec-websocket-key")},
		{name: "short-key", req: valid("sec-websocket-key", "Sec-WebSocket-Key: c2hvcnQ=")}, // §4.1: 16 bytes
		{name: "no-upgrade", req: valid("upgrade")},
		{name: "no-connection-upgrade", req: valid("connection", "Connection: keep-alive")},
		{name: "no-host", req: valid("host")},
		{name: "post", req: strings.Replace(valid(""), "GET ", "POST ", 1)},
		{name: "http-1.0", req: strings.Replace(valid(""), "HTTP/1.1", "HTTP/1.0", 1)},
		{name: "huge-header", req: valid("", "X-Padding: "+strings.Repeat("a", 64<<10))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := dialNet(&net.Dialer{Timeout: 5 * time.Second}, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(readTimeout))
			// A server may answer a huge header before reading all of
			// it and close; a failed write is fine then.
			_, werr := conn.Write([]byte(tc.req))
			br := bufio.NewReader(conn)
			status, err := br.ReadString('\n')
			if err != nil {
				if werr != nil {
					t.Logf("write: %v; read: %v (the server closed without a status)", werr, err)
					return
				}
				t.Fatalf("no status line: %v", err)
			}
			f := strings.Fields(status)
			if len(f) < 2 || len(f[1]) != 3 || f[1] < "400" {
				t.Fatalf("status line %q, want an HTTP error status", strings.TrimSpace(status))
			}
			if tc.wantHdr == "" {
				return
			}
			for {
				line, err := br.ReadString('\n')
				if err != nil || line == "\r\n" {
					t.Fatalf("response %q lacks header %q", strings.TrimSpace(status), tc.wantHdr)
				}
				if strings.EqualFold(strings.TrimSpace(line), tc.wantHdr) {
					return
				}
			}
		})
	}
}
