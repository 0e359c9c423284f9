package engine

import (
	"errors"
	"syscall"
)

// errReusePort is what ListenAndServe returns on Windows when
// Options.ReusePort is set.
var errReusePort = errors.New("wsloop: Options.ReusePort is not supported on Windows: it has no SO_REUSEPORT, and SO_REUSEADDR would let any process take over the port")

// reusePort refuses: Windows has no SO_REUSEPORT. Its SO_REUSEADDR lets
// another process bind the same port and take its connections, which is
// the risk ReusePort's documentation warns about made worse, so it is not
// used in its place.
func reusePort(network, address string, c syscall.RawConn) error { return errReusePort }
