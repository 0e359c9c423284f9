// Package handoff is the transfer layer of a deploy without disconnecting:
// an old process gives its listening sockets and live connections, as
// descriptors with a record each, to its successor over a Unix socket.
// It knows nothing of WebSocket: the engine (engine/handoff.go) decides what
// a record holds and when a connection may go.
//
// The rules it keeps, and why:
//
//   - Only the right process may take over. The socket lives in a directory
//     the operator names, which must be the user's own and closed to others
//     (0700, created with that mode, never widened by a chmod after bind);
//     both ends check the peer's credentials (SO_PEERCRED on Linux,
//     LOCAL_PEERCRED on darwin and FreeBSD) before anything else, and the
//     giver does so before any descriptor goes out. A peer must have the
//     same uid or one the operator allows; any other gets nothing and is
//     logged.
//   - Both ends first agree on the version of the state format. If they
//     disagree nothing moves, and the old process goes on serving.
//   - Descriptors travel in SCM_RIGHTS batches of at most MaxFDs (253, the
//     Linux limit per message), with a window of unacknowledged batches:
//     descriptors in flight count against the sender's limit
//     (ETOOMANYREFS). Every message carries a CRC-32C; the receiver uses
//     MSG_CMSG_CLOEXEC so that a later successor inherits no stray socket,
//     and treats MSG_CTRUNC (its own descriptor limit) or a checksum that
//     fails as that batch's failure, which it refuses.
//   - Nothing is released until the end: the giver keeps its copy of every
//     descriptor until the taker has acknowledged every batch and the
//     commit, and the taker must not read or write a received socket
//     until then (Commit), so two readers on one socket are impossible.
//   - If the taker dies, refuses a batch or gives up, the giver takes
//     everything back and goes on serving. If the giver dies after some
//     batches were acknowledged, those live on in the taker: a giver that
//     takes its connections back always says so first (TakeBack), so an
//     end of stream without that word means the giver is gone.
package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// MaxFDs is the most descriptors one message carries: Linux refuses more
// than SCM_MAX_FD (253) in one SCM_RIGHTS message.
const MaxFDs = 253

// MaxPayload bounds the payload of one message. A receiver refuses a
// header that announces more, so a broken or hostile peer cannot make it
// allocate without bound.
const MaxPayload = 64 << 20

// headerSize is the size of a message header.
const headerSize = 16

// protocolVersion is the version of this transfer protocol; the engine's
// state format has a version of its own (Config.Version). Both must match.
const protocolVersion = 1

// magic opens every HELLO, so that a process that connected to the wrong
// socket is told at once.
const magic = "WSLOOP-HANDOFF\x00\x00"

// Message types.
const (
	msgHello     uint8 = 1 // both ways: magic, protocol version, state version
	msgListeners uint8 = 2 // giver: listening sockets
	msgBatch     uint8 = 3 // giver: connections
	msgState     uint8 = 4 // giver: the application's global state
	msgCommit    uint8 = 5 // giver: every descriptor is the taker's now
	msgTakeBack  uint8 = 6 // giver: the transfer is off, the giver serves everything again
	msgAck       uint8 = 7 // taker: the message with this seq arrived whole
	msgRefuse    uint8 = 8 // taker: the message with this seq did not; the transfer is off
	msgCommitAck uint8 = 9 // taker: commit received; from now the taker serves what it got
)

// header is the fixed part of a message:
//
//	0  type     u8
//	1  reserved u8 (0)
//	2  nfds     u16  descriptors attached to this message
//	4  seq      u32  the giver's sequence number, or the one acknowledged
//	8  length   u32  payload bytes that follow
//	12 crc      u32  CRC-32C of bytes 0-11 and the payload
type header struct {
	typ    uint8
	nfds   uint16
	seq    uint32
	length uint32
	crc    uint32
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checksum returns the CRC of a header's first 12 bytes and a payload.
func checksum(h []byte, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, h[:12])
	return crc32.Update(c, castagnoli, payload)
}

// encodeHeader writes the header of a message with payload into b.
func encodeHeader(b *[headerSize]byte, typ uint8, nfds int, seq uint32, payload []byte) {
	b[0] = typ
	b[1] = 0
	binary.BigEndian.PutUint16(b[2:], uint16(nfds))
	binary.BigEndian.PutUint32(b[4:], seq)
	binary.BigEndian.PutUint32(b[8:], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[12:], checksum(b[:], payload))
}

