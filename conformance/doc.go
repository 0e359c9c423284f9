// Package conformance holds the wsloop RFC 6455 conformance suite: a raw-TCP
// WebSocket test client written from the RFC and a go test suite numbered
// after the server cases of the Autobahn testsuite, graded strictly (what
// Autobahn calls NON-STRICT fails here), plus tests for hostile or unusual
// peers: a byte-at-a-time sender, a frame pipelined behind the handshake, a
// peer that vanishes mid-frame, and ten thousand concurrent connections.
//
// The package has no non-test code besides this comment. Run it with
//
//	go test -race ./conformance
//
// By default every test starts an in-process echo server on 127.0.0.1:0.
// Set WSLOOP_CONFORMANCE_ADDR=host:port to point the suite at any other
// echo server (a peer library, a build of examples/echo) instead; the tests
// that need to see inside the server (OnClose hooks, goroutine counts) then
// skip those checks and say so.
package conformance
