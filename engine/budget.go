package engine

import (
	"math"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// The inbound memory budget.
//
// MaxMessageSize bounds one message, but not how many connections hold one
// at a time: a few hundred clients that each send most of a large message
// and never finish it could take a server to the kernel's OOM killer. So
// what the server holds for inbound messages not yet delivered is counted
// against one server-wide budget (Options.MaxInboundMemory): the assembly
// buffers of fragmented or split messages, decompressed output, and upgrade
// request headers waiting in gnet's buffer for the rest of their bytes.
// Past the budget a connection that needs more is failed with 1013 Try
// Again Later (the message is within its limit; the server is the one short
// of memory, and for a while), the refusal is counted and logged once per
// interval, and every other connection goes on.
//
// What is not charged, and why: a frame header or a control frame waiting
// for its last bytes in gnet's buffer (at most 139 bytes, a per-connection
// constant), and the chunks a StreamHandler receives, which come straight
// from gnet's read buffer and are not held.

// defaultInboundMemory is the budget when Options.MaxInboundMemory is zero:
// 1 GiB, or a quarter of the Go memory limit when one is set and smaller.
func defaultInboundMemory() int64 {
	b := int64(1 << 30)
	if lim := debug.SetMemoryLimit(-1); lim > 0 && lim < math.MaxInt64 && lim/4 < b {
		b = lim / 4
	}
	return b
}

// inboundBudget counts the bytes held for inbound messages.
type inboundBudget struct {
	limit   int64 // negative: no limit
	used    atomic.Int64
	refused atomic.Int64
	log     rateLimited
}

// take reserves n bytes if they fit under the limit.
func (b *inboundBudget) take(n int64) bool {
	if b.limit < 0 || n <= 0 {
		b.used.Add(n)
		return true
	}
	for {
		u := b.used.Load()
		if u+n > b.limit {
			b.refused.Add(1)
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// give returns n bytes to the budget.
func (b *inboundBudget) give(n int64) { b.used.Add(-n) }

// errBusy is what OnClose reports for a connection failed by the budget.
var errBusy = &handler.CloseError{Code: codec.CloseTryAgainLater, Reason: busyReason}

const busyReason = "server busy: inbound memory budget spent"

// refuseInbound fails wc because the budget could not grow. Loop only.
func (s *Server) refuseInbound(wc *wsConn, need int) {
	if ok, n := s.inbound.log.allow(s.clock, time.Second); ok {
		s.log.Warn("wsloop: inbound memory budget spent, failing a connection with 1013",
			"remote", wc.c.RemoteAddr(), "needed", need, "used", s.inbound.used.Load(),
			"budget", s.inbound.limit, "refused_since_last_log", n)
	}
	wc.fail(codec.CloseTryAgainLater, busyReason, errBusy)
}

// growAssembly makes room for extra more bytes in x.asm, charging the
// growth to the budget. It reports false when the budget refused.
func (s *Server) growAssembly(x *connExtra, extra int) bool {
	need := len(x.asm) + extra
	if need <= cap(x.asm) {
		return true
	}
	size := msgBufSize(need)
	if !s.inbound.take(int64(size - cap(x.asm))) {
		return false
	}
	x.asm = resizeMsgBuf(x.asm, size)
	return true
}

// releaseAssembly frees x.asm and returns its charge.
func (s *Server) releaseAssembly(x *connExtra) {
	if x.asm == nil {
		return
	}
	s.inbound.give(int64(cap(x.asm)))
	freeMsgBuf(x.asm)
	x.asm = nil
}

// chargeHeader charges an incomplete upgrade request header of n bytes.
func (s *Server) chargeHeader(x *connExtra, n int) bool {
	if n <= x.hsCharged {
		return true
	}
	if !s.inbound.take(int64(n - x.hsCharged)) {
		return false
	}
	x.hsCharged = n
	return true
}

// releaseHeader returns an upgrade request header's charge.
func (s *Server) releaseHeader(x *connExtra) {
	s.inbound.give(int64(x.hsCharged))
	x.hsCharged = 0
}
