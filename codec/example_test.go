package codec_test

import (
	"fmt"
	"strings"

	"github.com/wsloop/wsloop/codec"
)

// A server holding many connections keeps a DecoderState in each and the
// limit once: here a 1 KiB cap, shared by every connection.
func ExampleDecoderState() {
	const maxMessage = 1 << 10
	conns := make([]codec.DecoderState, 2) // 32 bytes each

	mask := [4]byte{1, 2, 3, 4}
	small := codec.AppendMaskedFrame(nil, true, codec.OpBinary, 0, mask, make([]byte, 100))
	large := codec.AppendMaskedFrame(nil, true, codec.OpBinary, 0, mask, make([]byte, 2000))

	_, ev, err := conns[0].Decode(small, maxMessage)
	fmt.Println(len(ev.Payload), err)
	_, _, err = conns[1].Decode(large, maxMessage)
	fmt.Println(err.(*codec.ProtocolError).Code)
	// Output:
	// 100 <nil>
	// 1009
}

// A decoder fed like an event loop feeds it: the bytes that have arrived
// so far, consumed as far as they go; what is left is offered again with
// whatever arrives next.
func ExampleDecoder() {
	// A client sends "Hel" and "lo" as two fragments with a ping between
	// them; the bytes arrive in two reads cut in the middle of a header.
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	var wire []byte
	wire = codec.AppendMaskedFrame(wire, false, codec.OpText, 0, mask, []byte("Hel"))
	wire = codec.AppendMaskedFrame(wire, true, codec.OpPing, 0, mask, []byte("hi"))
	wire = codec.AppendMaskedFrame(wire, true, codec.OpContinuation, 0, mask, []byte("lo"))
	reads := [][]byte{wire[:12], wire[12:]}

	var d codec.Decoder
	var buf, msg []byte
	for _, r := range reads {
		buf = append(buf, r...)
		for {
			n, ev, err := d.Decode(buf)
			if err != nil {
				fmt.Println("fail the connection with", err.(*codec.ProtocolError).Code)
				return
			}
			switch ev.Kind {
			case codec.EventData:
				msg = append(msg, ev.Payload...) // Payload is valid until buf is reused
				if ev.Final {
					fmt.Printf("%v message %q\n", ev.Op, msg)
				}
			case codec.EventControl:
				fmt.Printf("%v %q\n", ev.Op, ev.Payload)
			}
			buf = buf[n:]
			if ev.Kind == codec.EventNone {
				break
			}
		}
		buf = append([]byte(nil), buf...) // keep the unconsumed tail
	}
	// Output:
	// ping "hi"
	// text message "Hello"
}

// Finding the end of a request header that arrives in pieces, then
// answering it.
func ExampleHeaderScanner() {
	req := "GET /chat?room=go HTTP/1.1\r\n" +
		"Host: example.com\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: keep-alive, Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Sec-WebSocket-Version: 13\r\n" +
		"\r\n" +
		"\x81\x80" // the start of a frame the client sent right away

	var s codec.HeaderScanner // default cap: 8 KiB
	var buf []byte
	for _, piece := range []string{req[:40], req[40:]} {
		buf = append(buf, piece...)
		n, err := s.Scan(buf)
		if err != nil {
			fmt.Println(err)
			return
		}
		if n == 0 {
			fmt.Println("incomplete, wait for more")
			continue
		}
		var r codec.Request
		if err := codec.ParseRequest(buf[:n], &r); err != nil {
			fmt.Printf("%s", codec.AppendReject(nil, err.(*codec.HandshakeError)))
			return
		}
		fmt.Printf("path %s, query %s, %d bytes after the header\n", r.Path, r.RawQuery, len(buf)-n)
		resp := codec.AppendAccept(nil, r.Key, "", nil, nil)
		fmt.Print(strings.ReplaceAll(string(resp), "\r\n", "\n")) // CRLF shown as LF
	}
	// Output:
	// incomplete, wait for more
	// path /chat, query room=go, 2 bytes after the header
	// HTTP/1.1 101 Switching Protocols
	// Upgrade: websocket
	// Connection: Upgrade
	// Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
}

// Encoding server frames into a reused buffer, without allocating.
func ExampleAppendFrame() {
	buf := make([]byte, 0, 64)
	buf = codec.AppendFrame(buf[:0], true, codec.OpText, 0, []byte("Hello"))
	fmt.Printf("% x\n", buf)
	buf = codec.AppendFrame(buf[:0], true, codec.OpBinary, 0, make([]byte, 126))
	fmt.Printf("% x (+126 payload bytes)\n", buf[:4])
	buf = codec.AppendCloseFrame(buf[:0], codec.CloseNormal, "bye")
	fmt.Printf("% x\n", buf)
	// Output:
	// 81 05 48 65 6c 6c 6f
	// 82 7e 00 7e (+126 payload bytes)
	// 88 05 03 e8 62 79 65
}
