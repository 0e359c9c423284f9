package codec

import "errors"

// Close status codes (RFC 6455 §7.4.1 and the IANA WebSocket Close Code
// Number Registry).
const (
	CloseNormal             uint16 = 1000
	CloseGoingAway          uint16 = 1001
	CloseProtocolError      uint16 = 1002
	CloseUnsupportedData    uint16 = 1003
	CloseNoStatus           uint16 = 1005 // never on the wire
	CloseAbnormal           uint16 = 1006 // never on the wire
	CloseInvalidPayload     uint16 = 1007
	ClosePolicyViolation    uint16 = 1008
	CloseMessageTooBig      uint16 = 1009
	CloseMandatoryExtension uint16 = 1010
	CloseInternalError      uint16 = 1011
	CloseServiceRestart     uint16 = 1012
	CloseTryAgainLater      uint16 = 1013
	CloseBadGateway         uint16 = 1014
	CloseTLSHandshake       uint16 = 1015 // never on the wire
)

// ProtocolError is a violation by the peer that fails the WebSocket
// connection (RFC 6455 §7.1.7). Code is the close status the endpoint should
// send before closing: 1002 for framing errors, 1007 for invalid UTF-8, 1009
// for a message over the size limit.
type ProtocolError struct {
	Code   uint16
	Reason string
}

func (e *ProtocolError) Error() string { return "websocket: " + e.Reason }

// Framing errors returned by [Decoder.Decode]. They are *ProtocolError
// values, so errors.As gives the close code; compare with errors.Is.
var (
	ErrReservedOpcode       = &ProtocolError{CloseProtocolError, "reserved opcode"}
	ErrReservedBits         = &ProtocolError{CloseProtocolError, "reserved bits set without a negotiated extension"}
	ErrUnmaskedFrame        = &ProtocolError{CloseProtocolError, "client frame not masked"}
	ErrMaskedFrame          = &ProtocolError{CloseProtocolError, "server frame masked"}
	ErrFragmentedControl    = &ProtocolError{CloseProtocolError, "fragmented control frame"}
	ErrControlTooLong       = &ProtocolError{CloseProtocolError, "control frame payload over 125 bytes"}
	ErrLengthMSB            = &ProtocolError{CloseProtocolError, "64-bit payload length with the most significant bit set"}
	ErrUnexpectedContinue   = &ProtocolError{CloseProtocolError, "continuation frame without a message in progress"}
	ErrExpectedContinuation = &ProtocolError{CloseProtocolError, "new data frame inside an unfinished fragmented message"}
	ErrCloseLength          = &ProtocolError{CloseProtocolError, "close frame payload of 1 byte"}
	ErrCloseCode            = &ProtocolError{CloseProtocolError, "close code not allowed on the wire"}
	ErrCloseReasonUTF8      = &ProtocolError{CloseInvalidPayload, "close reason is not valid UTF-8"}
	ErrInvalidUTF8          = &ProtocolError{CloseInvalidPayload, "text message is not valid UTF-8"}
	ErrMessageTooBig        = &ProtocolError{CloseMessageTooBig, "message exceeds the size limit"}
)

// ErrHeaderTooLarge is returned by [HeaderScanner.Scan] when the request
// header is longer than its cap.
var ErrHeaderTooLarge = errors.New("websocket: request header too large")
