//go:build unix

package engine

import "golang.org/x/sys/unix"

// gnetSockaddr is the type of the peer's sockaddr that gnet's connection
// keeps on Linux, macOS and the BSDs (connection_unix.go, field remote),
// which trimGnetConn clears: gnet reads it only for UDP.
type gnetSockaddr = unix.Sockaddr
