package clientconformance

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
)

// This file is the test server, written straight from RFC 6455 with its
// own framing (a bug in the codec must not hide here): it answers the
// client's upgrade, writes whatever frames a case asks for, valid or not,
// and reads the client's frames checking every rule a client must follow
// when it writes (§5.1 and §5.3 masking, §5.2 no RSV bits without an
// extension, §5.5 short unfragmented control frames, §7.4 close codes,
// §8.1 UTF-8 text).

// Opcodes of RFC 6455 §5.2.
const (
	opCont   byte = 0x0
	opText   byte = 0x1
	opBinary byte = 0x2
	opClose  byte = 0x8
	opPing   byte = 0x9
	opPong   byte = 0xA
)

// RSV bits of the first header byte (§5.2).
const (
	rsv1 byte = 0x40
	rsv2 byte = 0x20
	rsv3 byte = 0x10
)

// Close codes (§7.4.1).
const (
	closeNormal        uint16 = 1000
	closeProtocol      uint16 = 1002
	closeNoStatus      uint16 = 1005 // never on the wire: an empty close frame
	closeInvalidData   uint16 = 1007
	closeTooBig        uint16 = 1009
	closeNormalOrEmpty uint16 = 0xFFFF // a case's expectation: an empty close or 1000
)

// readTimeout bounds each read of the test server. It is generous for the
// race detector on a shared machine; nothing waits for it to pass.
const readTimeout = 5 * time.Second

// closeTimeout is the client's CloseTimeout, on its fake clock.
const closeTimeout = 4 * time.Second

// sframe is a frame the test server sends.
type sframe struct {
	fin      bool
	rsv      byte
	op       byte
	payload  []byte
	masked   bool // a server must not mask (§5.1): the client must fail
	compress bool // permessage-deflate: RSV1 and a compressed payload
}

func (f sframe) String() string {
	return fmt.Sprintf("{fin=%v rsv=%#x op=%#x masked=%v len=%d}", f.fin, f.rsv, f.op, f.masked, len(f.payload))
}

// Constructors for the case tables.
func text(s string) sframe                    { return sframe{fin: true, op: opText, payload: []byte(s)} }
func textB(b []byte) sframe                   { return sframe{fin: true, op: opText, payload: b} }
func bin(b []byte) sframe                     { return sframe{fin: true, op: opBinary, payload: b} }
func ping(b []byte) sframe                    { return sframe{fin: true, op: opPing, payload: b} }
func pong(b []byte) sframe                    { return sframe{fin: true, op: opPong, payload: b} }
func frag(op byte, fin bool, s string) sframe { return sframe{fin: fin, op: op, payload: []byte(s)} }

func closeF(code uint16, reason string) sframe {
	p := binary.BigEndian.AppendUint16(nil, code)
	return sframe{fin: true, op: opClose, payload: append(p, reason...)}
}

// encode returns f as the server writes it.
func (f sframe) encode() []byte {
	payload := f.payload
	b0 := f.op&0x0F | f.rsv&0x70
	if f.compress {
		payload = deflate(payload)
		b0 |= rsv1
	}
	if f.fin {
		b0 |= 0x80
	}
	n := len(payload)
	var mbit byte
	if f.masked {
		mbit = 0x80
	}
	b := make([]byte, 0, 14+n)
	switch {
	case n <= 125:
		b = append(b, b0, mbit|byte(n))
	case n <= 0xFFFF:
		b = append(b, b0, mbit|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, b0, mbit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !f.masked {
		return append(b, payload...)
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, payload...)
	for i := range b[start:] {
		b[start+i] ^= key[i&3]
	}
	return b
}

// deflate compresses a message payload as permessage-deflate does (RFC
// 7692 §7.2.1): a sync flush with its final 00 00 ff ff removed.
func deflate(p []byte) []byte {
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, flate.BestSpeed)
	fw.Write(p)
	fw.Flush()
	return bytes.TrimSuffix(buf.Bytes(), []byte{0, 0, 0xff, 0xff})
}

// inflate undoes deflate for a message the client compressed (§7.2.2).
func inflate(p []byte) ([]byte, error) {
	r := flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff})))
	return io.ReadAll(r)
}

// wire is one write of the server: frames, or a piece of one, whole or in
// chops.
type wire struct {
	b    []byte
	chop int
}

func send(fs ...sframe) []wire {
	ws := make([]wire, len(fs))
	for i, f := range fs {
		ws[i] = wire{b: f.encode()}
	}
	return ws
}

func together(fs ...sframe) []wire {
	var w wire
	for _, f := range fs {
		w.b = append(w.b, f.encode()...)
	}
	return []wire{w}
}

func chopped(chop int, fs ...sframe) []wire {
	w := together(fs...)
	w[0].chop = chop
	return w
}

