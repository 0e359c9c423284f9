package codec

import (
	"encoding/binary"

	"github.com/gobwas/ws"
)

// Frame header sizes (RFC 6455 §5.2).
const (
	MinHeaderSize = 2
	MaxHeaderSize = 14
)

// AppendFrameHeader appends a server (unmasked) frame header announcing a
// payload of length bytes and returns the extended slice. rsv holds the three
// RSV bits in the positions RFC 6455 §5.2 gives them in the first byte
// (0x40, 0x20, 0x10).
func AppendFrameHeader(dst []byte, fin bool, op OpCode, rsv byte, length int) []byte {
	b0 := byte(op&0x0F) | (rsv & 0x70)
	if fin {
		b0 |= 0x80
	}
	switch {
	case length <= 125:
		return append(dst, b0, byte(length))
	case length <= 0xFFFF:
		return append(dst, b0, 126, byte(length>>8), byte(length))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(length))
	}
}

// AppendFrame appends a complete server frame (unmasked) carrying payload.
// It does not allocate when dst has room for the header and payload.
func AppendFrame(dst []byte, fin bool, op OpCode, rsv byte, payload []byte) []byte {
	dst = AppendFrameHeader(dst, fin, op, rsv, len(payload))
	return append(dst, payload...)
}

// AppendMaskedFrame appends a complete client frame: the payload is copied
// into dst and masked there with mask (RFC 6455 §5.3), so payload itself is
// not modified. Clients must pick a fresh, unpredictable mask per frame.
func AppendMaskedFrame(dst []byte, fin bool, op OpCode, rsv byte, mask [4]byte, payload []byte) []byte {
	h := len(dst)
	dst = AppendFrameHeader(dst, fin, op, rsv, len(payload))
	dst[h+1] |= 0x80 // the MASK bit is the top bit of the second header byte
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[start:], mask, 0)
	return dst
}

// MaskFrame appends frame, a complete unmasked frame such as a
// [PreparedFrame]'s bytes, as a client must send it: the same header with
// the MASK bit and mask, and the payload masked (RFC 6455 §5.3). frame is
// not modified, so a frame shared by many connections can be sent by
// clients too, at the cost of this copy. frame must be well-formed (as
// [AppendFrame] writes it); MaskFrame does not check it.
func MaskFrame(dst, frame []byte, mask [4]byte) []byte {
	b0, len7 := frame[0], frame[1]&0x7F
	hs := 2
	switch len7 {
	case 126:
		hs = 4
	case 127:
		hs = 10
	}
	return AppendMaskedFrame(dst, b0&0x80 != 0, OpCode(b0&0x0F), b0&0x70, mask, frame[hs:])
}
