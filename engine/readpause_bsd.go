//go:build (darwin || dragonfly || freebsd || netbsd || openbsd) && !wsloop_portable

package engine

import "golang.org/x/sys/unix"

// setReadInterest turns the kqueue kq's read filter on the socket fd on or
// off. gnet touches only the write filter after registration, so write is
// its business and ignored here.
func setReadInterest(kq, fd int, read, _ bool) error {
	var flags uint16 = unix.EV_DISABLE
	if read {
		flags = unix.EV_ENABLE
	}
	ev := unix.Kevent_t{Filter: unix.EVFILT_READ}
	unix.SetKevent(&ev, fd, unix.EVFILT_READ, int(flags))
	_, err := unix.Kevent(kq, []unix.Kevent_t{ev}, nil, nil)
	return err
}

// gnetRestoresRead is false: kqueue filters are separate, and gnet changes
// only EVFILT_WRITE once a socket is registered.
const gnetRestoresRead = false
