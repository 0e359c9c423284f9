package handoff

import "golang.org/x/sys/unix"

// peerCred returns the credentials the kernel recorded for the peer of a
// connected Unix socket (SO_PEERCRED: fixed at connect, not forgeable by
// the peer).
func peerCred(fd int) (Peer, error) {
	u, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return Peer{}, err
	}
	return Peer{UID: int(u.Uid), PID: int(u.Pid)}, nil
}

// recvmsg receives with MSG_CMSG_CLOEXEC: the descriptors arrive
// close-on-exec, so a successor this process starts later inherits none.
func recvmsg(fd int, p, oob []byte) (n, oobn, flags int, err error) {
	n, oobn, flags, _, err = unix.Recvmsg(fd, p, oob, unix.MSG_CMSG_CLOEXEC)
	return
}
