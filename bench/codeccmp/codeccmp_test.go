// Package codeccmp compares, in one run, reading the same masked client
// frames through gobwas/ws's io.Reader based wsutil and through wsloop's
// streaming codec.Decoder, so that the ratio between them can be reported.
//
//	cd bench && go test -run=^$ -bench=. -benchmem -count=5 ./codeccmp
package codeccmp

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/wsloop/wsloop/codec"
)

var sizes = []struct {
	name string
	n    int
}{{"64B", 64}, {"1KiB", 1 << 10}, {"16KiB", 16 << 10}, {"1MiB", 1 << 20}}

var mask = [4]byte{0xa1, 0xb2, 0xc3, 0xd4}

// frames returns one masked binary frame of n payload bytes, as a client
// sends it.
func frames(op codec.OpCode, payload []byte) []byte {
	return codec.AppendMaskedFrame(nil, true, op, 0, mask, payload)
}

// BenchmarkBinary reads one masked binary frame per iteration:
//   - wsloop: codec.Decoder over the buffered bytes (unmasks in place, the
//     payload is a sub-slice of the input: no copy);
//   - wsutil-reader: wsutil.Reader.NextFrame, then io.ReadFull of the
//     payload into a reused buffer (unmasks while copying);
//   - wsutil-readclientdata: wsutil.ReadClientData, the one-call helper
//     (reads the whole message into a fresh slice).
func BenchmarkBinary(b *testing.B) {
	for _, s := range sizes {
		in := frames(codec.OpBinary, make([]byte, s.n))
		b.Run("wsloop/"+s.name, func(b *testing.B) { benchWsloop(b, in, s.n) })
		b.Run("wsutil-reader/"+s.name, func(b *testing.B) { benchWsutilReader(b, in, s.n, false) })
		b.Run("wsutil-readclientdata/"+s.name, func(b *testing.B) { benchReadClientData(b, in, s.n) })
	}
}

// BenchmarkText is the same for a 16 KiB ASCII text frame with UTF-8
// validation on both sides (wsutil.Reader.CheckUTF8).
func BenchmarkText(b *testing.B) {
	const n = 16 << 10
	text := []byte(strings.Repeat("abcdefgh", n/8))
	orig := frames(codec.OpText, text)
	b.Run("wsloop/16KiB", func(b *testing.B) {
		// Unmasking in place destroys the input: restore it each time
		// (a memmove, counted).
		buf := make([]byte, len(orig))
		var d codec.Decoder
		b.SetBytes(n)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			copy(buf, orig)
			if got := decode(b, &d, buf); got != n {
				b.Fatal("short", got)
			}
		}
	})
	b.Run("wsutil-reader/16KiB", func(b *testing.B) { benchWsutilReader(b, orig, n, true) })
}

func decode(b *testing.B, d *codec.Decoder, p []byte) int {
	total := 0
	for {
		k, ev, err := d.Decode(p)
		if err != nil {
			b.Fatal(err)
		}
		p = p[k:]
		if ev.Kind == codec.EventNone {
			return total
		}
		total += len(ev.Payload)
	}
}

func benchWsloop(b *testing.B, in []byte, n int) {
	// Binary payloads need no validity, so decoding the same buffer again
	// (which flips it between masked and unmasked) does the same work.
	var d codec.Decoder
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if got := decode(b, &d, in); got != n {
			b.Fatal("short", got)
		}
	}
}

func benchWsutilReader(b *testing.B, in []byte, n int, checkUTF8 bool) {
	src := bytes.NewReader(in)
	r := &wsutil.Reader{Source: src, State: ws.StateServerSide, CheckUTF8: checkUTF8}
	buf := make([]byte, n)
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		src.Reset(in)
		hdr, err := r.NextFrame()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(r, buf[:hdr.Length]); err != nil {
			b.Fatal(err)
		}
		if int(hdr.Length) != n {
			b.Fatal("short")
		}
	}
}

// rw gives ReadClientData the io.ReadWriter it wants (it writes replies to
// control frames; there are none here).
type rw struct{ *bytes.Reader }

func (rw) Write(p []byte) (int, error) { return len(p), nil }

func benchReadClientData(b *testing.B, in []byte, n int) {
	src := bytes.NewReader(in)
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		src.Reset(in)
		data, _, err := wsutil.ReadClientData(rw{src})
		if err != nil {
			b.Fatal(err)
		}
		if len(data) != n {
			b.Fatal("short")
		}
	}
}

// TestSameBytes checks that both sides decode the frames to the same
// payload, so the benchmarks compare equal work.
func TestSameBytes(t *testing.T) {
	payload := make([]byte, 70000)
	for i := range payload {
		payload[i] = byte(i * 13)
	}
	in := frames(codec.OpBinary, payload)
	data, op, err := wsutil.ReadClientData(rw{bytes.NewReader(in)})
	if err != nil || op != ws.OpBinary || !bytes.Equal(data, payload) {
		t.Fatalf("wsutil: %v %v equal=%v", err, op, bytes.Equal(data, payload))
	}
	var d codec.Decoder
	cp := append([]byte(nil), in...)
	n, ev, err := d.Decode(cp)
	if err != nil || n != len(cp) || ev.Op != codec.OpBinary || !bytes.Equal(ev.Payload, payload) {
		t.Fatalf("wsloop: %v n=%d equal=%v", err, n, bytes.Equal(ev.Payload, payload))
	}
}
