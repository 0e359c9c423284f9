// Package clientconformance holds the conformance suite of wsloop's client
// (engine.Server.Dial): a raw test server written from RFC 6455 plays the
// server side of the Autobahn testsuite's client cases (framing, pings,
// reserved bits and opcodes, fragmentation with interleaved control
// frames, UTF-8, close handling, large messages, permessage-deflate), plus
// masked server frames and oversized frames, against an echo client on the
// engine's event loops.
//
// Verdicts are strict, as in the server suite (package conformance): every
// frame the client sends must be masked with a valid header; the echoes,
// pongs and close code must be exactly the expected ones; after the close
// handshake the client must leave closing the TCP connection to the server
// (RFC 6455 §7.1.1), which the suite checks deterministically by moving
// the client's clock (enginetest.Clock) short of its CloseTimeout first;
// and the client's OnClose must report what happened.
//
// The package has no non-test code besides this comment. Run it with
//
//	go test -race ./clientconformance
package clientconformance
