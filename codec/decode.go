package codec

import (
	"encoding/binary"

	"github.com/gobwas/ws"
)

// DefaultMaxMessageSize is the message size limit of a [Decoder] whose
// MaxMessageSize is zero.
const DefaultMaxMessageSize = 16 << 20

// EventKind says what a call to [Decoder.Decode] found.
type EventKind uint8

const (
	// EventNone: the input holds no complete unit; offer more bytes.
	EventNone EventKind = iota
	// EventData: a piece of a data message's payload, unmasked.
	EventData
	// EventControl: a whole control frame (ping, pong or close).
	EventControl
)

// Event is one thing the decoder found in its input.
type Event struct {
	Kind EventKind
	// Op is the message type (text or binary, also for the continuation
	// frames of a fragmented message) for EventData, and the frame type
	// for EventControl.
	Op OpCode
	// Payload is the unmasked payload piece. It aliases the input of the
	// Decode call and is valid as long as that input is.
	Payload []byte
	// First and Final are set on the first and on the last piece of a data
	// message. A message that arrived whole, in a single frame, is one
	// event with both set: its Payload can be used without copying.
	First, Final bool
	// Compressed is set on the pieces of a data message whose first frame
	// had RSV1 set under a negotiated permessage-deflate (RFC 7692 §6).
	// The codec does not check the UTF-8 of compressed text.
	Compressed bool
	// CloseCode and CloseReason hold the validated contents of a close
	// frame: CloseNoStatus (1005) when it carried no payload.
	CloseCode   uint16
	CloseReason []byte
}

// Decoder is a resumable WebSocket frame decoder. Feed it the bytes buffered
// for a connection; it consumes whole frame headers, whole control frames,
// and data payloads as far as they have arrived, so that a large message
// never has to sit in the caller's input buffer.
//
// Set the configuration fields before the first call. The zero value decodes
// frames sent by a client to a server with [DefaultMaxMessageSize].
// A Decoder holds no buffer. A server that keeps one decoder per connection
// and one limit for all of them can use a [DecoderState] instead.
type Decoder struct {
	// MaxMessageSize caps the total payload of a data message. A frame
	// header announcing a length that would pass it is rejected at once
	// with [ErrMessageTooBig] (1009). Zero means [DefaultMaxMessageSize];
	// negative means no limit.
	MaxMessageSize int64
	// Client makes the decoder read frames sent by a server: unmasked
	// (RFC 6455 §5.1) instead of masked.
	Client bool
	// Compression allows RSV1 on the first frame of a data message, as
	// permessage-deflate does (RFC 7692 §6).
	Compression bool

	st DecoderState
}

// Reset returns the decoder to the start of a stream, keeping its
// configuration.
func (d *Decoder) Reset() { d.st = DecoderState{} }

// InMessage reports whether a data message has started and not finished:
// useful to bound the time a peer may keep a message incomplete.
func (d *Decoder) InMessage() bool { return d.st.InMessage() }

// Decode decodes the next unit from p. It returns the number of bytes of p
// it consumed and what they were. With EventNone, n may still be positive
// (the header of a data frame whose payload has not arrived was consumed);
// call again when more bytes have arrived. A data frame with an empty
// payload gives an EventData with an empty Payload. A partial frame header
// or a partial control frame is never consumed.
//
// Payload bytes are unmasked in place in p. An error is a *[ProtocolError]
// whose Code is the close status to send; after an error the stream is
// unusable and the connection must be failed (RFC 6455 §7.1.7).
func (d *Decoder) Decode(p []byte) (n int, ev Event, err error) {
	d.st.Client, d.st.Compression = d.Client, d.Compression
	return d.st.Decode(p, d.MaxMessageSize)
}

// DecoderState is a [Decoder] without its message size limit, which the
// caller passes to each [DecoderState.Decode] call instead. It exists for
// servers that hold a decoder per connection and one limit for all of them:
// a DecoderState is 32 bytes, where storing the limit in every connection
// would take it to 40. The zero value decodes client frames; set Client
// and Compression as on a Decoder.
type DecoderState struct {
	remaining int64 // payload bytes of the current data frame not yet consumed
	msgLen    int64 // payload bytes of the current message so far

	// Client and Compression mean what they mean on a [Decoder].
	Client      bool
	Compression bool

	mask    [4]byte
	maskPos uint8 // offset into mask, for chunked unmasking
	msgOp   OpCode
	inFrame bool // a data frame header was consumed, its payload is pending
	fin     bool // the current data frame is the last of its message
	first   bool // the next data event is the first of its message
	comp    bool // the current message is compressed
	utf8    UTF8Validator
}

// Reset returns the state to the start of a stream, keeping Client and
// Compression.
func (d *DecoderState) Reset() {
	*d = DecoderState{Client: d.Client, Compression: d.Compression}
}

// InMessage reports whether a data message has started and not finished.
func (d *DecoderState) InMessage() bool { return d.msgOp != 0 }

