//go:build linux && !wsloop_portable

package engine

import "golang.org/x/sys/unix"

// setReadInterest sets what the epoll instance epfd watches on the socket
// fd: readable (and writable when outbound bytes wait, as gnet would have
// it), or only writable, or nothing, while reads are paused. gnet's
// pollers register level-triggered events carrying the descriptor; this
// keeps that form. EPOLLERR and EPOLLHUP are reported whatever is asked,
// so a peer that resets a paused connection is still seen.
func setReadInterest(epfd, fd int, read, write bool) error {
	var ev uint32
	if read {
		ev |= unix.EPOLLIN | unix.EPOLLPRI
	}
	if write {
		ev |= unix.EPOLLOUT
	}
	return unix.EpollCtl(epfd, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Fd: int32(fd), Events: ev})
}

// gnetRestoresRead is true where gnet's own interest changes (after a write
// that leaves bytes, after the outbound buffer drains) turn reading back on:
// epoll's are whole sets, so a paused connection is paused again after
// each (readpause.go).
const gnetRestoresRead = true
