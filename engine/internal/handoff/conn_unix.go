//go:build linux || darwin || freebsd

package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SocketName is the name of the Unix socket inside the handoff directory.
const SocketName = "handoff.sock"

// maxSocketPath is the longest socket path every supported platform binds
// (sun_path is 104 bytes on darwin and FreeBSD, 108 on Linux, NUL
// included).
const maxSocketPath = 103

// Conn is one end of the handoff socket.
type Conn struct {
	uc   *net.UnixConn
	rc   syscall.RawConn
	Peer Peer

	wmu sync.Mutex // one message at a time: header, descriptors and payload together
	oob []byte     // receive buffer for control messages, reader only
}

func newConn(uc *net.UnixConn) (*Conn, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &Conn{uc: uc, rc: rc, oob: make([]byte, unix.CmsgSpace(MaxFDs*4))}
	var perr error
	if err := rc.Control(func(fd uintptr) { c.Peer, perr = peerCred(int(fd)) }); err != nil {
		return nil, err
	}
	if perr != nil {
		return nil, fmt.Errorf("wsloop handoff: reading the peer's credentials: %w", perr)
	}
	return c, nil
}

// Close closes the socket.
func (c *Conn) Close() error { return c.uc.Close() }

// send writes one message. Descriptors ride on the header, in the same
// sendmsg, so that the receiver finds them with the header that counts
// them; the payload follows as plain bytes. It returns unix.ETOOMANYREFS
// unwrapped when the kernel refuses the descriptors for the ones this
// user already has in flight.
func (c *Conn) send(typ uint8, seq uint32, payload []byte, fds []int, corrupt bool) error {
	var h [headerSize]byte
	encodeHeader(&h, typ, len(fds), seq, payload)
	if corrupt && len(payload) > 0 {
		payload = append([]byte(nil), payload...)
		payload[len(payload)/2] ^= 0x5a
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(fds) > 0 {
		n, _, err := c.uc.WriteMsgUnix(h[:], unix.UnixRights(fds...), nil)
		if err != nil {
			var se *os.SyscallError
			if errors.As(err, &se) && se.Err == unix.ETOOMANYREFS {
				return unix.ETOOMANYREFS
			}
			return err
		}
		if n != headerSize {
			return io.ErrShortWrite
		}
	} else if _, err := c.uc.Write(h[:]); err != nil {
		return err
	}
	if len(payload) > 0 {
		if _, err := c.uc.Write(payload); err != nil {
			return err
		}
	}
	return nil
}

// msg is a received message.
type msg struct {
	header
	payload []byte
	fds     []int  // descriptors received with it, close-on-exec
	bad     string // why the message must be refused, "" if it arrived whole
}

// closeFDs closes the descriptors of m.
func (m *msg) closeFDs() {
	for _, fd := range m.fds {
		unix.Close(fd)
	}
	m.fds = nil
}

// recv reads one message. A message whose descriptors were cut short, whose
// count does not match its header or whose checksum fails is returned with
// bad set, its descriptors still to be closed by the caller; a stream that
// cannot be parsed any further is an error.
func (c *Conn) recv() (*msg, error) {
	var hb [headerSize]byte
	var n, oobn, flags int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		n, oobn, flags, rerr = recvmsg(int(fd), hb[:], c.oob)
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	m := &msg{}
	if oobn > 0 {
		m.fds = parseRights(c.oob[:oobn])
	}
	if err != nil {
		m.closeFDs()
		return nil, err
	}
	if n == 0 {
		m.closeFDs()
		return nil, io.EOF
	}
	if n < headerSize {
		// The header was sent in one sendmsg; what is missing is in
		// the same segment and carries no descriptors of its own.
		if _, err := io.ReadFull(c.uc, hb[n:]); err != nil {
			m.closeFDs()
			return nil, err
		}
	}
	h, err := decodeHeader(hb[:])
	if err != nil {
		m.closeFDs()
		return nil, err
	}
	m.header = h
	if h.length > 0 {
		m.payload = make([]byte, h.length)
		if _, err := io.ReadFull(c.uc, m.payload); err != nil {
			m.closeFDs()
			return nil, err
		}
	}
	switch {
	case flags&unix.MSG_CTRUNC != 0:
		m.bad = fmt.Sprintf("descriptors cut short (MSG_CTRUNC: %d of %d arrived; this process is at its descriptor limit)", len(m.fds), h.nfds)
	case len(m.fds) != int(h.nfds):
		m.bad = fmt.Sprintf("%d descriptors arrived, the header announced %d", len(m.fds), h.nfds)
	case checksum(hb[:], m.payload) != h.crc:
		m.bad = "checksum mismatch"
	}
	return m, nil
}

// parseRights returns the descriptors in a control message buffer.
func parseRights(oob []byte) []int {
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range cmsgs {
		if f, err := unix.ParseUnixRights(&cmsgs[i]); err == nil {
			fds = append(fds, f...)
		}
	}
	return fds
}

// setDeadline makes the socket's reads and writes give up when ctx does.
// It returns a function that undoes the link.
func (c *Conn) setDeadline(ctx context.Context) func() {
	if d, ok := ctx.Deadline(); ok {
		_ = c.uc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.uc.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		_ = c.uc.SetDeadline(time.Time{})
	}
}

// hello exchanges HELLOs and checks the peer's.
func (c *Conn) hello(ctx context.Context, version uint32) error {
	undo := c.setDeadline(ctx)
	defer undo()
	errc := make(chan error, 1)
	go func() { errc <- c.send(msgHello, 0, hello(version), nil, false) }()
	m, err := c.recv()
	if werr := <-errc; err == nil && werr != nil {
		err = werr
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("wsloop handoff: exchanging versions: %w", err)
	}
	m.closeFDs()
	if m.typ != msgHello || m.bad != "" {
		return &VersionError{NotAnEndpoint: true}
	}
	return checkHello(m.payload, version)
}

// checkDir makes sure dir is a directory only this user can enter: it is
// created with mode 0700 (the process umask can only narrow that, and no
// chmod follows), and an existing one must be owned by this user and
// closed to group and others.
func checkDir(dir string) error {
	if dir == "" {
		return errors.New("wsloop handoff: no directory given for the handoff socket")
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("wsloop handoff: creating the handoff directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("wsloop handoff: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("wsloop handoff: %s is not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("wsloop handoff: directory %s belongs to uid %d, not to this process's uid %d", dir, st.Uid, os.Geteuid())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("wsloop handoff: directory %s has mode %#o: group and others must have no access (use a directory of mode 0700)", dir, perm)
	}
	return nil
}

// umaskMu serializes the moments this package narrows the process umask.
var umaskMu sync.Mutex

// listen binds the handoff socket in dir. The socket is created under a
// umask of 0177, so it is never accessible to others, not even between
// bind and a chmod. (The umask is process-wide: a file another goroutine
// creates at that moment gets a narrower mode, never a wider one.)
func listen(dir string) (*net.UnixListener, error) {
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, SocketName)
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("wsloop handoff: socket path %s is %d bytes, longer than the %d a Unix socket allows: use a shorter directory", path, len(path), maxSocketPath)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("wsloop handoff: another process is handing off through %s", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("wsloop handoff: removing a stale socket: %w", err)
		}
	}
	umaskMu.Lock()
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("wsloop handoff: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	return ln, nil
}

// accept waits on ln for a successor with acceptable credentials, logging
// and dropping every other connection, until ctx is done.
func accept(ctx context.Context, ln *net.UnixListener, cfg *Config) (*Conn, error) {
	stop := context.AfterFunc(ctx, func() { _ = ln.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		_ = ln.SetDeadline(d)
	}
	log := cfg.logger()
	var lastLog time.Time
	suppressed := 0
	for {
		uc, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("wsloop handoff: no successor connected: %w", ctx.Err())
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, fmt.Errorf("wsloop handoff: no successor connected: %w", context.DeadlineExceeded)
			}
			return nil, fmt.Errorf("wsloop handoff: %w", err)
		}
		c, err := newConn(uc)
		if err != nil {
			uc.Close()
			log.Warn("wsloop: handoff: dropped a connection whose credentials could not be read", "err", err)
			continue
		}
		if !cfg.allowed(c.Peer) {
			// Nothing is written: a stranger learns nothing, not even
			// the protocol. The log is rate-limited: a local process
			// could connect in a loop.
			c.Close()
			if now := time.Now(); now.Sub(lastLog) >= time.Second {
				log.Warn("wsloop: handoff: refused a connection from a process of another user", "peer_uid", c.Peer.UID, "peer_pid", c.Peer.PID, "refused_since_last_log", suppressed)
				lastLog, suppressed = now, 0
			} else {
				suppressed++
			}
			continue
		}
		return c, nil
	}
}

// dial connects to the handoff socket in dir, retrying while the giver has
// not bound it yet, and checks the giver's credentials.
func dial(ctx context.Context, dir string, cfg *Config) (*Conn, error) {
	path := filepath.Join(dir, SocketName)
	var d net.Dialer
	for {
		nc, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			c, err := newConn(nc.(*net.UnixConn))
			if err != nil {
				nc.Close()
				return nil, err
			}
			if !cfg.allowed(c.Peer) {
				c.Close()
				cfg.logger().Warn("wsloop: handoff: the process at the handoff socket belongs to another user; not taking over", "path", path, "peer_uid", c.Peer.UID, "peer_pid", c.Peer.PID)
				return nil, fmt.Errorf("wsloop handoff: the process at %s has uid %d, which is not allowed", path, c.Peer.UID)
			}
			return c, nil
		}
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ECONNREFUSED) {
			return nil, fmt.Errorf("wsloop handoff: %w", err)
		}
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("wsloop handoff: no old process at %s: %w", path, ctx.Err())
		case <-t.C:
		}
	}
}
