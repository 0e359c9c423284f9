package handoff

import (
	"errors"
	"testing"
)

// Any 16 bytes either parse as a header within the limits or are refused;
// a header written by encodeHeader always parses back, checksum included.
func FuzzHeader(f *testing.F) {
	var h [headerSize]byte
	encodeHeader(&h, msgBatch, 3, 9, []byte("abc"))
	f.Add(h[:], []byte("abc"))
	f.Add(make([]byte, headerSize), []byte(nil))
	f.Fuzz(func(t *testing.T, b []byte, payload []byte) {
		if len(b) >= headerSize {
			if hd, err := decodeHeader(b[:headerSize]); err == nil {
				if hd.nfds > MaxFDs || hd.length > MaxPayload || hd.typ < msgHello || hd.typ > msgCommitAck {
					t.Fatalf("accepted %+v", hd)
				}
			}
		}
		typ := msgHello + uint8(len(b))%msgCommitAck
		var e [headerSize]byte
		encodeHeader(&e, typ, len(payload)%(MaxFDs+1), uint32(len(b)), payload)
		hd, err := decodeHeader(e[:])
		if err != nil || hd.typ != typ || int(hd.length) != len(payload) || checksum(e[:], payload) != hd.crc {
			t.Fatalf("round trip: %+v, %v", hd, err)
		}
		if err := checkHello(b, 1); err == nil && string(b) != string(hello(1)) {
			t.Fatalf("accepted %q as a HELLO", b)
		}
	})
}

func TestHello(t *testing.T) {
	if err := checkHello(hello(3), 3); err != nil {
		t.Fatal(err)
	}
	var ve *VersionError
	if err := checkHello(hello(3), 4); !errors.As(err, &ve) || ve.What != "state format" || ve.Ours != 4 || ve.Theirs != 3 {
		t.Fatalf("another state version: %v", err)
	}
	if err := checkHello([]byte("GET / HTTP/1.1\r\n\r\n"), 3); !errors.As(err, &ve) || !ve.NotAnEndpoint {
		t.Fatalf("not a handoff peer: %v", err)
	}
}
