// Package deflatecmp compares permessage-deflate (RFC 7692) between wsloop
// and lxzan/gws: each runs as an echo server in this process with
// compression on and no context takeover (the setting both recommend for
// many connections), and the same client (gorilla/websocket with
// EnableCompression, which speaks no context takeover) sends compressible
// JSON and checks every echo. Client work is identical for both servers, so
// the difference in ns/op is the servers' difference.
//
//	go test -run=^$ -bench=. -benchmem -count=5 ./deflatecmp
package deflatecmp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/lxzan/gws"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// payload returns n bytes of JSON-like text: compressible, as chat and
// dashboard traffic is, but not a single repeated byte.
func payload(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"id":%d,"user":"user-%d","text":"message number %d","ts":%d},`, i, i%97, i*7, 1700000000000+i)
	}
	return b.Bytes()[:n]
}

type wsloopEcho struct{ handler.Base }

func (wsloopEcho) OnMessage(c handler.Conn, op handler.Op, data []byte) { _ = c.WriteMessage(op, data) }

// The servers start once per process and live until it exits: gws's
// RunListener keeps retrying Accept on a closed listener (a busy loop that
// would slow every later benchmark), so neither is ever stopped.
var (
	wsloopOnce, gwsOnce sync.Once
	wsloopAddr, gwsAddr string
)

func startWsloop(tb testing.TB) string {
	wsloopOnce.Do(func() {
		srv := engine.New(wsloopEcho{}, engine.Options{
			Addr:    "127.0.0.1:0",
			Deflate: engine.Deflate{Enabled: true, Level: 1, Threshold: 128},
			Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err := srv.Start(context.Background()); err != nil {
			tb.Fatal(err)
		}
		wsloopAddr = srv.Addr().String()
	})
	return wsloopAddr
}

type gwsEcho struct{ gws.BuiltinEventHandler }

func (gwsEcho) OnPing(c *gws.Conn, p []byte) { _ = c.WritePong(p) }
func (gwsEcho) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	_ = c.WriteMessage(m.Opcode, m.Bytes())
}

// quiet drops gws's log lines so they do not interleave with the results.
type quiet struct{}

func (quiet) Error(...any) {}

func startGWS(tb testing.TB) string {
	gwsOnce.Do(func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		srv := gws.NewServer(gwsEcho{}, &gws.ServerOption{
			PermessageDeflate: gws.PermessageDeflate{Enabled: true, Level: 1, Threshold: 128},
			Logger:            quiet{},
		})
		go func() { _ = srv.RunListener(ln) }()
		gwsAddr = ln.Addr().String()
	})
	return gwsAddr
}

func dial(tb testing.TB, addr string) *websocket.Conn {
	d := websocket.Dialer{EnableCompression: true, HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial("ws://"+addr+"/", http.Header{})
	if err != nil {
		tb.Fatal(err)
	}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
		tb.Fatalf("permessage-deflate not negotiated with %s: %q", addr, ext)
	}
	return c
}

var servers = []struct {
	name  string
	start func(testing.TB) string
}{{"wsloop", startWsloop}, {"gws", startGWS}}

// TestDeflateEcho checks that both servers negotiate and echo compressed
// messages correctly, so the benchmark compares working setups.
func TestDeflateEcho(t *testing.T) {
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			c := dial(t, s.start(t))
			defer c.Close()
			for _, n := range []int{10, 1 << 10, 64 << 10} {
				p := payload(n)
				if err := c.WriteMessage(websocket.TextMessage, p); err != nil {
					t.Fatal(err)
				}
				op, got, err := c.ReadMessage()
				if err != nil || op != websocket.TextMessage || !bytes.Equal(got, p) {
					t.Fatalf("%d bytes: op %d err %v equal %v", n, op, err, bytes.Equal(got, p))
				}
			}
		})
	}
}

func BenchmarkDeflateEcho(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		for _, s := range servers {
			b.Run(fmt.Sprintf("%s/%d", s.name, size), func(b *testing.B) {
				c := dial(b, s.start(b))
				defer c.Close()
				p := payload(size)
				c.EnableWriteCompression(true)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if err := c.WriteMessage(websocket.TextMessage, p); err != nil {
						b.Fatal(err)
					}
					if _, got, err := c.ReadMessage(); err != nil || len(got) != size {
						b.Fatalf("echo: %v, %d bytes", err, len(got))
					}
				}
			})
		}
	}
}
