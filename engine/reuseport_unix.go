//go:build linux || darwin || dragonfly || netbsd || openbsd

package engine

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort sets SO_REUSEPORT on a listening socket before it binds. Linux
// and DragonFly BSD spread new connections over the sockets bound to one
// port; macOS, NetBSD and OpenBSD let them share the port but hand the
// connections to one of them (see Options.ReusePort).
func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}