func cat(parts ...[]wire) []wire {
	var ws []wire
	for _, p := range parts {
		ws = append(ws, p...)
	}
	return ws
}

// frame is one frame the client sent, unmasked; data messages come
// reassembled (and decompressed) from readMessage.
type frame struct {
	fin     bool
	rsv     byte
	op      byte
	payload []byte
}

func (f frame) String() string {
	p := f.payload
	suffix := ""
	if len(p) > 32 {
		p, suffix = p[:32], fmt.Sprintf("...(%d bytes)", len(f.payload))
	}
	return fmt.Sprintf("{op=%#x payload=%q%s}", f.op, p, suffix)
}

// echoClient is the client under test: it echoes every message with its
// type, answers pings (handler.Base), and reports each OnClose.
type echoClient struct {
	handler.Base
	closes chan closed
}

type closed struct {
	c   handler.Conn
	err error
}

func (e *echoClient) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	_ = c.WriteMessage(op, data) // ErrClosed once closing: OnClose says why
}

func (e *echoClient) OnClose(c handler.Conn, err error) { e.closes <- closed{c, err} }

// harness is a client engine on a fake clock and a test server.
type harness struct {
	t        *testing.T
	d        *engine.Server
	clk      *enginetest.Clock
	cli      *echoClient
	ln       net.Listener
	accepted chan net.Conn
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, clk: enginetest.NewClock(), cli: &echoClient{closes: make(chan closed, 64)}, accepted: make(chan net.Conn, 1)}
	d := engine.New(h.cli, engine.Options{
		Clock:        h.clk,
		CloseTimeout: closeTimeout,
		EventLoops:   1,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.d = d
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(h.accepted)
				return
			}
			h.accepted <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Shutdown(ctx)
	})
	return h
}

// serverConn is the test server's side of one connection.
type serverConn struct {
	t       *testing.T
	c       net.Conn
	br      *bufio.Reader
	deflate bool   // permessage-deflate was negotiated
	partial *frame // a fragmented message being reassembled
}

