// Package interop checks that widely used Go WebSocket clients,
// github.com/gorilla/websocket and github.com/gobwas/ws, interoperate with
// the wsloop engine: echo of text and binary messages small and large,
// ping and pong, the closing handshake with a code and reason, and
// subprotocol negotiation. It also checks the other direction: wsloop's
// client (engine.Server.Dial) against servers no one here wrote, Node's ws
// and Python's websockets (testdata/node/server.mjs,
// testdata/python/server.py), plain, with permessage-deflate and over TLS;
// those tests skip, saying why, when node and the ws package (npm ci in
// testdata/node) or python3 with websockets are missing. And it puts
// HAProxy (Debian's haproxy package) in TCP mode in front of the engine,
// sending the PROXY protocol, versions 1 and 2; that test skips when
// haproxy is not installed.
//
// It is a separate module so that the client libraries never become
// dependencies of wsloop itself. Run it from this directory with
//
//	go test -race ./...
package interop
