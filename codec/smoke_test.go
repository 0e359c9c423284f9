package codec

import (
	"bytes"
	"testing"
)

func TestSmokeRoundTrip(t *testing.T) {
	mask := [4]byte{1, 2, 3, 4}
	var in []byte
	in = AppendMaskedFrame(in, false, OpText, 0, mask, []byte("hel"))
	in = AppendMaskedFrame(in, true, OpPing, 0, mask, []byte("p"))
	in = AppendMaskedFrame(in, true, OpContinuation, 0, mask, []byte("lo"))
	var d Decoder
	var got []byte
	var kinds []EventKind
	p := in
	for {
		n, ev, err := d.Decode(p)
		if err != nil {
			t.Fatal(err)
		}
		p = p[n:]
		if ev.Kind == EventNone {
			break
		}
		kinds = append(kinds, ev.Kind)
		if ev.Kind == EventData {
			got = append(got, ev.Payload...)
		}
	}
	if string(got) != "hello" || len(p) != 0 || len(kinds) != 3 {
		t.Fatalf("got %q rest %d kinds %v", got, len(p), kinds)
	}
	req := "GET /chat?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nXX"
	var s HeaderScanner
	n, err := s.Scan([]byte(req))
	if err != nil || n != len(req)-2 {
		t.Fatal(n, err)
	}
	var r Request
	if err := ParseRequest([]byte(req[:n]), &r); err != nil {
		t.Fatal(err)
	}
	resp := AppendAccept(nil, r.Key, "", nil, nil)
	if !bytes.Contains(resp, []byte("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")) || string(r.Path) != "/chat" || string(r.RawQuery) != "x=1" {
		t.Fatalf("%s %s %s", resp, r.Path, r.RawQuery)
	}
}
