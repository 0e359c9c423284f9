package conformance

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// This file is a minimal WebSocket client written straight from RFC 6455 for
// testing servers: it writes whatever frames a test asks for, valid or not,
// masked as §5.3 requires of a client, and it reads the server's frames
// checking every rule a server must follow when it writes (§5.1 no mask,
// §5.2 no RSV bits without an extension, §5.5 short unfragmented control
// frames, §7.4 close codes, §8.1 UTF-8 text).

// Opcodes of RFC 6455 §5.2. The client speaks raw bytes on purpose, so it
// does not borrow the codec's types: a bug there must not hide here.
const (
	opCont   byte = 0x0
	opText   byte = 0x1
	opBinary byte = 0x2
	opClose  byte = 0x8
	opPing   byte = 0x9
	opPong   byte = 0xA
)

// RSV bits of the first header byte (RFC 6455 §5.2).
const (
	rsv1 byte = 0x40
	rsv2 byte = 0x20
	rsv3 byte = 0x10
)

// Close codes the tests expect (RFC 6455 §7.4.1).
const (
	closeNormal       uint16 = 1000
	closeProtocol     uint16 = 1002
	closeInvalidData  uint16 = 1007
	closeNoStatusRcvd uint16 = 1005 // never on the wire; see readClose
)

// acceptGUID is the fixed GUID of RFC 6455 §1.3 that the server appends to
// Sec-WebSocket-Key before hashing.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// Deadlines. They bound how long a read may wait for the server, so a
// server that never answers fails the test instead of hanging it; they are
// not used to let anything happen.
const (
	readTimeout  = 2 * time.Second  // a reply to a small frame, or the TCP close
	largeTimeout = 30 * time.Second // a reply to a multi-megabyte message under -race
)

// frame is one WebSocket frame as it travels on the wire. Control frames
// and single-frame messages are compared as frames; fragmented replies are
// reassembled by readMessage first.
type frame struct {
	fin     bool
	rsv     byte // the RSV bits in their header positions (rsv1|rsv2|rsv3)
	op      byte
	payload []byte
}

// String shows a frame in test failures, its payload cut to 32 bytes.
func (f frame) String() string {
	p := f.payload
	suffix := ""
	if len(p) > 32 {
		p, suffix = p[:32], fmt.Sprintf("...(%d bytes)", len(f.payload))
	}
	return fmt.Sprintf("{fin=%v rsv=%#x op=%#x payload=%q%s}", f.fin, f.rsv, f.op, p, suffix)
}

// Constructors for the frames the case tables use.
func text(s string) frame                    { return frame{fin: true, op: opText, payload: []byte(s)} }
func textB(b []byte) frame                   { return frame{fin: true, op: opText, payload: b} }
func bin(b []byte) frame                     { return frame{fin: true, op: opBinary, payload: b} }
func ping(b []byte) frame                    { return frame{fin: true, op: opPing, payload: b} }
func pong(b []byte) frame                    { return frame{fin: true, op: opPong, payload: b} }
func frag(op byte, fin bool, s string) frame { return frame{fin: fin, op: op, payload: []byte(s)} }

// closeFrame builds a close frame with a code and reason (§5.5.1).
func closeFrame(code uint16, reason string) frame {
	p := binary.BigEndian.AppendUint16(nil, code)
	return frame{fin: true, op: opClose, payload: append(p, reason...)}
}

// encodeFrame returns f as a client frame: masked with a fresh random key
// (§5.3), with the shortest length encoding (§5.2).
func encodeFrame(f frame) []byte {
	n := len(f.payload)
	b := make([]byte, 0, 14+n)
	b0 := f.op&0x0F | f.rsv&0x70
	if f.fin {
		b0 |= 0x80
	}
	switch {
	case n <= 125:
		b = append(b, b0, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, b0, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, b0, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var key [4]byte
	if _, err := rand.Read(key[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, f.payload...)
	maskBytes(b[start:], key)
	return b
}

// maskBytes XORs p with the repeating key (§5.3). It works a word at a
// time because the suite masks tens of megabytes under -race.
func maskBytes(p []byte, key [4]byte) {
	k32 := binary.LittleEndian.Uint32(key[:])
	k64 := uint64(k32) | uint64(k32)<<32
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k64)
	}
	for ; i < len(p); i++ {
		p[i] ^= key[i&3]
	}
}

// client is one raw WebSocket connection to the server under test.
type client struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
}

// newReader returns the buffered reader a client reads the server with.
func newReader(conn net.Conn) *bufio.Reader { return bufio.NewReaderSize(conn, 4<<10) }

// handshakeRequest returns an opening handshake (§4.1) for host with a
// fresh key, and the Sec-WebSocket-Accept value the server must answer.
func handshakeRequest(host string, extra ...string) (req []byte, accept string) {
	var k [16]byte
	if _, err := rand.Read(k[:]); err != nil {
		panic(err)
	}
	key := base64.StdEncoding.EncodeToString(k[:])
	var b strings.Builder
	b.WriteString("GET /ws HTTP/1.1\r\n")
	b.WriteString("Host: " + host + "\r\n")
	b.WriteString("Upgrade: websocket\r\n")
	b.WriteString("Connection: Upgrade\r\n")
	b.WriteString("Sec-WebSocket-Key: " + key + "\r\n")
	b.WriteString("Sec-WebSocket-Version: 13\r\n")
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String()), acceptKey(key)
}