// errBadHeader is returned for a header no sender of this protocol writes.
var errBadHeader = errors.New("wsloop handoff: malformed message header")

// decodeHeader parses a header and checks what can be checked before the
// payload is read.
func decodeHeader(b []byte) (header, error) {
	h := header{
		typ:    b[0],
		nfds:   binary.BigEndian.Uint16(b[2:]),
		seq:    binary.BigEndian.Uint32(b[4:]),
		length: binary.BigEndian.Uint32(b[8:]),
		crc:    binary.BigEndian.Uint32(b[12:]),
	}
	switch {
	case h.typ < msgHello || h.typ > msgCommitAck, b[1] != 0:
		return h, errBadHeader
	case h.nfds > MaxFDs:
		return h, fmt.Errorf("%w: %d descriptors announced, at most %d", errBadHeader, h.nfds, MaxFDs)
	case h.length > MaxPayload:
		return h, fmt.Errorf("%w: %d payload bytes announced, at most %d", errBadHeader, h.length, MaxPayload)
	}
	return h, nil
}

// hello is the payload of a HELLO.
func hello(stateVersion uint32) []byte {
	b := make([]byte, 0, len(magic)+8)
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint32(b, protocolVersion)
	return binary.BigEndian.AppendUint32(b, stateVersion)
}

// VersionError reports that the two processes disagree on a version: the
// transfer protocol's or the engine's state format. Nothing moved.
type VersionError struct {
	What          string // "protocol" or "state format"
	Ours, Theirs  uint32
	NotAnEndpoint bool // the peer is not a wsloop handoff endpoint at all
}

func (e *VersionError) Error() string {
	if e.NotAnEndpoint {
		return "wsloop handoff: the peer is not a wsloop handoff endpoint"
	}
	return fmt.Sprintf("wsloop handoff: %s version %d here, %d in the other process: nothing moves", e.What, e.Ours, e.Theirs)
}

// checkHello checks a peer's HELLO against ours.
func checkHello(p []byte, stateVersion uint32) error {
	if len(p) != len(magic)+8 || string(p[:len(magic)]) != magic {
		return &VersionError{NotAnEndpoint: true}
	}
	pv := binary.BigEndian.Uint32(p[len(magic):])
	sv := binary.BigEndian.Uint32(p[len(magic)+4:])
	if pv != protocolVersion {
		return &VersionError{What: "protocol", Ours: protocolVersion, Theirs: pv}
	}
	if sv != stateVersion {
		return &VersionError{What: "state format", Ours: stateVersion, Theirs: sv}
	}
	return nil
}

// Errors of a transfer.
var (
	// ErrUnsupported is returned where the platform cannot pass
	// descriptors between processes (Windows).
	ErrUnsupported = errors.New("wsloop handoff: not supported on this platform (it needs Unix sockets with SCM_RIGHTS and peer credentials)")
	// ErrTakenBack is returned to the taker when the giver called the
	// transfer off: every descriptor received is the giver's again and
	// must be closed unread.
	ErrTakenBack = errors.New("wsloop handoff: the old process took its connections back")
	// ErrGiverGone is returned to the taker when the giver's end closed
	// without a commit and without taking anything back: it died. What
	// was acknowledged is the taker's.
	ErrGiverGone = errors.New("wsloop handoff: the old process is gone")
	// ErrTakerGone is returned to the giver when the taker's end closed
	// before the commit was acknowledged: it died or gave up, and
	// received nothing it will serve.
	ErrTakerGone = errors.New("wsloop handoff: the new process is gone")
	// ErrCommitUnknown is returned by Giver.Commit when the taker neither
	// acknowledged the commit nor went away in time. The giver must not
	// take anything back (the taker may serve it); it closes its copies.
	ErrCommitUnknown = errors.New("wsloop handoff: the new process did not acknowledge the commit in time")
)

// RefusedError is returned to the giver when the taker refused a message:
// a checksum that failed, descriptors cut short by its own limit
// (MSG_CTRUNC), a count that does not match.
type RefusedError struct {
	Seq    uint32
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("wsloop handoff: the new process refused message %d: %s", e.Seq, e.Reason)
}
