package handoff

import "golang.org/x/sys/unix"

// openPidfd returns a pidfd for pid (Linux 5.3 and later), or -1.
func openPidfd(pid int) int {
	if pid <= 0 {
		return -1
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1
	}
	unix.CloseOnExec(fd)
	return fd
}
