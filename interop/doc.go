// Package interop checks that widely used Go WebSocket clients,
// github.com/gorilla/websocket and github.com/gobwas/ws, interoperate with
// the wsloop engine: echo of text and binary messages small and large,
// ping and pong, the closing handshake with a code and reason, and
// subprotocol negotiation.
//
// It is a separate module so that the client libraries never become
// dependencies of wsloop itself. Run it from this directory with
//
//	go test -race ./...
package interop