// acceptKey computes Sec-WebSocket-Accept for key (§4.2.2 step 5.4).
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + acceptGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// dial opens a TCP connection and completes the handshake, failing the test
// if the server's 101 response is not exactly right.
func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := dialErr(t, &net.Dialer{Timeout: 5 * time.Second}, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dialErr is dial with a chosen dialer and bytes to send in the same write
// as the handshake (a pipelined first frame); it returns errors instead of
// failing, for use from worker goroutines.
func dialErr(t testing.TB, d *net.Dialer, addr string, pipelined []byte) (*client, error) {
	conn, err := dialNet(d, addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c := &client{t: t, conn: conn, br: newReader(conn)}
	req, accept := handshakeRequest(addr)
	if _, err := conn.Write(append(req, pipelined...)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("write handshake: %w", err)
	}
	if err := c.readHandshake(accept); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// readHandshake reads the server's opening handshake and checks it
// against §4.2.2 step 5 / §4.1 steps 1-4 of the client's validation.
func (c *client) readHandshake(accept string) error {
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.conn.SetReadDeadline(time.Time{})
	status, err := c.br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read status line: %w", err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 101 ") {
		return fmt.Errorf("status line %q, want HTTP/1.1 101", strings.TrimSpace(status))
	}
	hdr := map[string][]string{}
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("read header: %w", err)
		}
		if !strings.HasSuffix(line, "\r\n") {
			return fmt.Errorf("header line %q not terminated by CRLF", line)
		}
		line = strings.TrimSuffix(line, "\r\n")
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("malformed header line %q", line)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		hdr[k] = append(hdr[k], strings.TrimSpace(v))
	}
	if !hasToken(hdr["upgrade"], "websocket") {
		return fmt.Errorf("Upgrade header %q, want websocket", hdr["upgrade"])
	}
	if !hasToken(hdr["connection"], "upgrade") {
		return fmt.Errorf("Connection header %q, want Upgrade", hdr["connection"])
	}
	if got := hdr["sec-websocket-accept"]; len(got) != 1 || got[0] != accept {
		return fmt.Errorf("Sec-WebSocket-Accept %q, want %q", got, accept)
	}
	// We offered no extension and no subprotocol, so the server must not
	// pick one (§4.1 client steps 5 and 6).
	if v := hdr["sec-websocket-extensions"]; len(v) > 0 {
		return fmt.Errorf("server chose extensions %q that were not offered", v)
	}
	if v := hdr["sec-websocket-protocol"]; len(v) > 0 {
		return fmt.Errorf("server chose subprotocol %q that was not offered", v)
	}
	return nil
}

// hasToken reports whether a comma-separated header value list contains
// token, compared case-insensitively as §4.1 requires.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), token) {
				return true
			}
		}
	}
	return false
}

