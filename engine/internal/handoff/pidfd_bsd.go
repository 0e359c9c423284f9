//go:build darwin || freebsd

package handoff

// openPidfd returns -1: there are no pidfds here, the pid is probed.
func openPidfd(int) int { return -1 }
