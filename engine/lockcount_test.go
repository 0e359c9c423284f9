//go:build wsloop_lockcount

package engine

import (
	"testing"

	"github.com/wsloop/wsloop/codec"
)

// TestLockPairsPerEcho counts the wsConn mutex pairs on the path of one
// echoed message (read, OnMessage, WriteMessage, flush):
//
//	go test -tags wsloop_lockcount -run LockPairs -v ./engine
func TestLockPairsPerEcho(t *testing.T) {
	h := &echoRecorder{opened: make(chan *wsConn, 1)}
	srv := startLocal(t, h, Options{EventLoops: 1})
	c, br := upgradeLocal(t, srv.Addr().String())
	<-h.opened
	frame := codec.AppendMaskedFrame(nil, true, codec.OpBinary, 0, [4]byte{1, 2, 3, 4}, make([]byte, 1024))
	buf := make([]byte, 2048)
	echo := func() {
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < 1024+4; {
			m, err := br.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			n += m
		}
	}
	echo() // warm up
	const n = 1000
	before := connLocks.Load()
	for i := 0; i < n; i++ {
		echo()
	}
	per := float64(connLocks.Load()-before) / n
	t.Logf("%.2f lock/unlock pairs of wsConn.mu per echoed message", per)
	if per > 3 {
		t.Errorf("%.2f lock pairs per echoed message, want at most 3", per)
	}
}
