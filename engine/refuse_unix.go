//go:build unix && !wsloop_portable

package engine

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// refuse answers a connection the server will not serve with resp and
// closes it, from the accepting goroutine: a refused socket holds its
// descriptor for no longer than this call. Whatever the client already
// sent is read first, so that the close does not turn into a reset that
// would destroy the response in flight.
//
// Linux, macOS and the BSDs: with raw calls on the non-blocking socket,
// so nothing here waits. Windows, and any system with the
// wsloop_portable tag, use refuse_portable.go.
func refuse(c net.Conn, resp []byte) {
	if rc, err := c.(syscall.Conn).SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			var buf [1024]byte
			for i := 0; i < 8; i++ {
				if n, err := unix.Read(int(fd), buf[:]); n <= 0 || err != nil {
					break
				}
			}
			_, _ = unix.Write(int(fd), resp) // a fresh socket's send buffer takes it whole
			_ = unix.Shutdown(int(fd), unix.SHUT_WR)
		})
	}
	_ = c.Close()
}
