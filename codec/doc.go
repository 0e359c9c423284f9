// Package codec implements the WebSocket protocol (RFC 6455) as pure
// functions and resumable state machines over byte slices: both sides of
// the opening handshake (the server's request parsing and responses here
// and in handshake.go, the client's request and response checks in
// client.go), frame header decoding and encoding, masking, fragmentation,
// incremental UTF-8 validation, close codes, and permessage-deflate
// (RFC 7692, deflate.go).
//
// The package does no I/O and starts no goroutines. A caller (an event loop)
// hands it whatever bytes happen to be buffered; the codec says how many it
// consumed and what they meant, and never consumes a partial frame header or
// a partial request header. Bytes it did not consume must be offered again,
// followed by whatever arrived since.
//
// # Buffer lifetimes
//
// Every slice the codec returns (an [Event]'s Payload, the fields of a
// [Request]) aliases the input the caller passed in, like the result of
// bufio.Reader.Peek: it is valid until the caller reuses or discards that
// input. The decoder unmasks payloads in place, so the input must be
// writable.
package codec
