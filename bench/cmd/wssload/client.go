package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/gobwas/ws"
)

// The client side of one wss:// connection: crypto/tls over TCP, the
// upgrade request, and RFC 6455 client framing (masked frames, a fresh
// mask key per frame). A goroutine per connection runs it; that costs the
// load generator memory, not the server.

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

var errServerClosed = errors.New("server sent a close frame")

// conn is one client connection. Only its own goroutine uses it.
type conn struct {
	id  int
	raw *net.TCPConn
	tc  *tls.Conn
	br  *bufio.Reader

	wbuf []byte // the frame being written
	rbuf []byte // the message being read
	sent []byte // the payload of the last message sent
	seq  uint64

	cmds chan func(*conn) // work for the connection's goroutine; closed: close the connection
	done chan struct{}    // closed once the connection is closed
}

// dialer holds what every connection of a run shares.
type dialer struct {
	target  netip.AddrPort
	sources []netip.Addr
	tlsConf *tls.Config
	timeout time.Duration
	request []byte // the upgrade request, without the key line and the end
}

func newDialer(target netip.AddrPort, sources []netip.Addr, curves string, timeout time.Duration) (*dialer, error) {
	conf := &tls.Config{
		// The bench servers present a self-signed certificate made at
		// start; the load generator does not verify it.
		InsecureSkipVerify: true,
		NextProtos:         []string{"http/1.1"},
		// Full-size records from the first byte, as browsers send them:
		// Go's client otherwise starts a connection with ~1 KiB records
		// and grows them, so a 16 KiB message would never reach the
		// server as one 16 KiB record.
		DynamicRecordSizingDisabled: true,
	}
	switch curves {
	case "", "default":
	case "x25519":
		conf.CurvePreferences = []tls.CurveID{tls.X25519}
	default:
		return nil, fmt.Errorf("-curves: want default or x25519, got %q", curves)
	}
	req := fmt.Appendf(nil, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n", target)
	return &dialer{target: target, sources: sources, tlsConf: conf, timeout: timeout, request: req}, nil
}

// dial opens connection id: TCP from the id's source address, the TLS
// handshake and the WebSocket upgrade, with Sec-WebSocket-Accept checked.
func (d *dialer) dial(id int) (*conn, error) {
	src := d.sources[id%len(d.sources)]
	nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: d.timeout}
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	nc, err := nd.DialContext(ctx, "tcp4", d.target.String())
	if err != nil {
		return nil, err
	}
	raw := nc.(*net.TCPConn)
	_ = raw.SetLinger(0) // reset on close: no TIME_WAIT piles up between runs
	c := &conn{id: id, raw: raw, tc: tls.Client(raw, d.tlsConf), cmds: make(chan func(*conn), 1), done: make(chan struct{})}
	fail := func(err error) (*conn, error) {
		_ = raw.Close()
		return nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(d.timeout))
	if err := c.tc.HandshakeContext(ctx); err != nil {
		return fail(fmt.Errorf("tls: %w", err))
	}
	var nonce [16]byte
	binary.LittleEndian.PutUint64(nonce[:], rand.Uint64())
	binary.LittleEndian.PutUint64(nonce[8:], rand.Uint64())
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req := append(append([]byte(nil), d.request...), "Sec-WebSocket-Key: "+key+"\r\n\r\n"...)
	if _, err := c.tc.Write(req); err != nil {
		return fail(fmt.Errorf("upgrade request: %w", err))
	}
	c.br = bufio.NewReaderSize(c.tc, 4096)
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return fail(fmt.Errorf("upgrade response: %w", err))
	}
	_ = resp.Body.Close()
	h := sha1.Sum([]byte(key + wsGUID))
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(h[:]) {
		return fail(fmt.Errorf("upgrade refused: %s", resp.Status))
	}
	_ = raw.SetDeadline(time.Time{})
	return c, nil
}

