package main

import "syscall"

// setRcvBuf sets the socket handle fd's receive buffer (SO_RCVBUF) to n
// bytes.
func setRcvBuf(fd uintptr, n int) error {
	return syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}
