package engine

import (
	"bytes"
	"reflect"
	"testing"
)

func sampleRecords() []*connRecord {
	return []*connRecord{
		{id: 1, path: "/"},
		{id: 1 << 63, flags: recClient | recPongWait | recDeflate | recServerTakeover | recClientTakeover,
			path: "/ws", query: "room=a&name=b", sub: "chat", maxMsg: 1 << 20, deflLimit: 4096,
			sent: []byte("sent window"), hist: bytes.Repeat([]byte("h"), 32<<10),
			sinceRead: 1500, sincePing: 12, msgAge: 3, in: []byte{0x81, 0x85}, out: []byte{0x81, 0x01, 'x'}, app: []byte(`{"room":"a"}`)},
		{id: 7, flags: recDeflate, deflBits: 9, path: "/x"},
	}
}

// A batch decodes to exactly what was encoded.
func TestHandoffRecordsRoundTrip(t *testing.T) {
	recs := sampleRecords()
	got, err := decodeBatch(appendBatch(nil, recs), len(recs))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, recs) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, recs)
	}
	if _, err := decodeBatch(appendBatch(nil, recs), len(recs)+1); err == nil {
		t.Error("a batch with fewer records than descriptors was accepted")
	}
	ls := []listenerRecord{{"", "tcp", "127.0.0.1:80"}, {"http", "unix", "/run/x.sock"}}
	gl, err := decodeListeners(appendListeners(nil, ls), 2)
	if err != nil || !reflect.DeepEqual(gl, ls) {
		t.Fatalf("listeners round trip: %+v, %v", gl, err)
	}
}

// Whatever the bytes, the decoders either refuse them with an error or
// return records within every limit, and what they accept encodes back to
// the same bytes: garbage never panics, never allocates past its own
// length, never yields a record the engine could not restore.
func FuzzHandoffRecords(f *testing.F) {
	f.Add(appendBatch(nil, sampleRecords()), 3)
	f.Add(appendBatch(nil, sampleRecords()[:1]), 1)
	f.Add(appendListeners(nil, []listenerRecord{{"", "tcp", "127.0.0.1:80"}}), 1)
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 1)
	f.Fuzz(func(t *testing.T, p []byte, n int) {
		n &= 0xff
		if recs, err := decodeBatch(p, n); err == nil {
			if len(recs) != n {
				t.Fatalf("%d records for %d descriptors", len(recs), n)
			}
			for _, r := range recs {
				if r.path == "" || r.path[0] != '/' || r.maxMsg < 0 || int(r.deflBits) >= len(sharedDeflate) ||
					len(r.sent) > 32<<10 || len(r.hist) > 32<<10 || len(r.in)+len(r.out)+len(r.app) > maxRecordBytes ||
					r.flags&^recAllFlags != 0 {
					t.Fatalf("accepted a record out of bounds: %+v", r)
				}
			}
			if again := appendBatch(nil, recs); !bytes.Equal(again, p) {
				// Varints have one canonical form only when minimal;
				// accept a different encoding only if it decodes the
				// same.
				back, err := decodeBatch(again, n)
				if err != nil || !reflect.DeepEqual(back, recs) {
					t.Fatalf("re-encoding changed the records: %v", err)
				}
			}
		}
		if ls, err := decodeListeners(p, n); err == nil && len(ls) != n {
			t.Fatalf("%d listeners for %d descriptors", len(ls), n)
		}
	})
}
