package engine

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort sets SO_REUSEPORT_LB on a listening socket before it binds:
// on FreeBSD (12 and later) that is the option that spreads new
// connections over the sockets bound to one port, as SO_REUSEPORT does on
// Linux. FreeBSD's SO_REUSEPORT only lets them share the port.
func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT_LB, 1)
	}); err != nil {
		return err
	}
	return serr
}
