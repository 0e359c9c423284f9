//go:build unix

package main

import "syscall"

// setRcvBuf sets the socket fd's receive buffer (SO_RCVBUF) to n bytes.
// platform_windows_test.go has its Windows twin.
func setRcvBuf(fd uintptr, n int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}
