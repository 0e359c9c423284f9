package handoff

import "golang.org/x/sys/unix"

// peerCred returns the credentials the kernel recorded for the peer of a
// connected Unix socket (LOCAL_PEERCRED). FreeBSD's xucred does not carry
// the pid in the version x/sys knows, so PID is 0.
func peerCred(fd int) (Peer, error) {
	x, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return Peer{}, err
	}
	return Peer{UID: int(x.Uid)}, nil
}

// recvmsg receives with MSG_CMSG_CLOEXEC: the descriptors arrive
// close-on-exec, so a successor this process starts later inherits none.
func recvmsg(fd int, p, oob []byte) (n, oobn, flags int, err error) {
	n, oobn, flags, _, err = unix.Recvmsg(fd, p, oob, unix.MSG_CMSG_CLOEXEC)
	return
}
