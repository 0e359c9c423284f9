package engine_test

import (
	"bufio"
	"encoding/binary"
	"io"
	"testing"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
)

// BenchmarkBroadcastFanout measures a fan-out: each op broadcasts one
// 128-byte frame to 100 connections whose clients read it, and with
// "+write" also sends each connection a message of its own with
// WriteMessage right after (the pattern that waits behind the broadcast,
// write.go's fence). The op ends when every client has read what it was
// sent, so it measures the whole path, not the queueing alone.
//
//	go test -run=^$ -bench=BroadcastFanout -benchmem ./engine
func BenchmarkBroadcastFanout(b *testing.B) {
	for _, mode := range []string{"broadcast", "broadcast+write"} {
		b.Run(mode, func(b *testing.B) {
			const conns = 100
			h := &openRecorder{opened: make(chan handler.Conn, conns)}
			srv := enginetest.Start(b, h, engine.Options{EventLoops: 2, Logger: quietLogger()})
			per := 1
			if mode == "broadcast+write" {
				per = 2
			}
			done := make(chan struct{}, conns)
			list := make([]handler.Conn, 0, conns)
			for range conns {
				c := dialUpgraded(b, srv.Addr().String())
				b.Cleanup(func() { c.Close() })
				list = append(list, <-h.opened)
				go func() {
					br := bufio.NewReaderSize(c, 64<<10)
					var hdr [4]byte
					for {
						for range per {
							if _, err := io.ReadFull(br, hdr[:]); err != nil {
								return
							}
							n := int(binary.BigEndian.Uint16(hdr[2:]))
							if _, err := br.Discard(n); err != nil {
								return
							}
						}
						done <- struct{}{}
					}
				}()
			}
			payload := make([]byte, 128) // a 2+2-byte header: length 126 form
			f := codec.NewPreparedFrame(codec.OpBinary, payload)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				srv.Broadcast(list, f)
				if per == 2 {
					for _, c := range list {
						_ = c.WriteMessage(handler.Binary, payload)
					}
				}
				for range conns {
					<-done
				}
			}
		})
	}
}

// openRecorder hands each connection to the test as it opens.
type openRecorder struct {
	handler.Base
	opened chan handler.Conn
}

func (o *openRecorder) OnOpen(c handler.Conn) { o.opened <- c }
