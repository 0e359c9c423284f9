package servers

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"golang.org/x/sys/unix"
)

// gobwas/ws with a single epoll loop, the design of the "Going Infinite: 1M
// websockets" talk: connections are upgraded with ws.Upgrade in a short-lived
// goroutine, then registered with one epoll instance; one goroutine waits in
// epoll_wait and, for each readable connection, reads one message with
// wsutil.ReadClientData and writes the echo with wsutil.WriteServerMessage,
// inline. No goroutine is kept per connection. The known limit of the design
// stays visible: a connection that sends half a frame blocks the loop until
// the rest arrives. Broadcast compiles the frame once and writes it to every
// connection from the loop.
func init() {
	register(Info{
		Name: "gobwas", Module: "github.com/gobwas/ws", Version: "v1.5.0",
		Notes: "ws.Upgrade + one epoll goroutine (x/sys/unix), wsutil.ReadClientData/WriteServerMessage",
	}, runGobwas)
}

type gobwasServer struct {
	epfd int
	mu   sync.RWMutex
	fds  map[int]net.Conn
}

func runGobwas(addr string, set Settings, ready func()) error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	s := &gobwasServer{epfd: epfd, fds: make(map[int]net.Conn)}
	ln, err := listen(addr, set.ReusePort)
	if err != nil {
		return err
	}
	go s.loop()
	ready()
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			time.Sleep(5 * time.Millisecond) // EMFILE and friends
			continue
		}
		go s.upgrade(c)
	}
}

func (s *gobwasServer) upgrade(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := ws.Upgrade(c); err != nil {
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	fd := connFD(c)
	if fd < 0 {
		c.Close()
		return
	}
	s.mu.Lock()
	s.fds[fd] = c
	s.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP, Fd: int32(fd)}
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		s.drop(fd, c)
	}
}

func connFD(c net.Conn) int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	_ = rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

func (s *gobwasServer) drop(fd int, c net.Conn) {
	s.mu.Lock()
	if s.fds[fd] == c {
		delete(s.fds, fd)
	}
	s.mu.Unlock()
	_ = unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	c.Close()
}

func (s *gobwasServer) loop() {
	events := make([]unix.EpollEvent, 256)
	var snap []net.Conn
	for {
		n, err := unix.EpollWait(s.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			panic(err)
		}
		for i := 0; i < n; i++ {
			fd := int(events[i].Fd)
			s.mu.RLock()
			c := s.fds[fd]
			s.mu.RUnlock()
			if c == nil {
				continue
			}
			if events[i].Events&(unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 && events[i].Events&unix.EPOLLIN == 0 {
				s.drop(fd, c)
				continue
			}
			msg, op, err := wsutil.ReadClientData(c)
			if err != nil {
				s.drop(fd, c)
				continue
			}
			if rest, ok := isBroadcast(op == ws.OpText, msg); ok {
				frame, err := ws.CompileFrame(ws.NewTextFrame(rest))
				if err != nil {
					continue
				}
				s.mu.RLock()
				snap = snap[:0]
				for _, o := range s.fds {
					snap = append(snap, o)
				}
				s.mu.RUnlock()
				for _, o := range snap {
					_, _ = o.Write(frame)
				}
				clear(snap)
				continue
			}
			if err := wsutil.WriteServerMessage(c, op, msg); err != nil {
				s.drop(fd, c)
			}
		}
	}
}
