//go:build unix

package engine

import (
	"net"
	"os"
)

// fileConn turns a socket descriptor into a net.Conn, taking it over: one
// end of the TLS bridge's socketpair (pair_unix.go), a socket a handoff
// received (handoff.go). Any Unix has it, the portable build included.
func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "socket")
	defer f.Close() // FileConn keeps its own duplicate
	return net.FileConn(f)
}
