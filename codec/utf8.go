package codec

import (
	"encoding/binary"
	"unicode/utf8"
)

// UTF8Validator checks a text message for UTF-8 validity as it arrives in
// arbitrary pieces, so that an invalid sequence fails the connection at the
// piece that contains it (the fail-fast behaviour RFC 6455 §8.1 allows and
// the Autobahn 6.x cases expect), including a character split across
// fragments. The zero value is ready; its state is 3 bytes.
type UTF8Validator struct {
	lead byte  // first byte of an incomplete character
	n    uint8 // bytes of it seen so far
	need uint8 // its full length
}

// Reset forgets any incomplete character.
func (v *UTF8Validator) Reset() { v.n, v.need = 0, 0 }

// Complete reports whether the input so far ended on a character boundary.
func (v *UTF8Validator) Complete() bool { return v.n == 0 }

// seqLen returns the length of the sequence a lead byte starts, or 0 for a
// byte that cannot start one (continuation bytes, 0xC0, 0xC1, 0xF5-0xFF).
func seqLen(b byte) uint8 {
	switch {
	case b < 0x80:
		return 1
	case b < 0xC2:
		return 0
	case b < 0xE0:
		return 2
	case b < 0xF0:
		return 3
	case b < 0xF5:
		return 4
	}
	return 0
}

// validCont reports whether b may follow lead at position i (1..3) of a
// sequence. The narrowed ranges for the second byte exclude overlong forms
// (E0, F0), surrogates (ED) and code points above U+10FFFF (F4), as in the
// table of RFC 3629 §4.
func validCont(lead, b byte, i int) bool {
	if i == 1 {
		switch lead {
		case 0xE0:
			return b >= 0xA0 && b <= 0xBF
		case 0xED:
			return b >= 0x80 && b <= 0x9F
		case 0xF0:
			return b >= 0x90 && b <= 0xBF
		case 0xF4:
			return b >= 0x80 && b <= 0x8F
		}
	}
	return b >= 0x80 && b <= 0xBF
}

// Write validates the next piece of the text. It returns false as soon as the
// bytes so far cannot be the beginning of valid UTF-8.
func (v *UTF8Validator) Write(p []byte) bool {
	// Finish a character left incomplete by the previous piece.
	for v.n > 0 {
		if len(p) == 0 {
			return true
		}
		if !validCont(v.lead, p[0], int(v.n)) {
			return false
		}
		p = p[1:]
		if v.n+1 == v.need {
			v.n, v.need = 0, 0
		} else {
			v.n++
		}
	}
	// ASCII fast path, eight bytes at a time.
	for len(p) >= 8 && binary.LittleEndian.Uint64(p)&0x8080808080808080 == 0 {
		p = p[8:]
	}
	if len(p) == 0 {
		return true
	}
	// Find a character cut off at the end of p: its lead byte is within
	// the last three bytes.
	tail := len(p)
	for k := len(p) - 1; k >= 0 && k >= len(p)-3; k-- {
		b := p[k]
		if b < 0x80 {
			break
		}
		if b >= 0xC0 {
			if l := seqLen(b); l == 0 {
				return false
			} else if int(l) > len(p)-k {
				tail = k
			}
			break
		}
	}
	if !utf8.Valid(p[:tail]) {
		return false
	}
	if tail == len(p) {
		return true
	}
	lead := p[tail]
	for i := 1; tail+i < len(p); i++ {
		if !validCont(lead, p[tail+i], i) {
			return false
		}
	}
	v.lead = lead
	v.n = uint8(len(p) - tail)
	v.need = seqLen(lead)
	return true
}

// validUTF8 reports whether p is complete, valid UTF-8.
func validUTF8(p []byte) bool { return utf8.Valid(p) }
