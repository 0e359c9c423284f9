//go:build unix

package engine_test

import "syscall"

// Test helpers for Linux, macOS and the BSDs; platform_windows_test.go
// has their Windows twins.

// setFDLimit lowers this process's soft RLIMIT_NOFILE to limit.
func setFDLimit(limit uint64) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	setRlim(&rl.Cur, limit)
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
}

// setRlim stores v in an rlimit field, whose type differs by system:
// uint64 on Linux and macOS, int64 on FreeBSD and DragonFly.
func setRlim[T int64 | uint64](f *T, v uint64) { *f = T(v) }

// setRcvBuf sets the socket fd's receive buffer (SO_RCVBUF) to n bytes.
func setRcvBuf(fd uintptr, n int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}