// Decode is [Decoder.Decode] with maxMessageSize in place of the
// Decoder's MaxMessageSize field (same meaning: zero is
// [DefaultMaxMessageSize], negative is no limit). Pass the same limit on
// every call of one stream.
func (d *DecoderState) Decode(p []byte, maxMessageSize int64) (n int, ev Event, err error) {
	if !d.inFrame {
		hn, err := d.header(p, &ev, maxMessageSize)
		if hn == 0 || err != nil || ev.Kind == EventControl {
			return hn, ev, err
		}
		n = hn
		p = p[hn:]
	}
	// Payload of a data frame, as far as it has arrived.
	take := d.remaining
	if int64(len(p)) < take {
		take = int64(len(p))
	}
	if take == 0 && d.remaining > 0 {
		return n, Event{}, nil
	}
	chunk := p[:take]
	if !d.Client {
		ws.Cipher(chunk, d.mask, int(d.maskPos))
		d.maskPos = uint8((int64(d.maskPos) + take) & 3)
	}
	d.remaining -= take
	d.msgLen += take
	ev = Event{Kind: EventData, Op: d.msgOp, Payload: chunk, First: d.first, Compressed: d.comp}
	d.first = false
	if d.remaining == 0 {
		d.inFrame = false
		ev.Final = d.fin
	}
	if d.msgOp == OpText && !d.comp {
		if !d.utf8.Write(chunk) || (ev.Final && !d.utf8.Complete()) {
			return 0, Event{}, ErrInvalidUTF8
		}
	}
	if ev.Final {
		d.msgOp, d.msgLen, d.comp = 0, 0, false
		d.utf8.Reset()
	}
	return n + int(take), ev, nil
}

// header decodes a frame header from p. For a control frame it also takes
// the whole payload and fills ev. It returns 0 when p holds too little.
func (d *DecoderState) header(p []byte, ev *Event, max int64) (int, error) {
	if len(p) < MinHeaderSize {
		return 0, nil
	}
	b0, b1 := p[0], p[1]
	fin := b0&0x80 != 0
	rsv := b0 & 0x70
	op := OpCode(b0 & 0x0F)
	masked := b1&0x80 != 0
	len7 := int64(b1 & 0x7F)

	// The checks below need only the first two bytes, so a bad frame
	// fails as soon as they arrive. RFC 6455 §5.2: "If an unknown opcode
	// is received, the receiving endpoint MUST _Fail the WebSocket
	// Connection_."
	if op.IsReserved() {
		return 0, ErrReservedOpcode
	}
	// §5.2: RSV1-3 "MUST be 0 unless an extension is negotiated that
	// defines meanings for non-zero values". permessage-deflate defines
	// RSV1 on the first frame of a message only (RFC 7692 §6.1).
	if rsv != 0 && !(rsv == 0x40 && d.Compression && op != OpContinuation && !op.IsControl()) {
		return 0, ErrReservedBits
	}
	// §5.1: a server MUST close on an unmasked client frame; a client
	// MUST close on a masked server frame.
	if masked == d.Client {
		if d.Client {
			return 0, ErrMaskedFrame
		}
		return 0, ErrUnmaskedFrame
	}
	if op.IsControl() {
		// §5.5: "All control frames MUST have a payload length of 125
		// bytes or less and MUST NOT be fragmented."
		if !fin {
			return 0, ErrFragmentedControl
		}
		if len7 > 125 {
			return 0, ErrControlTooLong
		}
	} else if op == OpContinuation {
		// §5.4: continuation frames belong to a message in progress.
		if d.msgOp == 0 {
			return 0, ErrUnexpectedContinue
		}
	} else if d.msgOp != 0 {
		// §5.4: fragments of one message are not interleaved with
		// another data message.
		return 0, ErrExpectedContinuation
	}

	hs := 2
	switch len7 {
	case 126:
		hs += 2
	case 127:
		hs += 8
	}
	if masked {
		hs += 4
	}
	if len(p) < hs {
		return 0, nil
	}
	length := len7
	switch len7 {
	case 126:
		length = int64(binary.BigEndian.Uint16(p[2:]))
	case 127:
		u := binary.BigEndian.Uint64(p[2:])
		if u>>63 != 0 { // §5.2: "the most significant bit MUST be 0"
			return 0, ErrLengthMSB
		}
		length = int64(u)
	}
	var mask [4]byte
	if masked {
		copy(mask[:], p[hs-4:hs])
	}

	if op.IsControl() {
		total := hs + int(length)
		if len(p) < total {
			return 0, nil // wait for the whole control frame
		}
		payload := p[hs:total]
		if masked {
			ws.Cipher(payload, mask, 0)
		}
		*ev = Event{Kind: EventControl, Op: op, Payload: payload}
		if op == OpClose {
			code, reason, err := ParseClose(payload)
			if err != nil {
				return 0, err
			}
			ev.CloseCode, ev.CloseReason = code, reason
		}
		return total, nil
	}

	if max == 0 {
		max = DefaultMaxMessageSize
	}
	if max > 0 && length > max-d.msgLen {
		return 0, ErrMessageTooBig
	}
	if op != OpContinuation {
		d.msgOp = op
		d.first = true
		d.comp = rsv != 0
	}
	d.inFrame = true
	d.fin = fin
	d.remaining = length
	d.mask = mask
	d.maskPos = 0
	return hs, nil
}
