//go:build linux || darwin || freebsd

package handoff

import (
	"time"

	"golang.org/x/sys/unix"
)

// procWatch tells whether a peer process has exited.
type procWatch struct {
	pid   int
	pidfd int // Linux: a pidfd opened while the peer was connected, or -1
}

// watchPeer starts watching p's process. On Linux a pidfd, opened while
// the peer is connected to us (so it is the right process), becomes
// readable when it exits, zombie or not; elsewhere its pid is probed.
func watchPeer(p Peer) *procWatch {
	return &procWatch{pid: p.PID, pidfd: openPidfd(p.PID)}
}

// exitedWithin reports whether the process exits within d. A process that
// closed its end of the socket while dying is still exiting for a moment,
// so the answer waits for it; a live one costs the whole of d.
func (w *procWatch) exitedWithin(d time.Duration) bool {
	if w.pid <= 0 {
		return false // the platform did not say who it was: assume alive
	}
	if w.pidfd >= 0 {
		fds := []unix.PollFd{{Fd: int32(w.pidfd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, int(d/time.Millisecond))
			if err == unix.EINTR {
				continue
			}
			return err == nil && n > 0
		}
	}
	deadline := time.Now().Add(d)
	for {
		if err := unix.Kill(w.pid, 0); err == unix.ESRCH {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond) // polling a pid: there is nothing to wait on
	}
}

func (w *procWatch) close() {
	if w.pidfd >= 0 {
		unix.Close(w.pidfd)
		w.pidfd = -1
	}
}
