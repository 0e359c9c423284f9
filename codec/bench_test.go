package codec

import (
	"bytes"
	"strings"
	"testing"
)

var benchSizes = []struct {
	name string
	n    int
}{{"64B", 64}, {"1KiB", 1 << 10}, {"16KiB", 16 << 10}, {"1MiB", 1 << 20}}

// decodeLoop decodes every frame in p and returns the payload bytes seen.
func decodeLoop(b *testing.B, d *Decoder, p []byte) int {
	total := 0
	for {
		n, ev, err := d.Decode(p)
		if err != nil {
			b.Fatal(err)
		}
		p = p[n:]
		if ev.Kind == EventNone {
			return total
		}
		total += len(ev.Payload)
	}
}

// BenchmarkDecodeBinary: header decode and unmask of one masked binary
// frame, the whole frame buffered. The decoder unmasks in place, so each
// iteration flips the buffer between masked and unmasked: the work is the
// same, and binary payloads need no validity.
func BenchmarkDecodeBinary(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			frame := AppendMaskedFrame(nil, true, OpBinary, 0, [4]byte{0xa1, 0xb2, 0xc3, 0xd4}, make([]byte, s.n))
			var d Decoder
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if decodeLoop(b, &d, frame) != s.n {
					b.Fatal("short")
				}
			}
		})
	}
}

// BenchmarkDecodeBinaryChunked: the same 1 MiB frame arriving in 16 KiB
// reads, as an event loop sees it.
func BenchmarkDecodeBinaryChunked(b *testing.B) {
	const n, chunk = 1 << 20, 16 << 10
	frame := AppendMaskedFrame(nil, true, OpBinary, 0, [4]byte{0xa1, 0xb2, 0xc3, 0xd4}, make([]byte, n))
	var d Decoder
	b.SetBytes(n)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got := 0
		for off := 0; off < len(frame); {
			end := min(off+chunk, len(frame))
			for {
				k, ev, err := d.Decode(frame[off:end])
				if err != nil {
					b.Fatal(err)
				}
				off += k
				got += len(ev.Payload)
				if ev.Kind == EventNone {
					break
				}
			}
		}
		if got != n {
			b.Fatal("short")
		}
	}
}

// BenchmarkDecodeText: decode, unmask and validate UTF-8 of one masked
// text frame. Unmasking in place destroys the input, so each iteration
// first copies the masked frame back (a memmove, included in the time).
func BenchmarkDecodeText(b *testing.B) {
	for _, kind := range []struct{ name, unit string }{{"ASCII", "abcdefgh"}, {"multibyte", "κόσμε€😀"}} {
		for _, n := range []int{1 << 10, 16 << 10} {
			name := kind.name + "/" + map[int]string{1 << 10: "1KiB", 16 << 10: "16KiB"}[n]
			b.Run(name, func(b *testing.B) {
				text := []byte(strings.Repeat(kind.unit, n/len(kind.unit)+1))
				// Cut to n bytes on a character boundary.
				for n > 0 && text[n]&0xC0 == 0x80 {
					n--
				}
				text = text[:n]
				orig := AppendMaskedFrame(nil, true, OpText, 0, [4]byte{0xa1, 0xb2, 0xc3, 0xd4}, text)
				buf := make([]byte, len(orig))
				var d Decoder
				b.SetBytes(int64(n))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					copy(buf, orig)
					if decodeLoop(b, &d, buf) != n {
						b.Fatal("short")
					}
				}
			})
		}
	}
}

// BenchmarkUTF8Validator: validation alone, for comparison with the
// decode figures.
func BenchmarkUTF8Validator(b *testing.B) {
	for _, kind := range []struct{ name, unit string }{{"ASCII", "abcdefgh"}, {"multibyte", "κόσμε€😀"}} {
		text := []byte(strings.Repeat(kind.unit, (16<<10)/len(kind.unit)))
		b.Run(kind.name+"/16KiB", func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				var v UTF8Validator
				if !v.Write(text) || !v.Complete() {
					b.Fatal("invalid")
				}
			}
		})
	}
}

// BenchmarkEncode: AppendFrame (server frame, header + payload copy) into
// a reused buffer.
func BenchmarkEncode(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			payload := bytes.Repeat([]byte{'e'}, s.n)
			dst := make([]byte, 0, s.n+MaxHeaderSize)
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				dst = AppendFrame(dst[:0], true, OpBinary, 0, payload)
			}
		})
	}
}

// BenchmarkEncodeHeader: the header alone, as the engine writes it before
// a payload it sends with writev.
func BenchmarkEncodeHeader(b *testing.B) {
	dst := make([]byte, 0, MaxHeaderSize)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		dst = AppendFrameHeader(dst[:0], i&1 == 0, OpBinary, 0, 70000+i&0xFFFF)
		headerSink += int(dst[len(dst)-1])
	}
}

// headerSink keeps the compiler from dropping the encoded headers.
var headerSink int

// BenchmarkHandshake: HeaderScanner.Scan + ParseRequest + AppendAccept of
// the RFC 6455 §1.2 request.
func BenchmarkHandshake(b *testing.B) {
	req := []byte(sampleRequest)
	dst := make([]byte, 0, 256)
	var r Request
	b.SetBytes(int64(len(req)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		var s HeaderScanner
		n, err := s.Scan(req)
		if err != nil || n != len(req) {
			b.Fatal(n, err)
		}
		if err := ParseRequest(req[:n], &r); err != nil {
			b.Fatal(err)
		}
		dst = AppendAccept(dst[:0], r.Key, "", nil, nil)
	}
}

// browserRequest is an upgrade request as Chromium sends it, with the
// header lines a browser adds (cookies, user agent, languages, the
// permessage-deflate offer): the size a parser meets in production.
const browserRequest = "GET /ws?room=lobby&name=ann HTTP/1.1\r\n" +
	"Host: chat.example.com\r\n" +
	"Connection: Upgrade\r\n" +
	"Pragma: no-cache\r\n" +
	"Cache-Control: no-cache\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n" +
	"Upgrade: websocket\r\n" +
	"Origin: https://chat.example.com\r\n" +
	"Sec-WebSocket-Version: 13\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n" +
	"Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" +
	"\r\n"

// BenchmarkParseRequest: ParseRequest alone (no scan, no SHA-1), on the
// RFC 6455 §1.2 sample and on a browser's request: the cost of the
// parser's checks.
func BenchmarkParseRequest(b *testing.B) {
	for _, c := range []struct{ name, req string }{{"RFC6455", sampleRequest}, {"Browser", browserRequest}} {
		b.Run(c.name, func(b *testing.B) {
			req := []byte(c.req)
			var r Request
			b.SetBytes(int64(len(req)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := ParseRequest(req, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
