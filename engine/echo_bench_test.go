package engine_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
)

type benchEcho struct{ handler.Base }

func (benchEcho) OnMessage(c handler.Conn, op handler.Op, data []byte) { _ = c.WriteMessage(op, data) }

// dialUpgraded opens a raw client connection and completes the handshake.
func dialUpgraded(tb testing.TB, addr string) net.Conn {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	req := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		tb.Fatal(err)
	}
	var resp []byte
	buf := make([]byte, 1024)
	for !strings.Contains(string(resp), "\r\n\r\n") {
		n, err := c.Read(buf)
		if err != nil {
			tb.Fatal(err)
		}
		resp = append(resp, buf[:n]...)
	}
	if !strings.HasPrefix(string(resp), "HTTP/1.1 101") {
		tb.Fatalf("handshake: %q", resp)
	}
	return c
}

func startBenchServer(tb testing.TB, loops int) string {
	tb.Helper()
	srv := enginetest.Start(tb, benchEcho{}, engine.Options{EventLoops: loops, Logger: quietLogger()})
	return srv.Addr().String()
}

// BenchmarkEngineEcho measures the steady-state echo path over loopback:
// one client sends a masked binary frame and reads the echo, closed loop.
// allocs/op counts the whole process (server loop and client), so it shows
// whether the engine's message path allocates.
//
//	go test -run=^$ -bench=EngineEcho -benchmem ./engine
func BenchmarkEngineEcho(b *testing.B) {
	for _, size := range []int{64, 1 << 10, 16 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			addr := startBenchServer(b, 1)
			c := dialUpgraded(b, addr)
			defer c.Close()
			payload := make([]byte, size)
			for i := range payload {
				payload[i] = byte(i)
			}
			frame := codec.AppendMaskedFrame(nil, true, codec.OpBinary, 0, [4]byte{1, 2, 3, 4}, payload)
			reply := make([]byte, len(codec.AppendFrameHeader(nil, true, codec.OpBinary, 0, size))+size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(frame); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, reply); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
