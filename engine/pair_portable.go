//go:build windows || wsloop_portable

package engine

import (
	"errors"
	"net"
	"time"
)

// pairTimeout bounds the wait for the pair's own connection to be
// accepted; over loopback it is queued before the dial returns.
const pairTimeout = 5 * time.Second

// bridgePair returns the two ends of a TCP connection over loopback for
// bridge: loopEnd for an event loop, pumpEnd for the copying goroutines.
//
// Windows has no socketpair, and gnet adopts only TCP, Unix and UDP
// sockets, so the pair is made the way a socketpair is emulated there: a
// listener on a free loopback port that lives only while the pair is
// made. Another local process could connect to that port in the meantime,
// so an accepted connection is kept only if its address is the one
// dialed; any other is closed. Any system with the wsloop_portable tag
// takes this road too, which is how Linux tests it. Elsewhere: pair_unix.go.
func bridgePair() (loopEnd, pumpEnd net.Conn, err error) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		ln, err = net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv6loopback}) // a host without IPv4
	}
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	d, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		return nil, nil, err
	}
	if err := ln.SetDeadline(socketDeadline(pairTimeout)); err != nil {
		d.Close()
		return nil, nil, err
	}
	for range 8 {
		a, err := ln.AcceptTCP()
		if err != nil {
			d.Close()
			return nil, nil, err
		}
		if a.RemoteAddr().String() == d.LocalAddr().String() {
			return a, d, nil
		}
		a.Close() // not ours
	}
	d.Close()
	return nil, nil, errPairTaken
}

// errPairTaken: other connections kept reaching the pair's listener first.
var errPairTaken = errors.New("wsloop: bridge: the loopback pair's listener was taken by other connections")
