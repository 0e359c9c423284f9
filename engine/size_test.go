package engine

import (
	"testing"
	"unsafe"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// TestConnSize guards the per-connection memory budget: an idle connection
// costs one wsConn (plus gnet's own state), so a field added to it must be
// paid for. 128 bytes is a Go allocator size class; the next is 144. State
// that few connections need belongs in connExtra.
func TestConnSize(t *testing.T) {
	if got := unsafe.Sizeof(wsConn{}); got > 128 {
		t.Errorf("wsConn is %d bytes, budget 128: move rarely used fields to connExtra", got)
	}
	if got := unsafe.Sizeof(codec.DecoderState{}); got > 32 {
		t.Errorf("codec.DecoderState is %d bytes, budget 32", got)
	}
}

// echoRecorder echoes and hands over each connection it opens.
type echoRecorder struct {
	handler.Base
	opened chan *wsConn
}

func (e *echoRecorder) OnOpen(c handler.Conn) { e.opened <- c.(*wsConn) }
func (e *echoRecorder) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	_ = c.WriteMessage(op, data)
}

// An ordinary connection (path "/", no extension, whole messages) must not
// allocate its connExtra nor keep an outbound buffer: that is what keeps an
// idle connection at one wsConn. A fragmented message then takes the
// connExtra path and still echoes whole.
func TestPlainConnStaysSmall(t *testing.T) {
	h := &echoRecorder{opened: make(chan *wsConn, 1)}
	srv := startLocal(t, h, Options{})
	c, br := upgradeLocal(t, srv.Addr().String())
	wc := <-h.opened

	mask := [4]byte{1, 2, 3, 4}
	echo := func(frames []byte, want []byte) {
		t.Helper()
		if _, err := c.Write(frames); err != nil {
			t.Fatal(err)
		}
		var dec codec.Decoder
		dec.Client = true
		var buf, got []byte
		for {
			b := make([]byte, 4096)
			n, err := br.Read(b)
			if err != nil {
				t.Fatal(err)
			}
			buf = append(buf, b[:n]...)
			for {
				m, ev, err := dec.Decode(buf)
				if err != nil {
					t.Fatal(err)
				}
				buf = buf[m:]
				if ev.Kind == codec.EventData {
					got = append(got, ev.Payload...)
					if ev.Final {
						if string(got) != string(want) {
							t.Fatalf("echo of %d bytes came back as %d bytes", len(want), len(got))
						}
						return
					}
				}
				if m == 0 || ev.Kind == codec.EventNone {
					break
				}
			}
		}
	}
	msg := make([]byte, 1024)
	for i := range msg {
		msg[i] = byte(i)
	}
	echo(codec.AppendMaskedFrame(nil, true, codec.OpBinary, 0, mask, msg), msg)
	wc.mu.Lock()
	out, ctx := wc.out, wc.aux
	wc.mu.Unlock()
	if ctx != nil {
		t.Error("a connection that never set a context holds a context box")
	}
	if x := wc.x.Load(); x != nil {
		t.Errorf("a plain connection allocated its connExtra: %+v", *x)
	}
	if out != nil {
		t.Errorf("a connection with nothing queued keeps an outbound buffer of %d bytes", cap(out.b))
	}

	frag := codec.AppendMaskedFrame(nil, false, codec.OpBinary, 0, mask, msg[:300])
	frag = codec.AppendMaskedFrame(frag, true, codec.OpContinuation, 0, mask, msg[300:])
	echo(frag, msg)
	if x := wc.x.Load(); x == nil {
		t.Error("a fragmented message was assembled without the connExtra")
	}
}

// The context is boxed on the first non-nil value: it still reads back what
// was set, nil included, from any goroutine.
func TestContextBox(t *testing.T) {
	wc := &wsConn{}
	if v := wc.Context(); v != nil {
		t.Fatalf("fresh connection: Context() = %v", v)
	}
	wc.SetContext(nil)
	if wc.aux != nil {
		t.Fatal("SetContext(nil) on a fresh connection allocated a box")
	}
	done := make(chan struct{})
	go func() {
		wc.SetContext("a")
		close(done)
	}()
	<-done
	if v := wc.Context(); v != "a" {
		t.Fatalf("Context() = %v, want a", v)
	}
	wc.SetContext(42)
	if v := wc.Context(); v != 42 {
		t.Fatalf("Context() = %v, want 42", v)
	}
	wc.SetContext(nil)
	if v := wc.Context(); v != nil {
		t.Fatalf("after SetContext(nil): Context() = %v", v)
	}
}
