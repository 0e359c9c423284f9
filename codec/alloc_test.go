package codec

import (
	"bytes"
	"testing"
	"unsafe"
)

// The decoder and the encoders work in the caller's buffers: steady state
// allocates nothing (the "0 allocs/op").

func TestAllocsDecode(t *testing.T) {
	mask := [4]byte{1, 2, 3, 4}
	var orig []byte
	orig = AppendMaskedFrame(orig, false, OpText, 0, mask, []byte("héllo "))
	orig = AppendMaskedFrame(orig, true, OpPing, 0, mask, []byte("ping"))
	orig = AppendMaskedFrame(orig, true, OpContinuation, 0, mask, bytes.Repeat([]byte("wörld"), 100))
	orig = AppendMaskedFrame(orig, true, OpBinary, 0, mask, make([]byte, 70000))
	orig = AppendMaskedFrame(orig, true, OpClose, 0, mask, []byte{0x03, 0xE8, 'o', 'k'})
	buf := make([]byte, len(orig))
	var d Decoder
	events := 0
	allocs := testing.AllocsPerRun(100, func() {
		copy(buf, orig) // the decoder unmasks in place
		d.Reset()
		p := buf
		events = 0
		for {
			n, ev, err := d.Decode(p)
			if err != nil {
				t.Fatal(err)
			}
			p = p[n:]
			if ev.Kind == EventNone {
				break
			}
			events++
		}
	})
	if events != 5 {
		t.Fatalf("%d events", events)
	}
	if allocs != 0 {
		t.Fatalf("Decode: %v allocs per run", allocs)
	}
}

func TestAllocsEncode(t *testing.T) {
	payload := make([]byte, 70000)
	dst := make([]byte, 0, 80000)
	for name, f := range map[string]func(){
		"AppendFrame":        func() { dst = AppendFrame(dst[:0], true, OpBinary, 0, payload) },
		"AppendFrame small":  func() { dst = AppendFrame(dst[:0], true, OpText, 0, payload[:100]) },
		"AppendMaskedFrame":  func() { dst = AppendMaskedFrame(dst[:0], true, OpBinary, 0, [4]byte{1, 2, 3, 4}, payload) },
		"AppendCloseFrame":   func() { dst = AppendCloseFrame(dst[:0], CloseGoingAway, "server going down") },
		"AppendClosePayload": func() { dst = AppendClosePayload(dst[:0], CloseNormal, "bye") },
		"UTF8Validator": func() {
			var v UTF8Validator
			v.Write([]byte("κόσμε"))
		},
	} {
		if a := testing.AllocsPerRun(100, f); a != 0 {
			t.Errorf("%s: %v allocs per run", name, a)
		}
	}
}

func TestAllocsHandshake(t *testing.T) {
	req := []byte(sampleRequest)
	abs := []byte("GET http://h HTTP/1.1\r\nHost: h\r\n\r\n")
	dst := make([]byte, 0, 512)
	var r Request
	var s HeaderScanner
	for name, f := range map[string]func(){
		"Scan": func() {
			s.Reset()
			if n, err := s.Scan(req); n != len(req) || err != nil {
				t.Fatal(n, err)
			}
		},
		"ParseRequest": func() {
			if err := ParseRequest(req, &r); err != nil {
				t.Fatal(err)
			}
		},
		"ParseRequest absolute form": func() {
			if err := ParseRequest(abs, &r); err != ErrNotWebSocket || string(r.Path) != "/" {
				t.Fatal(err)
			}
		},
		"AppendAccept": func() { dst = AppendAccept(dst[:0], r.Key, "", nil, nil) },
		"AppendAccept with protocol and extensions": func() {
			dst = AppendAccept(dst[:0], r.Key, "chat", []byte("permessage-deflate"), nil)
		},
	} {
		if a := testing.AllocsPerRun(100, f); a != 0 {
			t.Errorf("%s: %v allocs per run", name, a)
		}
	}
}

// TestDecoderSize: the per-connection decoder state stays small (it is
// kept for every idle connection) and holds no buffer.
func TestDecoderSize(t *testing.T) {
	if s := unsafe.Sizeof(Decoder{}); s > 64 {
		t.Fatalf("Decoder is %d bytes", s)
	}
}