// write writes raw bytes, in pieces of chop bytes when chop > 0 so that the
// server sees the data arrive across several reads. Nagle is off on Go TCP
// connections, so each piece is its own segment in practice.
func (c *client) write(b []byte, chop int) error {
	c.conn.SetWriteDeadline(time.Now().Add(largeTimeout))
	if chop <= 0 {
		_, err := c.conn.Write(b)
		return err
	}
	for len(b) > 0 {
		n := min(chop, len(b))
		if _, err := c.conn.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// writeFrame encodes and writes f in one write.
func (c *client) writeFrame(f frame) error { return c.write(encodeFrame(f), 0) }

// readFrame reads one frame and checks the rules every server frame must
// obey, whatever the test: no mask (§5.1), no RSV bits since no extension
// was negotiated (§5.2), no reserved opcodes (§5.2), control frames final
// and at most 125 bytes (§5.5).
func (c *client) readFrame(timeout time.Duration) (frame, error) {
	return c.readFrameExt(timeout, false)
}

// readFrameExt is readFrame for a connection that negotiated
// permessage-deflate when deflate is set: RSV1 is then allowed, on the first
// frame of a data message only (RFC 7692 §6).
func (c *client) readFrameExt(timeout time.Duration, deflate bool) (frame, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return frame{}, err
	}
	f := frame{fin: h[0]&0x80 != 0, rsv: h[0] & 0x70, op: h[0] & 0x0F}
	if h[1]&0x80 != 0 {
		return f, errors.New("server frame is masked (RFC 6455 §5.1 forbids it)")
	}
	switch {
	case deflate && f.rsv == rsv1:
		if f.op == opCont || f.op >= opClose {
			return f, fmt.Errorf("server set RSV1 on a %s frame (RFC 7692 §6: first data frame only)", opName(f.op))
		}
	case f.rsv != 0:
		return f, fmt.Errorf("server frame has RSV bits %#x not negotiated (§5.2)", f.rsv)
	}
	if f.op > opBinary && f.op < opClose || f.op > opPong {
		return f, fmt.Errorf("server frame has reserved opcode %#x (§5.2)", f.op)
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(c.br, e[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(e[:]))
		if n < 126 {
			return f, fmt.Errorf("server used a 16-bit length for %d bytes (§5.2 minimal encoding)", n)
		}
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(c.br, e[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(e[:])
		if n <= 0xFFFF || n>>63 != 0 {
			return f, fmt.Errorf("server used a 64-bit length for %d bytes (§5.2)", n)
		}
	}
	if f.op >= opClose && (n > 125 || !f.fin) {
		return f, fmt.Errorf("server control frame op=%#x fin=%v len=%d (§5.5)", f.op, f.fin, n)
	}
	if n > 256<<20 {
		return f, fmt.Errorf("server frame announces %d bytes", n)
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, f.payload); err != nil {
		return f, err
	}
	return f, nil
}

// readMessage reads the next message or control frame: data frames are
// reassembled (the server may fragment its replies as it likes, §5.4) and
// returned as one final frame; a control frame is returned as it is. A
// control frame that arrives between fragments is an error here, because
// the echo server has no reason to interleave one.
func (c *client) readMessage(timeout time.Duration) (frame, error) {
	f, err := c.readFrame(timeout)
	if err != nil || f.op >= opClose {
		return f, err
	}
	if f.op == opCont {
		return f, errors.New("server sent a continuation frame with no message started (§5.4)")
	}
	for !f.fin {
		g, err := c.readFrame(timeout)
		if err != nil {
			return f, err
		}
		if g.op != opCont {
			return f, fmt.Errorf("server sent %v inside a fragmented message", g)
		}
		f.payload = append(f.payload, g.payload...)
		f.fin = g.fin
	}
	if f.op == opText && !utf8.Valid(f.payload) {
		return f, errors.New("server sent a text message that is not UTF-8 (§8.1)")
	}
	return f, nil
}

// parseClose splits a close frame's payload into code and reason and
// checks what a server may put there (§5.5.1, §7.4). An empty payload is
// reported as 1005, as §7.1.5 says.
func parseClose(f frame) (uint16, string, error) {
	switch len(f.payload) {
	case 0:
		return closeNoStatusRcvd, "", nil
	case 1:
		return 0, "", errors.New("server close frame has a 1-byte payload (§5.5.1)")
	}
	code := binary.BigEndian.Uint16(f.payload)
	reason := string(f.payload[2:])
	if !validCloseCode(code) {
		return code, reason, fmt.Errorf("server sent close code %d that may not be sent (§7.4)", code)
	}
	if !utf8.ValidString(reason) {
		return code, reason, errors.New("server close reason is not UTF-8 (§5.5.1)")
	}
	return code, reason, nil
}

// validCloseCode reports whether code may appear in a close frame: the
// codes §7.4.1 defines for use on the wire, the registered 1012-1014 (IANA
// WebSocket Close Code Number Registry), and the 3000-4999 ranges of
// §7.4.2.
func validCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// expectTCPClose waits for the server to close the TCP connection (§7.1.1:
// after the close handshake the server closes first). Anything that
// arrives instead is an error: §5.5.1 says nothing may follow a close frame.
// A reset counts as closed: if the server closes while bytes we sent are
// still unread in its socket, the kernel answers with RST instead of FIN.
func (c *client) expectTCPClose(timeout time.Duration) error {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	var b [512]byte
	n, err := c.br.Read(b[:])
	switch {
	case n > 0:
		return fmt.Errorf("server sent %d bytes after its close frame: %q", n, b[:n])
	case err == io.EOF, errors.Is(err, syscall.ECONNRESET):
		return nil
	case err != nil:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("server did not close the TCP connection within %v of the close handshake", timeout)
		}
		return err
	}
	return errors.New("read returned nothing and no error")
}

// closeNormally runs a client-initiated close handshake with 1000 and
// checks the server's answer and its TCP close; it ends every case that
// does not end with a server close.
func (c *client) closeNormally() error {
	if err := c.writeFrame(closeFrame(closeNormal, "")); err != nil {
		return fmt.Errorf("write close: %w", err)
	}
	f, err := c.readFrame(readTimeout)
	if err != nil {
		return fmt.Errorf("waiting for the close reply: %w", err)
	}
	if f.op != opClose {
		return fmt.Errorf("got %v, want the close reply", f)
	}
	code, _, err := parseClose(f)
	if err != nil {
		return err
	}
	if code != closeNormal {
		return fmt.Errorf("close reply code %d, want %d echoed", code, closeNormal)
	}
	return c.expectTCPClose(readTimeout)
}

// Close closes the TCP connection.
func (c *client) Close() error { return c.conn.Close() }

// equalFrame compares what a test expects with what arrived.
func equalFrame(want, got frame) bool {
	return want.op == got.op && want.fin == got.fin && want.rsv == got.rsv && bytes.Equal(want.payload, got.payload)
}
