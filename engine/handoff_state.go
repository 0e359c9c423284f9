package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/wsloop/wsloop/codec"
)

// The state format of a handoff: what travels with each descriptor. The old
// and the new process compare handoffStateVersion before anything moves
// (engine/internal/handoff); a change to the encoding below must bump it.
// Everything is little-endian varints and length-prefixed bytes; the
// decoder takes nothing on trust, because a bug or a damaged message must
// end in a clean refusal, never a panic or a huge allocation
// (FuzzHandoffRecords).

// handoffStateVersion is the version of the format below.
//
// Version 2 added recPaused and the peer addresses.
const handoffStateVersion = 2

// Limits of a record, checked by the decoder.
const (
	maxRecordString = 64 << 10 // path, query, subprotocol, listener names and addresses
	maxRecordBytes  = 16 << 20 // input, output and application state of one connection, together
)

// Record flags.
const (
	recClient         = 1 << iota // dialed by the old process: masks its frames
	recProbeSent                  // the idle probe ping is out
	recPongWait                   // a PingInterval ping is unanswered
	recDeflate                    // permessage-deflate was negotiated
	recServerTakeover             // ... with server context takeover
	recClientTakeover             // ... with client context takeover
	recPaused                     // the application paused its reads (PauseReading)
	recAllFlags       = recClient | recProbeSent | recPongWait | recDeflate | recServerTakeover | recClientTakeover | recPaused
)

// connRecord is one connection in transit: everything of it but the
// socket, at a message boundary in both directions.
type connRecord struct {
	id                   uint64
	flags                uint32
	path, query, sub     string
	maxMsg               int64  // the connection's own MaxMessageSize, 0 for the server's
	deflBits             uint8  // no takeover: the sharedDeflate entry (server_max_window_bits, 0 if absent)
	deflLimit            uint32 // takeover: the largest message compressed, 0 for any
	sent, hist           []byte // takeover: the end of what was sent compressed, the client's window
	sinceRead, sincePing uint32 // milliseconds since the last read, since the last server ping (or pong wait)
	msgAge               uint32 // milliseconds an incomplete frame header has waited, 0 if none
	in, out, app         []byte // raw unparsed input, queued output, the application's state
	// remote and local are the connection's addresses as the application
	// saw them ("" when they are the socket's own): a client's that a
	// PROXY protocol header announced, or a bridged one's.
	remote, local string
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// appendRecord appends r's encoding.
func appendRecord(b []byte, r *connRecord) []byte {
	b = binary.AppendUvarint(b, r.id)
	b = binary.AppendUvarint(b, uint64(r.flags))
	b = appendBytes(b, []byte(r.path))
	b = appendBytes(b, []byte(r.query))
	b = appendBytes(b, []byte(r.sub))
	b = binary.AppendVarint(b, r.maxMsg)
	b = append(b, r.deflBits)
	b = binary.AppendUvarint(b, uint64(r.deflLimit))
	b = appendBytes(b, r.sent)
	b = appendBytes(b, r.hist)
	b = binary.AppendUvarint(b, uint64(r.sinceRead))
	b = binary.AppendUvarint(b, uint64(r.sincePing))
	b = binary.AppendUvarint(b, uint64(r.msgAge))
	b = appendBytes(b, r.in)
	b = appendBytes(b, r.out)
	b = appendBytes(b, r.app)
	b = appendBytes(b, []byte(r.remote))
	return appendBytes(b, []byte(r.local))
}

// recordSize is an upper bound of r's encoding, for sizing a batch.
func recordSize(r *connRecord) int {
	return 18*binary.MaxVarintLen64 + 1 + len(r.path) + len(r.query) + len(r.sub) + len(r.sent) + len(r.hist) + len(r.in) + len(r.out) + len(r.app) + len(r.remote) + len(r.local)
}

var errRecord = errors.New("wsloop: handoff state: malformed record")

// recordReader decodes from a byte slice, failing once for good.
type recordReader struct {
	b   []byte
	err error
}

func (d *recordReader) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errRecord, what)
	}
}

