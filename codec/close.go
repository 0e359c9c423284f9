package codec

import "encoding/binary"

// ValidCloseCode reports whether code may appear in a close frame on the wire
// (RFC 6455 §7.4.1-§7.4.2 and the IANA registry): 1000-1003, 1007-1014 and
// 3000-4999. 0-999 are unused, 1004 is reserved, 1005, 1006 and 1015 must
// never be sent, 1016-2999 are reserved for future protocol use, and 5000 and
// up are outside the defined ranges.
func ValidCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// ParseClose validates a close frame payload (RFC 6455 §5.5.1): empty, or a
// 2-byte code allowed on the wire followed by a UTF-8 reason. An empty
// payload gives [CloseNoStatus]. reason aliases payload.
func ParseClose(payload []byte) (code uint16, reason []byte, err error) {
	switch len(payload) {
	case 0:
		return CloseNoStatus, nil, nil
	case 1:
		return 0, nil, ErrCloseLength
	}
	code = binary.BigEndian.Uint16(payload)
	if !ValidCloseCode(code) {
		return code, nil, ErrCloseCode
	}
	reason = payload[2:]
	if !validUTF8(reason) {
		return code, nil, ErrCloseReasonUTF8
	}
	return code, reason, nil
}

// MaxCloseReason is the longest reason that fits a control frame next to
// the 2-byte code.
const MaxCloseReason = 123

// AppendClosePayload appends the payload of a close frame: the code and as
// much of reason as fits in 123 bytes, cut at a UTF-8 boundary. A code of
// [CloseNoStatus] gives an empty payload.
func AppendClosePayload(dst []byte, code uint16, reason string) []byte {
	if code == CloseNoStatus || code == 0 {
		return dst
	}
	dst = binary.BigEndian.AppendUint16(dst, code)
	if len(reason) > MaxCloseReason {
		n := MaxCloseReason
		for n > 0 && reason[n]&0xC0 == 0x80 { // don't split a character
			n--
		}
		reason = reason[:n]
	}
	return append(dst, reason...)
}

// AppendCloseFrame appends a complete server close frame.
func AppendCloseFrame(dst []byte, code uint16, reason string) []byte {
	var p [125]byte
	payload := AppendClosePayload(p[:0], code, reason)
	return AppendFrame(dst, true, OpClose, 0, payload)
}
