package bench

import "testing"

// BenchmarkDecodeWsloop is the wsloop side of the frame-decode comparison:
// decode maskedStream(size, framesPerStream(size)) with codec.Decoder the way
// the engine does (whole stream as one []byte, payloads unmasked in place)
// and call b.SetBytes(len(stream)) like BenchmarkDecodeGobwasReader.
// Placeholder until the codec's decoding API is settled.
func BenchmarkDecodeWsloop(b *testing.B) {
	b.Skip("wsloop codec side of the comparison not written yet")
}
