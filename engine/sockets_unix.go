//go:build unix

package engine

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Descriptors and sockets on Linux, macOS and the BSDs. Their twins for
// Windows are in sockets_windows.go.

// defaultMaxConns keeps reserve descriptors free under RLIMIT_NOFILE for
// everything else the process does: listeners, files, the second descriptor
// of a socket being adopted, a refused connection being answered.
func defaultMaxConns(reserve int) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 30
	}
	n := int(rl.Cur) - reserve
	if n < 1 {
		n = 1
	}
	return n
}

// retryableErrno reports whether an accept, or the dup that adoption
// makes, failed for a reason that passes (acceptRetryable): out of
// descriptors or memory, the peer gone before it was accepted, an
// interruption, or a firewall's refusal (EPERM on Linux).
func retryableErrno(errno syscall.Errno) bool {
	switch errno {
	case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM,
		unix.ECONNABORTED, unix.ECONNRESET, unix.EINTR, unix.EAGAIN,
		unix.EPERM, unix.EPROTO, unix.ETIMEDOUT:
		return true
	}
	return false
}

// twoDescriptorsFree reports whether the process can open two more
// descriptors now, by duplicating fd twice and closing the copies
// (descriptorHeadroom).
func twoDescriptorsFree(fd uintptr) bool {
	a, err := unix.Dup(int(fd))
	if err != nil {
		return false
	}
	defer unix.Close(a)
	b, err := unix.Dup(int(fd))
	if err != nil {
		return false
	}
	unix.Close(b)
	return true
}

// shutdownWrite half-closes the socket fd: the peer reads what was sent,
// then end of file, while this side can still read.
func shutdownWrite(fd int) error { return syscall.Shutdown(fd, syscall.SHUT_WR) }
