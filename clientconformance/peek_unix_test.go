//go:build unix

package clientconformance

import "syscall"

// socketClosed reports whether a zero-byte read or an error waits in the
// socket, with a non-blocking peek that leaves any data where it is.
func (sc *serverConn) socketClosed() bool {
	rc, err := sc.c.(syscall.Conn).SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	_ = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = n == 0 && err == nil || err != nil && err != syscall.EAGAIN
		return true // never wait for readiness
	})
	return closed
}
