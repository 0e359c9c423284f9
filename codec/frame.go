package codec

// OpCode is the 4-bit frame opcode of RFC 6455 §5.2. Its values are those of
// the RFC (and of github.com/gobwas/ws), so the two convert directly.
type OpCode byte

// Opcodes defined by RFC 6455 §5.2; the others are reserved.
const (
	OpContinuation OpCode = 0x0
	OpText         OpCode = 0x1
	OpBinary       OpCode = 0x2
	OpClose        OpCode = 0x8
	OpPing         OpCode = 0x9
	OpPong         OpCode = 0xA
)

// IsControl reports whether op is a control opcode (the MSB of the nibble set).
func (op OpCode) IsControl() bool { return op&0x8 != 0 }

// IsData reports whether op is text, binary or continuation.
func (op OpCode) IsData() bool { return op <= OpBinary }

// IsReserved reports whether op is one of the reserved opcodes 0x3-0x7 and
// 0xB-0xF, which a peer must not send unless an extension defines them.
func (op OpCode) IsReserved() bool { return (op > OpBinary && op < OpClose) || op > OpPong }

func (op OpCode) String() string {
	switch op {
	case OpContinuation:
		return "continuation"
	case OpText:
		return "text"
	case OpBinary:
		return "binary"
	case OpClose:
		return "close"
	case OpPing:
		return "ping"
	case OpPong:
		return "pong"
	}
	return "reserved"
}

// PreparedFrame is a complete server frame (header and payload, unmasked)
// encoded once so that it can be written to any number of connections
// unchanged. It is immutable and safe for concurrent use.
type PreparedFrame struct {
	op  OpCode
	buf []byte

	defl preparedDeflate // compressed variant for permessage-deflate (deflate.go)
}

// NewPreparedFrame encodes payload as one final frame of type op. The payload
// is copied: the caller may reuse it.
func NewPreparedFrame(op OpCode, payload []byte) *PreparedFrame {
	b := AppendFrame(make([]byte, 0, MaxHeaderSize+len(payload)), true, op, 0, payload)
	return &PreparedFrame{op: op, buf: b}
}

// Op returns the frame's opcode.
func (f *PreparedFrame) Op() OpCode { return f.op }

// Bytes returns the encoded frame. The caller must not modify it.
func (f *PreparedFrame) Bytes() []byte { return f.buf }