// run executes the work sent to the connection until cmds is closed, then
// closes it.
func (c *conn) run() {
	for f := range c.cmds {
		f(c)
	}
	_ = c.raw.Close()
	close(c.done)
}

// fill makes the payload of the connection's next message of size bytes:
// its sequence number and id, then bytes that differ per connection and
// per message, so that an echo of the wrong message or connection is
// caught.
func (c *conn) fill(size int) []byte {
	c.seq++
	if cap(c.sent) < size {
		c.sent = make([]byte, size)
	}
	p := c.sent[:size]
	var w [16]byte
	binary.LittleEndian.PutUint64(w[:], c.seq)
	binary.LittleEndian.PutUint64(w[8:], uint64(c.id))
	x := c.seq*0x9E3779B97F4A7C15 ^ uint64(c.id)
	for i := 0; i < len(p); {
		if i < 16 {
			i += copy(p[i:], w[i:])
			continue
		}
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], x)
		i += copy(p[i:], b[:])
	}
	return p
}

// writeFrame writes one masked frame.
func (c *conn) writeFrame(op ws.OpCode, payload []byte) error {
	n := len(payload)
	b := c.wbuf[:0]
	b = append(b, 0x80|byte(op))
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], rand.Uint32())
	b = append(b, mask[:]...)
	h := len(b)
	b = append(b, payload...)
	ws.Cipher(b[h:], mask, 0)
	c.wbuf = b
	_, err := c.tc.Write(b)
	return err
}

// readMessage reads the next data message, reassembling fragments and
// answering pings. The result is valid until the next call.
func (c *conn) readMessage() (ws.OpCode, []byte, error) {
	msg := c.rbuf[:0]
	var op ws.OpCode
	for {
		var hdr [14]byte
		if _, err := io.ReadFull(c.br, hdr[:2]); err != nil {
			return 0, nil, err
		}
		fin, fop := hdr[0]&0x80 != 0, ws.OpCode(hdr[0]&0x0F)
		if hdr[1]&0x80 != 0 {
			return 0, nil, errors.New("masked frame from the server")
		}
		n := uint64(hdr[1] & 0x7F)
		switch n {
		case 126:
			if _, err := io.ReadFull(c.br, hdr[2:4]); err != nil {
				return 0, nil, err
			}
			n = uint64(binary.BigEndian.Uint16(hdr[2:4]))
		case 127:
			if _, err := io.ReadFull(c.br, hdr[2:10]); err != nil {
				return 0, nil, err
			}
			n = binary.BigEndian.Uint64(hdr[2:10])
		}
		if n > 64<<20 {
			return 0, nil, fmt.Errorf("frame of %d bytes", n)
		}
		if fop.IsControl() {
			var p [125]byte
			if _, err := io.ReadFull(c.br, p[:n]); err != nil {
				return 0, nil, err
			}
			switch fop {
			case ws.OpPing:
				if err := c.writeFrame(ws.OpPong, p[:n]); err != nil {
					return 0, nil, err
				}
			case ws.OpClose:
				return 0, nil, errServerClosed
			}
			continue
		}
		if fop != ws.OpContinuation {
			op = fop
		}
		at := len(msg)
		msg = slices.Grow(msg, int(n))[:at+int(n)]
		if _, err := io.ReadFull(c.br, msg[at:]); err != nil {
			return 0, nil, err
		}
		if fin {
			c.rbuf = msg
			return op, msg, nil
		}
	}
}

// echo sends one binary message of size bytes and checks that the same
// bytes come back.
func (c *conn) echo(size int) error {
	p := c.fill(size)
	if err := c.writeFrame(ws.OpBinary, p); err != nil {
		return err
	}
	op, got, err := c.readMessage()
	if err != nil {
		return err
	}
	if op != ws.OpBinary || !bytes.Equal(got, p) {
		return errMismatch
	}
	return nil
}

var errMismatch = errors.New("echo differs from what was sent")
