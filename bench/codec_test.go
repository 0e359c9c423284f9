package bench

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Frame decode throughput: the same stream of masked client frames is read
// by each decoder and every payload is unmasked into a reused buffer.
// b.SetBytes counts the wire bytes, so MB/s compares directly. The wsloop
// codec's side of the comparison goes into codec_wsloop_test.go with the
// same maskedStream input.

var frameSizes = []int{64, 1024, 16384}

// framesPerStream keeps one stream around 1 MiB or 4096 frames.
func framesPerStream(size int) int { return max(16, min(4096, (1<<20)/size)) }

// maskedStream returns count masked binary frames of size payload bytes each,
// with varying mask keys, as a client would send them.
func maskedStream(size, count int) []byte {
	var out []byte
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	for i := 0; i < count; i++ {
		key := uint32(0x9E3779B9 * uint32(i+1))
		out = append(out, 0x82)
		switch {
		case size <= 125:
			out = append(out, 0x80|byte(size))
		case size <= 0xFFFF:
			out = append(out, 0x80|126, byte(size>>8), byte(size))
		default:
			out = append(out, 0x80|127)
			out = binary.BigEndian.AppendUint64(out, uint64(size))
		}
		out = binary.LittleEndian.AppendUint32(out, key)
		start := len(out)
		out = append(out, payload...)
		var k [4]byte
		binary.LittleEndian.PutUint32(k[:], key)
		for j := start; j < len(out); j++ {
			out[j] ^= k[(j-start)&3]
		}
	}
	return out
}

func TestMaskedStreamGobwas(t *testing.T) {
	for _, size := range frameSizes {
		stream := maskedStream(size, 8)
		r := wsutil.Reader{Source: bytes.NewReader(stream), State: ws.StateServerSide}
		for i := 0; i < 8; i++ {
			hdr, err := r.NextFrame()
			if err != nil {
				t.Fatal(err)
			}
			if hdr.OpCode != ws.OpBinary || hdr.Length != int64(size) {
				t.Fatalf("frame %d: %+v", i, hdr)
			}
			p, err := io.ReadAll(&r)
			if err != nil {
				t.Fatal(err)
			}
			for j, c := range p {
				if c != byte('a'+j%26) {
					t.Fatalf("size %d frame %d byte %d = %q", size, i, j, c)
				}
			}
		}
	}
}

// BenchmarkDecodeGobwasReader reads the stream with gobwas/ws's
// wsutil.Reader (server side, so it checks and removes the mask).
func BenchmarkDecodeGobwasReader(b *testing.B) {
	for _, size := range frameSizes {
		n := framesPerStream(size)
		stream := maskedStream(size, n)
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			buf := make([]byte, size)
			src := bytes.NewReader(stream)
			r := wsutil.Reader{Source: src, State: ws.StateServerSide}
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(stream)
				for i := 0; i < n; i++ {
					if _, err := r.NextFrame(); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(&r, buf); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
