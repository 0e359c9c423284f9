package codec

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unsafe"
)

// bits turns a string of 0s and 1s into bytes, most significant bit first,
// so that a frame header can be written as the RFC 6455 §5.2 diagram draws
// it: bits("1 000 0001  1 0000101") is FIN, RSV1-3, opcode text, MASK,
// payload length 5. Spaces, '_' and '|' are ignored; the count of bits must
// be a multiple of 8.
func bits(s string) []byte {
	var out []byte
	var cur byte
	n := 0
	for _, c := range s {
		switch c {
		case ' ', '_', '|', '\t', '\n':
			continue
		case '0', '1':
			cur = cur<<1 | byte(c-'0')
			n++
			if n%8 == 0 {
				out = append(out, cur)
				cur = 0
			}
		default:
			panic(fmt.Sprintf("bits: bad character %q in %q", c, s))
		}
	}
	if n%8 != 0 {
		panic(fmt.Sprintf("bits: %d bits in %q, not a whole number of bytes", n, s))
	}
	return out
}

func TestBitsHelper(t *testing.T) {
	got := bits("1000 0001 | 1 0000101")
	if !bytes.Equal(got, []byte{0x81, 0x85}) {
		t.Fatalf("bits = %x", got)
	}
}

// cat concatenates byte slices into a fresh one.
func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// testMask is the mask of the RFC 6455 §5.7 examples.
var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// masked returns payload masked with m (a copy), as a client sends it.
func masked(m [4]byte, payload []byte) []byte {
	out := make([]byte, len(payload))
	for i, b := range payload {
		out[i] = b ^ m[i&3]
	}
	return out
}

// cframe is a client frame: header bits (with MASK set and the length
// field as written), then the mask, then the masked payload.
func cframe(header string, payload []byte) []byte {
	return cat(bits(header), testMask[:], masked(testMask, payload))
}

// mframe builds a masked client frame with the encoder; the encoder itself
// is checked against hand-written bits in encode_test.go.
func mframe(fin bool, op OpCode, rsv byte, payload []byte) []byte {
	return AppendMaskedFrame(nil, fin, op, rsv, testMask, payload)
}

// sframe builds an unmasked server frame.
func sframe(fin bool, op OpCode, rsv byte, payload []byte) []byte {
	return AppendFrame(nil, fin, op, rsv, payload)
}

// rec is one decoder event with its payload copied.
type rec struct {
	Kind         EventKind
	Op           OpCode
	Data         string
	First, Final bool
	Comp         bool
	Code         uint16
	Reason       string
}

func (r rec) String() string {
	if r.Kind == EventControl {
		if r.Op == OpClose {
			return fmt.Sprintf("close(%d %q)", r.Code, r.Reason)
		}
		return fmt.Sprintf("%v(%q)", r.Op, r.Data)
	}
	d := r.Data
	if len(d) > 40 {
		d = fmt.Sprintf("%q...(%d bytes)", d[:40], len(r.Data))
	} else {
		d = fmt.Sprintf("%q", d)
	}
	return fmt.Sprintf("%v(%s first=%v final=%v comp=%v)", r.Op, d, r.First, r.Final, r.Comp)
}

func toRec(ev Event) rec {
	return rec{Kind: ev.Kind, Op: ev.Op, Data: string(ev.Payload), First: ev.First, Final: ev.Final,
		Comp: ev.Compressed, Code: ev.CloseCode, Reason: string(ev.CloseReason)}
}

// driver feeds a Decoder the way an event loop does: it keeps the bytes not
// consumed, appends whatever arrives next, and decodes until EventNone. It
// checks the Decode contract on every call.
type driver struct {
	t    testing.TB
	d    *Decoder
	buf  []byte
	evs  []rec
	err  error
	done bool
}

// feed offers the tail plus chunk to the decoder. It stops at the first
// error, which is kept in dr.err.
func (dr *driver) feed(chunk []byte) {
	if dr.err != nil {
		return
	}
	// The event loop's buffer: the unconsumed tail, then the new bytes.
	dr.buf = append(dr.buf, chunk...)
	off := 0
	defer func() { dr.buf = append(dr.buf[:0], dr.buf[off:]...) }()
	for {
		in := dr.buf[off:]
		n, ev, err := dr.d.Decode(in)
		if n < 0 || n > len(in) {
			dr.t.Fatalf("Decode consumed %d of %d bytes", n, len(in))
		}
		if err != nil {
			dr.err = err
			return
		}
		if ev.Kind != EventNone {
			if len(ev.Payload) > 0 && !within(ev.Payload, in[:n]) {
				dr.t.Fatalf("Payload does not alias the consumed input")
			}
			dr.evs = append(dr.evs, toRec(ev))
		} else if ev.Payload != nil || ev.First || ev.Final {
			dr.t.Fatalf("EventNone with contents: %+v", ev)
		}
		off += n
		if ev.Kind == EventNone {
			// The contract: nothing decodable is left. A second call
			// on the same bytes must consume nothing.
			if n2, ev2, err2 := dr.d.Decode(dr.buf[off:]); n2 != 0 || ev2.Kind != EventNone || err2 != nil {
				dr.t.Fatalf("after EventNone (n=%d) Decode on the rest (%d bytes) gave n=%d %v %v", n, len(dr.buf)-off, n2, ev2.Kind, err2)
			}
			return
		}
	}
}

// within reports whether sub lies inside buf's memory.
func within(sub, buf []byte) bool {
	if len(sub) == 0 {
		return true
	}
	if len(buf) == 0 {
		return false
	}
	s0 := uintptr(unsafe.Pointer(unsafe.SliceData(sub)))
	b0 := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	return s0 >= b0 && s0+uintptr(len(sub)) <= b0+uintptr(len(buf))
}

// decodeAll feeds in at once (a copy: the decoder unmasks in place).
func decodeAll(t testing.TB, d *Decoder, in []byte) ([]rec, int, error) {
	dr := &driver{t: t, d: d}
	dr.feed(append([]byte(nil), in...))
	return dr.evs, len(dr.buf), dr.err
}

// decodeBytewise feeds in one byte at a time.
func decodeBytewise(t testing.TB, d *Decoder, in []byte) ([]rec, int, error) {
	dr := &driver{t: t, d: d}
	for i := range in {
		dr.feed(in[i : i+1])
		if dr.err != nil {
			break
		}
	}
	return dr.evs, len(dr.buf), dr.err
}

// logical is the message-level view of events: data pieces joined per
// message, control frames as they are. It is what must not depend on how
// the input was split.
func logical(evs []rec) []rec {
	var out []rec
	var cur *strings.Builder // the data of the message in progress, out's last element
	for _, e := range evs {
		if e.Kind == EventControl {
			out = append(out, e)
			continue
		}
		if e.First {
			out = append(out, rec{Kind: EventData, Op: e.Op, First: true, Comp: e.Comp})
			cur = new(strings.Builder)
		}
		if cur == nil {
			out = append(out, rec{Kind: EventData, Op: e.Op, Data: "<piece without First>"})
			continue
		}
		cur.WriteString(e.Data)
		// The message's entry may have moved behind control frames:
		// find it from the end.
		for i := len(out) - 1; i >= 0; i-- {
			if out[i].Kind == EventData {
				out[i].Data = cur.String()
				out[i].Final = e.Final
				break
			}
		}
		if e.Final {
			cur = nil
		}
	}
	return out
}

func recsString(rs []rec) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.String())
		b.WriteString("; ")
	}
	return b.String()
}

// closeCode returns the close code carried by a *ProtocolError, or 0.
func closeCode(err error) uint16 {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return 0
}
