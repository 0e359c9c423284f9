package handoff

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// peerCred returns the credentials the kernel recorded for the peer of a
// connected Unix socket (LOCAL_PEERCRED, and LOCAL_PEERPID for the pid).
func peerCred(fd int) (Peer, error) {
	x, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return Peer{}, err
	}
	p := Peer{UID: int(x.Uid)}
	if pid, err := unix.GetsockoptInt(fd, unix.SOL_LOCAL, unix.LOCAL_PEERPID); err == nil {
		p.PID = pid
	}
	return p, nil
}

// recvmsg receives descriptors and marks them close-on-exec. darwin has no
// MSG_CMSG_CLOEXEC, so it holds syscall.ForkLock as the standard library
// does around descriptor creation: no fork can happen between the receive
// and the flag.
func recvmsg(fd int, p, oob []byte) (n, oobn, flags int, err error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	n, oobn, flags, _, err = unix.Recvmsg(fd, p, oob, 0)
	if err == nil && oobn > 0 {
		for _, d := range parseRights(oob[:oobn]) {
			unix.CloseOnExec(d)
		}
	}
	return
}
