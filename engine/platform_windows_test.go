package engine_test

import (
	"errors"
	"syscall"
)

// setFDLimit fails: Windows has no per-process descriptor limit (the tests
// that would lower it skip there).
func setFDLimit(uint64) error { return errors.New("Windows has no RLIMIT_NOFILE") }

// setRcvBuf sets the socket handle fd's receive buffer (SO_RCVBUF) to n
// bytes.
func setRcvBuf(fd uintptr, n int) error {
	return syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}
