package engine

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// procStatusKiB reads a "VmXXX:" line of /proc/self/status, in KiB.
func procStatusKiB(tb testing.TB, field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skip("no /proc/self/status")
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	tb.Skipf("no %s in /proc/self/status", field)
	return 0
}

// BenchmarkAssemblyRSS reports how much the process's peak RSS grows while
// a client sends one message in 1 MiB fragments toward 1 GiB to a server
// whose MaxMessageSize is 64 MiB, until the server answers 1009:
//
//	go test -run=^$ -bench=AssemblyRSS -benchtime=3x ./engine
//
// The message is assembled up to the limit, so the growth is the cost of a
// message at the limit: ideally the limit plus a small constant.
func BenchmarkAssemblyRSS(b *testing.B) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Skip("cannot reset the peak RSS (/proc/self/clear_refs):", err)
	}
	const limit = 64 << 20
	srv := startLocal(b, handler.Base{}, Options{MaxMessageSize: limit, EventLoops: 1})
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	mask := [4]byte{9, 8, 7, 6}
	frame := make([]byte, 0, len(payload)+codec.MaxHeaderSize)
	var worst int64
	for i := 0; i < b.N; i++ {
		c, br := upgradeLocal(b, srv.Addr().String())
		runtime.GC()
		debug.FreeOSMemory() // a clean baseline in this (client and server) process
		_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
		base := procStatusKiB(b, "VmRSS")
		closed := make(chan uint16, 1)
		go func() {
			var dec codec.Decoder
			dec.Client = true
			var in []byte
			buf := make([]byte, 4096)
			for {
				n, err := br.Read(buf)
				if err != nil {
					closed <- 0
					return
				}
				in = append(in, buf[:n]...)
				m, ev, err := dec.Decode(in)
				if err == nil && ev.Kind == codec.EventControl && ev.Op == codec.OpClose {
					closed <- ev.CloseCode
					return
				}
				in = in[m:]
			}
		}()
		var code uint16
		sent := 0
	send:
		for sent < 1<<30 {
			op := codec.OpContinuation
			if sent == 0 {
				op = codec.OpBinary
			}
			frame = codec.AppendMaskedFrame(frame[:0], false, op, 0, mask, payload)
			if _, err := c.Write(frame); err != nil {
				break
			}
			sent += len(payload)
			select {
			case code = <-closed:
				break send
			default:
			}
		}
		if code == 0 {
			code = <-closed
		}
		c.Close()
		if code != codec.CloseMessageTooBig {
			b.Fatalf("after %d MiB: close %d, want 1009", sent>>20, code)
		}
		if g := procStatusKiB(b, "VmHWM") - base; g > worst {
			worst = g
		}
	}
	b.ReportMetric(float64(worst)/1024, "peak-RSS-MiB")
	b.ReportMetric(float64(limit>>20), "limit-MiB")
}