func (d *recordReader) uvarint(what string, max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > max {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *recordReader) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *recordReader) byte1(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail(what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// bytes returns the next length-prefixed bytes, at most max, as a copy:
// a record must not keep the whole batch alive.
func (d *recordReader) bytes(what string, max int) []byte {
	n := d.uvarint(what, uint64(max))
	if d.err != nil {
		return nil
	}
	if uint64(len(d.b)) < n {
		d.fail(what)
		return nil
	}
	if n == 0 {
		return nil
	}
	p := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return p
}

func (d *recordReader) string(what string) string { return string(d.bytes(what, maxRecordString)) }

// record decodes one record.
func (d *recordReader) record(r *connRecord) {
	r.id = d.uvarint("id", 1<<64-1)
	r.flags = uint32(d.uvarint("flags", recAllFlags))
	r.path = d.string("path")
	r.query = d.string("query")
	r.sub = d.string("subprotocol")
	r.maxMsg = d.varint("message size limit")
	r.deflBits = d.byte1("deflate window bits")
	r.deflLimit = uint32(d.uvarint("deflate limit", 1<<32-1))
	r.sent = d.bytes("sent window", codec.DeflateWindow)
	r.hist = d.bytes("received window", codec.DeflateWindow)
	r.sinceRead = uint32(d.uvarint("time since read", 1<<32-1))
	r.sincePing = uint32(d.uvarint("time since ping", 1<<32-1))
	r.msgAge = uint32(d.uvarint("message age", 1<<32-1))
	r.in = d.bytes("input", maxRecordBytes)
	r.out = d.bytes("output", maxRecordBytes)
	r.app = d.bytes("application state", maxRecordBytes)
	r.remote = d.string("remote address")
	r.local = d.string("local address")
	if d.err != nil {
		return
	}
	switch {
	case r.deflBits >= uint8(len(sharedDeflate)):
		d.fail("deflate window bits")
	case r.maxMsg < 0:
		d.fail("message size limit")
	case r.path == "" || r.path[0] != '/':
		d.fail("path")
	case !validAddrPort(r.remote) || !validAddrPort(r.local):
		d.fail("address")
	case len(r.in)+len(r.out)+len(r.app) > maxRecordBytes:
		d.fail("record too large")
	case r.flags&recDeflate == 0 && (r.flags&(recServerTakeover|recClientTakeover) != 0 || r.deflBits != 0 || r.deflLimit != 0 || len(r.sent)+len(r.hist) > 0):
		d.fail("deflate state without deflate")
	case r.flags&recServerTakeover == 0 && len(r.sent) > 0, r.flags&recClientTakeover == 0 && len(r.hist) > 0:
		d.fail("a window without context takeover")
	}
}

// validAddrPort reports whether s is empty or an IP address and port.
func validAddrPort(s string) bool {
	if s == "" {
		return true
	}
	_, err := netip.ParseAddrPort(s)
	return err == nil
}

// appendBatch appends the payload of a batch of records.
func appendBatch(b []byte, recs []*connRecord) []byte {
	b = binary.AppendUvarint(b, uint64(len(recs)))
	for _, r := range recs {
		b = appendRecord(b, r)
	}
	return b
}

// decodeBatch decodes a batch of exactly n records (n descriptors came
// with it) and refuses anything else.
func decodeBatch(p []byte, n int) ([]*connRecord, error) {
	d := &recordReader{b: p}
	count := d.uvarint("record count", 253)
	if d.err == nil && int(count) != n {
		return nil, fmt.Errorf("%w: %d records for %d descriptors", errRecord, count, n)
	}
	recs := make([]*connRecord, 0, count)
	for i := uint64(0); i < count && d.err == nil; i++ {
		r := &connRecord{}
		d.record(r)
		recs = append(recs, r)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("bytes after the last record")
	}
	if d.err != nil {
		return nil, d.err
	}
	return recs, nil
}

// listenerRecord describes one listening socket in transit.
type listenerRecord struct {
	name, network, addr string
}

// appendListeners appends the payload of the listeners message.
func appendListeners(b []byte, ls []listenerRecord) []byte {
	b = binary.AppendUvarint(b, uint64(len(ls)))
	for _, l := range ls {
		b = appendBytes(b, []byte(l.name))
		b = appendBytes(b, []byte(l.network))
		b = appendBytes(b, []byte(l.addr))
	}
	return b
}

// decodeListeners decodes the listeners message of n descriptors.
func decodeListeners(p []byte, n int) ([]listenerRecord, error) {
	d := &recordReader{b: p}
	count := d.uvarint("listener count", 253)
	if d.err == nil && int(count) != n {
		return nil, fmt.Errorf("%w: %d listeners for %d descriptors", errRecord, count, n)
	}
	ls := make([]listenerRecord, 0, count)
	for i := uint64(0); i < count && d.err == nil; i++ {
		l := listenerRecord{name: d.string("listener name"), network: d.string("network"), addr: d.string("address")}
		if d.err == nil && l.network != "tcp" && l.network != "tcp4" && l.network != "tcp6" && l.network != "unix" {
			d.fail("network " + l.network)
		}
		ls = append(ls, l)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("bytes after the last listener")
	}
	if d.err != nil {
		return nil, d.err
	}
	return ls, nil
}
