package engine_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// A server that answers the client's close closes the TCP connection first
// (RFC 6455 §7.1.1), but only after everything it queued before the answer:
// here a 12 MiB echo of a message that came in one write with the close,
// to a client that reads nothing until the answer is queued, so that most
// of the echo is still in gnet's buffer (the kernel takes a few MiB) when
// the close is due. gnet's own close would write what the socket takes and
// drop the rest.
func TestCloseReplyWaitsForOutput(t *testing.T) {
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{})
	addr := srv.Addr().String()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.(*net.TCPConn).SetReadBuffer(64 << 10) // the kernel holds little on this side
	c, err := upgrade(raw, addr, "/")
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("0123456789abcdef"), 12<<20/16)
	b := codec.AppendMaskedFrame(nil, true, codec.OpBinary, 0, randomMask(), msg)
	b = codec.AppendMaskedFrame(b, true, codec.OpClose, 0, randomMask(), []byte{0x03, 0xe8})
	written := make(chan error, 1)
	go func() { _, err := raw.Write(b); written <- err }()
	waitFor(t, "the answer to the close", func() bool { return srv.Stats().ClosesByCode[codec.CloseNormal] == 1 })
	if f, err := c.read(readTimeout); err != nil || !bytes.Equal(f.data, msg) {
		t.Fatalf("echo: %d of %d bytes, %v", len(f.data), len(msg), err)
	}
	c.expectClose(t, codec.CloseNormal)
	c.expectEOF(t, readTimeout)
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	var ce *handler.CloseError
	if ev := h.waitClose(t); !errors.As(ev.err, &ce) || ce.Code != codec.CloseNormal || !ce.Remote {
		t.Errorf("OnClose %v", ev.err)
	}
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Errorf("after the close: %v", err)
	}
	h.check(t)
}
