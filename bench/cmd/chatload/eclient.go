package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// eclient holds a worker's connections on one epoll loop: no goroutine and
// no read buffer per member, so the client processes spend their CPU on
// reading the deliveries, not on scheduling, and leave the rest to the
// server they share the machine with.
type eclient struct {
	w     *worker
	epfd  int
	table []atomic.Pointer[econn] // by fd
	rbuf  []byte
}

// Connection states.
const (
	ecConnecting = iota
	ecHandshake
	ecOpen
	ecClosed
)

// econn is one member's socket. Its fields are the loop's, except wmu,
// which orders the writes of the loop (pongs) and of the sender.
type econn struct {
	m     *wmember
	fd    int
	state int
	req   []byte
	key   string
	hs    []byte // a partial handshake response
	in    []byte // a partial frame
	ready chan error
	wmu   sync.Mutex
}

func newEclient(w *worker) (*eclient, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	var rl unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
	size := min(max(int(rl.Cur)+16, 1024), 1<<20)
	c := &eclient{w: w, epfd: epfd, table: make([]atomic.Pointer[econn], size), rbuf: make([]byte, 256<<10)}
	go c.loop()
	return c, nil
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// dial opens member m's connection to addr from src and waits for the
// handshake.
func (c *eclient) dial(m *wmember, addr netip.AddrPort, src netip.Addr, path, host string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	if fd >= len(c.table) {
		unix.Close(fd)
		return errors.New("descriptor table full")
	}
	// The source port is picked at connect time, per destination, so each
	// source address offers its whole port range.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("bind %v: %w", src, err)
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	key := base64.StdEncoding.EncodeToString(raw[:])
	cn := &econn{m: m, fd: fd, key: key, ready: make(chan error, 1),
		req: []byte("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + "\r\n\r\n")}
	m.ec = cn
	c.table[fd].Store(cn)
	err = unix.Connect(fd, &unix.SockaddrInet4{Addr: addr.Addr().As4(), Port: int(addr.Port())})
	if err != nil && err != unix.EINPROGRESS {
		c.table[fd].Store(nil)
		unix.Close(fd)
		return fmt.Errorf("connect: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP, Fd: int32(fd)}
	if err := unix.EpollCtl(c.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		c.table[fd].Store(nil)
		unix.Close(fd)
		return err
	}
	select {
	case err := <-cn.ready:
		return err
	case <-time.After(30 * time.Second):
		return errors.New("handshake timed out")
	}
}

func (c *eclient) loop() {
	events := make([]unix.EpollEvent, 512)
	for {
		n, err := unix.EpollWait(c.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			panic(err)
		}
		now := time.Now().UnixNano()
		for _, ev := range events[:n] {
			cn := c.table[ev.Fd].Load()
			if cn == nil || cn.state == ecClosed {
				continue
			}
			if ev.Events&unix.EPOLLOUT != 0 && cn.state == ecConnecting {
				c.connected(cn)
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 && cn.state != ecClosed && cn.state != ecConnecting {
				c.readable(cn, now)
			}
		}
	}
}

// connected sends the upgrade request once the connect completed.
func (c *eclient) connected(cn *econn) {
	errno, err := unix.GetsockoptInt(cn.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && errno != 0 {
		err = unix.Errno(errno)
	}
	if err == nil {
		err = cn.write(cn.req)
	}
	if err != nil {
		c.fail(cn, fmt.Errorf("connect: %w", err))
		return
	}
	cn.state, cn.req = ecHandshake, nil
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(cn.fd)}
	if err := unix.EpollCtl(c.epfd, unix.EPOLL_CTL_MOD, cn.fd, &ev); err != nil {
		c.fail(cn, err)
	}
}

func (c *eclient) fail(cn *econn, err error) {
	if cn.state == ecClosed {
		return
	}
	was := cn.state
	cn.state = ecClosed
	_ = unix.EpollCtl(c.epfd, unix.EPOLL_CTL_DEL, cn.fd, nil)
	c.table[cn.fd].Store(nil)
	unix.Close(cn.fd)
	if was == ecOpen {
		c.w.closed(cn.m, err)
	} else {
		cn.ready <- err
	}
}

func (c *eclient) readable(cn *econn, now int64) {
	for cn.state != ecClosed {
		n, err := unix.Read(cn.fd, c.rbuf)
		if err == unix.EAGAIN {
			return
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			c.fail(cn, err)
			return
		}
		if n == 0 {
			c.fail(cn, errors.New("server closed the connection"))
			return
		}
		data := c.rbuf[:n]
		if cn.state == ecHandshake {
			var ok bool
			if data, ok = c.handshake(cn, data); !ok {
				return
			}
		}
		c.frames(cn, data, now)
		if n < len(c.rbuf) {
			return
		}
	}
}

// handshake consumes the 101 response and returns the bytes after it.
func (c *eclient) handshake(cn *econn, data []byte) ([]byte, bool) {
	cn.hs = append(cn.hs, data...)
	end := bytes.Index(cn.hs, []byte("\r\n\r\n"))
	if end < 0 {
		if len(cn.hs) > 16<<10 {
			c.fail(cn, errors.New("handshake response too long"))
		}
		return nil, false
	}
	head, rest := cn.hs[:end], cn.hs[end+4:]
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) {
		line, _, _ := bytes.Cut(head, []byte("\r\n"))
		c.fail(cn, fmt.Errorf("handshake: %q", line))
		return nil, false
	}
	sum := sha1.Sum([]byte(cn.key + wsGUID))
	want := base64.StdEncoding.EncodeToString(sum[:])
	accepted := false
	for _, line := range bytes.Split(head, []byte("\r\n"))[1:] {
		k, v, _ := bytes.Cut(line, []byte(":"))
		if bytes.EqualFold(bytes.TrimSpace(k), []byte("Sec-WebSocket-Accept")) {
			accepted = string(bytes.TrimSpace(v)) == want
		}
	}
	if !accepted {
		c.fail(cn, errors.New("bad Sec-WebSocket-Accept"))
		return nil, false
	}
	rest = bytes.Clone(rest)
	cn.hs = nil
	cn.state = ecOpen
	cn.ready <- nil
	return rest, true
}

// frames parses the server's frames (unmasked; fragments reassembled).
func (c *eclient) frames(cn *econn, data []byte, now int64) {
	buf := data
	if len(cn.in) > 0 {
		cn.in = append(cn.in, data...)
		buf = cn.in
	}
	for cn.state == ecOpen && len(buf) >= 2 {
		b0, b1 := buf[0], buf[1]
		if b1&0x80 != 0 || b0&0x70 != 0 {
			c.fail(cn, fmt.Errorf("bad frame header % x", buf[:2]))
			return
		}
		n, hl := int(b1&0x7f), 2
		switch n {
		case 126:
			if len(buf) < 4 {
				break
			}
			n, hl = int(binary.BigEndian.Uint16(buf[2:])), 4
		case 127:
			if len(buf) < 10 {
				break
			}
			n, hl = int(binary.BigEndian.Uint64(buf[2:])), 10
		}
		if hl == 2 && b1&0x7f >= 126 || len(buf) < hl+n {
			break // incomplete
		}
		payload := buf[hl : hl+n]
		buf = buf[hl+n:]
		switch op := b0 & 0x0f; op {
		case 0x9: // ping
			_ = cn.send(0xA, bytes.Clone(payload))
		case 0xA:
		case 0x8:
			code := 0
			if len(payload) >= 2 {
				code = int(binary.BigEndian.Uint16(payload))
			}
			c.fail(cn, fmt.Errorf("server closed with %d %q", code, payload[min(2, len(payload)):]))
			return
		default:
			m := cn.m
			if b0&0x80 == 0 || m.msg != nil {
				m.msg = append(m.msg, payload...)
				if b0&0x80 == 0 {
					continue
				}
				payload, m.msg = m.msg, nil
			}
			c.w.message(m, payload, now)
		}
	}
	if cn.state == ecOpen {
		cn.in = append(cn.in[:0], buf...)
		if len(cn.in) == 0 && cap(cn.in) > 64<<10 {
			cn.in = nil
		}
	}
}

// send writes one masked frame, waiting while the socket is full.
func (cn *econn) send(op byte, payload []byte) error {
	frame := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		frame = append(frame, 0x80|byte(n))
	case n <= 0xffff:
		frame = append(frame, 0x80|126, byte(n>>8), byte(n))
	default:
		frame = append(frame, 0x80|127)
		frame = binary.BigEndian.AppendUint64(frame, uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	frame = append(frame, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i&3])
	}
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	return cn.write(frame)
}

// write writes b whole on the non-blocking socket.
func (cn *econn) write(b []byte) error {
	deadline := time.Now().Add(10 * time.Second)
	for len(b) > 0 {
		n, err := unix.Write(cn.fd, b)
		if err == unix.EAGAIN {
			if time.Now().After(deadline) {
				return errors.New("write stalled")
			}
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