// open dials the test server with the client under test and completes the
// handshake on the server's side.
func (h *harness) open(t *testing.T, opts *engine.DialOptions) (*serverConn, handler.Conn) {
	t.Helper()
	type result struct {
		c   handler.Conn
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, _, err := h.d.Dial(context.Background(), "ws://"+h.ln.Addr().String()+"/case", opts)
		res <- result{c, err}
	}()
	var c net.Conn
	select {
	case c = <-h.accepted:
	case r := <-res:
		t.Fatalf("dial failed before the server accepted: %v", r.err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	sc := &serverConn{t: t, c: c, br: bufio.NewReaderSize(c, 4<<10)}
	req, err := http.ReadRequest(sc.br)
	if err != nil {
		t.Fatalf("reading the client's upgrade request: %v", err)
	}
	// RFC 6455 §4.1: what a client's opening handshake must hold.
	key := req.Header.Get("Sec-Websocket-Key")
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 16 {
		t.Fatalf("Sec-WebSocket-Key %q is not 16 base64 bytes", key)
	}
	if req.Method != http.MethodGet || req.ProtoMajor != 1 || req.ProtoMinor != 1 || req.Host == "" ||
		!strings.EqualFold(req.Header.Get("Upgrade"), "websocket") || !strings.Contains(strings.ToLower(req.Header.Get("Connection")), "upgrade") ||
		req.Header.Get("Sec-Websocket-Version") != "13" {
		t.Fatalf("bad upgrade request: %s %s %v", req.Method, req.Proto, req.Header)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n"
	if strings.Contains(req.Header.Get("Sec-Websocket-Extensions"), "permessage-deflate") {
		resp += "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
		sc.deflate = true
	}
	if _, err := io.WriteString(c, resp+"\r\n"); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatalf("dial: %v", r.err)
	}
	return sc, r.c
}

// write writes one wire item, in chops if asked.
func (sc *serverConn) write(w wire) error {
	if w.chop <= 0 {
		_, err := sc.c.Write(w.b)
		return err
	}
	for b := w.b; len(b) > 0; {
		n := min(w.chop, len(b))
		if _, err := sc.c.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// readFrame reads one frame of the client and checks it against the rules
// for a client's frames.
func (sc *serverConn) readFrame() (frame, error) {
	sc.c.SetReadDeadline(time.Now().Add(readTimeout))
	var h [2]byte
	if _, err := io.ReadFull(sc.br, h[:]); err != nil {
		return frame{}, err
	}
	f := frame{fin: h[0]&0x80 != 0, rsv: h[0] & 0x70, op: h[0] & 0x0F}
	if h[1]&0x80 == 0 {
		return f, errors.New("the client sent an unmasked frame (RFC 6455 §5.1)")
	}
	switch f.op {
	case opCont, opText, opBinary, opClose, opPing, opPong:
	default:
		return f, fmt.Errorf("the client sent reserved opcode %#x", f.op)
	}
	if f.rsv != 0 && !(f.rsv == rsv1 && sc.deflate && (f.op == opText || f.op == opBinary)) {
		return f, fmt.Errorf("the client set RSV bits %#x", f.rsv)
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(sc.br, b[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
		if n < 126 {
			return f, errors.New("the client used a longer length encoding than needed (§5.2)")
		}
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(sc.br, b[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(b[:])
		if n <= 0xFFFF || n>>63 != 0 {
			return f, errors.New("bad 64-bit length (§5.2)")
		}
	}
	if f.op >= opClose && (n > 125 || !f.fin) {
		return f, errors.New("the client sent a fragmented or long control frame (§5.5)")
	}
	var key [4]byte
	if _, err := io.ReadFull(sc.br, key[:]); err != nil {
		return f, err
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(sc.br, f.payload); err != nil {
		return f, err
	}
	for i := range f.payload {
		f.payload[i] ^= key[i&3]
	}
	return f, nil
}

// readMessage reads the client's next message or control frame: data
// fragments are reassembled (and decompressed), text is checked to be
// UTF-8 (§8.1), close frames are checked (§5.5.1, §7.4).
func (sc *serverConn) readMessage() (frame, error) {
	for {
		f, err := sc.readFrame()
		if err != nil {
			return f, err
		}
		if f.op >= opClose {
			if f.op == opClose {
				if _, _, err := parseClose(f); err != nil {
					return f, err
				}
				if sc.partial != nil {
					return f, errors.New("the client closed in the middle of its message")
				}
			}
			return f, nil // a control frame, possibly between fragments (§5.4)
		}
		switch {
		case sc.partial == nil && f.op == opCont:
			return f, errors.New("the client sent a continuation with no message")
		case sc.partial != nil && f.op != opCont:
			return f, errors.New("the client started a message inside another")
		case sc.partial == nil:
			m := f
			sc.partial = &m
		default:
			sc.partial.payload = append(sc.partial.payload, f.payload...)
		}
		if !f.fin {
			continue
		}
		msg := *sc.partial
		sc.partial = nil
		if msg.rsv&rsv1 != 0 {
			p, err := inflate(msg.payload)
			if err != nil {
				return msg, fmt.Errorf("the client's compressed message does not inflate: %v", err)
			}
			msg.payload, msg.rsv = p, 0
		}
		if msg.op == opText && !utf8.Valid(msg.payload) {
			return msg, errors.New("the client sent text that is not UTF-8")
		}
		msg.fin = true
		return msg, nil
	}
}

// parseClose returns a close frame's code (1005 for none) and reason,
// checking them as a receiver must (§5.5.1, §7.4).
func parseClose(f frame) (uint16, string, error) {
	switch len(f.payload) {
	case 0:
		return closeNoStatus, "", nil
	case 1:
		return 0, "", errors.New("the client sent a close payload of 1 byte")
	}
	code := binary.BigEndian.Uint16(f.payload)
	if !(code >= 1000 && code <= 1003 || code >= 1007 && code <= 1014 || code >= 3000 && code <= 4999) {
		return code, "", fmt.Errorf("the client sent close code %d, not allowed on the wire", code)
	}
	if !utf8.Valid(f.payload[2:]) {
		return code, "", errors.New("the client's close reason is not UTF-8")
	}
	return code, string(f.payload[2:]), nil
}

// peerClosed reports whether the client has closed (or reset) its side of
// the TCP connection: a zero-byte read or an error waits in the socket. It
// does not block.
func (sc *serverConn) peerClosed() bool {
	if sc.br.Buffered() > 0 {
		return false
	}
	return sc.socketClosed() // peek_*_test.go
}

// expectEOF waits for the client to close the TCP connection.
func (sc *serverConn) expectEOF() error {
	sc.c.SetReadDeadline(time.Now().Add(readTimeout))
	var b [256]byte
	n, err := sc.br.Read(b[:])
	switch {
	case n > 0:
		return fmt.Errorf("the client sent %d bytes after its close frame: %q", n, b[:n])
	case err == io.EOF, errors.Is(err, syscall.ECONNRESET):
		return nil
	}
	return fmt.Errorf("waiting for the client's TCP close: %v", err)
}

// waitClose returns what the client's OnClose reported for c.
func (h *harness) waitClose(t *testing.T, c handler.Conn) error {
	t.Helper()
	for {
		select {
		case ev := <-h.cli.closes:
			if ev.c == c {
				return ev.err
			}
		case <-time.After(readTimeout):
			t.Fatal("the client's OnClose did not run")
			return nil
		}
	}
}

// repeat returns n bytes made of s repeated.
func repeat(s string, n int) []byte { return bytes.Repeat([]byte(s), n/len(s)+1)[:n] }
