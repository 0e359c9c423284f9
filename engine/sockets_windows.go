package engine

import (
	"syscall"

	"golang.org/x/sys/windows"
)

// Descriptors and sockets on Windows, the twins of sockets_unix.go. gnet
// serves each connection there with a goroutine of its own and a 64 KiB
// read buffer (its README: for development, not production), which is
// what the default connection cap below is sized for.

// windowsMaxConns is MaxConns' default on Windows, which has no
// RLIMIT_NOFILE to derive it from: sockets are bounded by memory, and each
// connection costs gnet a goroutine and its 64 KiB buffer, so 4096
// connections hold about 300 MiB there.
const windowsMaxConns = 4096

// defaultMaxConns ignores the reserve on Windows: there is no descriptor
// limit to keep it under.
func defaultMaxConns(reserve int) int { return windowsMaxConns }

// retryableErrno reports whether an accept failed for a reason that passes
// (acceptRetryable), in Winsock's numbers: out of buffers, sockets or
// memory, the peer gone before it was accepted (Go retries
// ERROR_NETNAME_DELETED and WSAECONNRESET itself; they are listed for
// the calls it does not), an interruption, or a timeout.
func retryableErrno(errno syscall.Errno) bool {
	switch errno {
	case windows.WSAEMFILE, windows.WSAENOBUFS, windows.ERROR_NOT_ENOUGH_MEMORY,
		windows.ERROR_OUTOFMEMORY, windows.ERROR_NO_SYSTEM_RESOURCES,
		windows.ERROR_TOO_MANY_OPEN_FILES,
		windows.WSAECONNABORTED, windows.WSAECONNRESET, windows.ERROR_NETNAME_DELETED,
		windows.ERROR_CONNECTION_ABORTED, windows.WSAENETRESET,
		windows.WSAEINTR, windows.WSAEWOULDBLOCK, windows.WSAETIMEDOUT:
		return true
	}
	return false
}

// twoDescriptorsFree is always true on Windows: there is no per-process
// descriptor limit to run into; running out of socket memory shows as
// WSAENOBUFS from accept, which pauses accepting as on Unix.
func twoDescriptorsFree(uintptr) bool { return true }

// shutdownWrite half-closes the socket handle fd (gnet's Conn.Fd on
// Windows returns the handle): the peer reads what was sent, then end of
// file, while this side can still read.
func shutdownWrite(fd int) error { return syscall.Shutdown(syscall.Handle(fd), syscall.SHUT_WR) }
