//go:build unix && !wsloop_portable

package engine

import (
	"net"
	"os"
	"syscall"
)

// bridgePair returns the two ends of a Unix-domain socketpair for bridge:
// loopEnd for an event loop, pumpEnd for the copying goroutines.
//
// Linux, macOS and the BSDs. SOCK_CLOEXEC exists on Linux and the BSDs but
// not on macOS, so the descriptors are marked close-on-exec under
// syscall.ForkLock, as the standard library does there: a child that
// os/exec starts meanwhile cannot inherit them. One road for every Unix;
// the flag would only save two system calls on a path that already costs
// two goroutines. Windows, and any system with the wsloop_portable tag,
// use pair_portable.go.
func bridgePair() (loopEnd, pumpEnd net.Conn, err error) {
	syscall.ForkLock.RLock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	loopEnd, err = fileConn(fds[0])
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, err
	}
	pumpEnd, err = fileConn(fds[1])
	if err != nil {
		loopEnd.Close()
		return nil, nil, err
	}
	return loopEnd, pumpEnd, nil
}
