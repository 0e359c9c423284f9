// Package load is an event-loop WebSocket client for holding many
// connections cheaply: a few goroutines, each owning one epoll instance, drive
// every connection's non-blocking socket. There is no goroutine and no
// read buffer per connection; a connection costs its Conn struct and, only
// while a write is partially sent, the unsent bytes.
//
// The client does its own framing: masked client frames (RFC 6455 §5.3), the
// Sec-WebSocket-Accept check of the handshake, fragmented server messages,
// ping answers. Received payloads are handed to an [App] chunk by chunk so
// that they can be checked byte for byte without being assembled.
package load

import (
	"bytes"
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

// Frame opcodes used by the client.
const (
	OpCont   = 0x0
	OpText   = 0x1
	OpBinary = 0x2
	OpClose  = 0x8
	OpPing   = 0x9
	OpPong   = 0xA
)

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// App receives the events of the client's connections. All calls for one
// connection happen on that connection's loop goroutine.
type App interface {
	// Opened is called when the handshake has been verified.
	Opened(c *Conn)
	// Data is called with consecutive chunks of a data message; off is the
	// chunk's offset in the message. Returning false fails the connection
	// (a mismatch).
	Data(c *Conn, op byte, off int, chunk []byte) bool
	// Message is called when a data message of n bytes is complete.
	Message(c *Conn, op byte, n int)
}

// Conn states.
const (
	stConnecting = iota
	stHandshake
	stOpen
	stClosed
)

// Conn is one client connection. Its fields are owned by its loop.
type Conn struct {
	ID    int
	fd    int
	state uint8
	loop  *Loop

	hs []byte // partial handshake response, nil once open

	// frame parser state
	hdr       [14]byte
	hdrN      uint8
	inPayload bool
	ctlFrame  bool
	fin       bool
	frameOp   byte
	remain    int64
	msgOp     byte // 0 when no message is in progress
	msgOff    int
	ctl       []byte

	wbuf []byte // unsent bytes
	wOut bool   // EPOLLOUT registered

	// T0 and Seq are free for the App (send time, message counter).
	T0  int64
	Seq uint32
	// Open-loop echo (EchoApp in open mode): the connection's phase in the
	// schedule (ns after the schedule's start) and its next message to
	// send and to receive.
	phase        int64
	sendK, recvK int64
	// Tag accumulates the first bytes of a message for the App.
	Tag  [8]byte
	Recv uint32
}

// Config configures a [Client].
type Config struct {
	Target   netip.AddrPort // server address
	Host     string         // Host header; default Target
	Path     string         // request path; default "/"
	Sources  []netip.Addr   // source addresses, used round-robin
	Loops    int            // event loops; default 1
	Inflight int            // most connects/handshakes in flight; default 256
	// MaxInflight is the most SetInflight may allow later (a reconnect
	// storm); default Inflight.
	MaxInflight int
	MaxSize     int // largest message the App sends; default 64 KiB
	App         App
}

// Client owns the loops and the connection table.
type Client struct {
	cfg   Config
	loops []*Loop
	table []atomic.Pointer[Conn] // by fd
	start time.Time
	mono  int64 // CLOCK_MONOTONIC at start, ns: Now() + mono is an absolute timerfd time
	sem   chan struct{}
	// held is how many of sem's slots the dialing goroutine holds itself,
	// so that the handshakes in flight can be capped below cap(sem)
	// (SetInflight).
	held int
	seed uint64
	ids  int // connections dialed so far: the next connection's ID

	Opened       atomic.Int64
	Failed       atomic.Int64
	Closed       atomic.Int64 // connections that ended after opening
	Mismatches   atomic.Int64
	ProtoErrors  atomic.Int64
	firstErrMu   sync.Mutex
	firstErr     error
	handshakeMu  sync.Mutex
	handshakeLat []int64 // ns
	openedAt     []int64 // Now() when each handshake completed

	conns []*Conn
}

// Loop is one event loop goroutine and its epoll instance.
type Loop struct {
	c      *Client
	Index  int
	epfd   int
	evfd   int
	rbuf   []byte
	wbuf   []byte
	rng    uint64
	mu     sync.Mutex
	tasks  []func()
	spare  []func()
	Conns  []*Conn // connections of this loop, in dial order
	closed atomic.Bool
	hsLat  []int64
	tfd    int    // timerfd (CLOCK_MONOTONIC) for schedules, e.g. the open-loop echo
	timer  func() // runs on the loop when tfd fires
}

// New creates a client and starts its loops.
func New(cfg Config) (*Client, error) {
	if cfg.Loops <= 0 {
		cfg.Loops = 1
	}
	if cfg.Inflight <= 0 {
		cfg.Inflight = 256
	}
	if cfg.MaxInflight < cfg.Inflight {
		cfg.MaxInflight = cfg.Inflight
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = 64 << 10
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if cfg.Host == "" {
		cfg.Host = cfg.Target.String()
	}
	if len(cfg.Sources) == 0 {
		cfg.Sources = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	var rl unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
	size := int(rl.Cur) + 16
	if size < 1024 || size > 1<<22 {
		size = 1 << 16
	}
	c := &Client{cfg: cfg, table: make([]atomic.Pointer[Conn], size), start: time.Now(),
		sem: make(chan struct{}, cfg.MaxInflight), seed: uint64(time.Now().UnixNano()) | 1}
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	c.mono = ts.Nano() - int64(time.Since(c.start))
	c.SetInflight(cfg.Inflight)
	for i := 0; i < cfg.Loops; i++ {
		l, err := newLoop(c, i)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.loops = append(c.loops, l)
		go l.run()
	}
	return c, nil
}

// Now returns the client's monotonic clock in nanoseconds.
func (c *Client) Now() int64 { return int64(time.Since(c.start)) }

// Loops returns the loops.
func (c *Client) Loops() []*Loop { return c.loops }

// Conns returns every dialed connection in dial order.
func (c *Client) Conns() []*Conn { return c.conns }

// FirstError returns the first connection error seen, if any.
func (c *Client) FirstError() error {
	c.firstErrMu.Lock()
	defer c.firstErrMu.Unlock()
	return c.firstErr
}

func (c *Client) noteErr(err error) {
	c.firstErrMu.Lock()
	if c.firstErr == nil {
		c.firstErr = err
	}
	c.firstErrMu.Unlock()
}

// HandshakeLatencies returns the handshake latencies (connect to verified
// 101) recorded so far, in nanoseconds.
func (c *Client) HandshakeLatencies() []int64 {
	var all []int64
	for _, l := range c.loops {
		l.Exec(func() {})
	}
	c.handshakeMu.Lock()
	all = append(all, c.handshakeLat...)
	c.handshakeMu.Unlock()
	return all
}

// OpenedSince returns the handshake latencies and the completion times
// (Now()) of the handshakes completed after the first `from` ones.
func (c *Client) OpenedSince(from int) (lat, at []int64) {
	c.handshakeMu.Lock()
	defer c.handshakeMu.Unlock()
	if from > len(c.handshakeLat) {
		from = len(c.handshakeLat)
	}
	return append([]int64(nil), c.handshakeLat[from:]...), append([]int64(nil), c.openedAt[from:]...)
}

// HandshakesDone is how many handshakes have completed so far.
func (c *Client) HandshakesDone() int {
	c.handshakeMu.Lock()
	defer c.handshakeMu.Unlock()
	return len(c.handshakeLat)
}

// SetInflight caps the handshakes in flight at n (at most
// Config.MaxInflight) for the dials that follow. Call it from the dialing
// goroutine while no handshake is in flight.
func (c *Client) SetInflight(n int) {
	n = max(1, min(n, cap(c.sem)))
	for want := cap(c.sem) - n; c.held != want; {
		if c.held < want {
			c.sem <- struct{}{}
			c.held++
		} else {
			<-c.sem
			c.held--
		}
	}
}

// DropAll closes every connection at once with a reset (SO_LINGER 0), as
// a network failure or a client restart does, and forgets them: they are
// counted neither as failed nor as closed. It returns how many were open.
func (c *Client) DropAll() int {
	n := 0
	for _, l := range c.loops {
		l.Exec(func() {
			for _, cn := range l.Conns {
				if cn.state == stOpen {
					n++
				}
				l.drop(cn)
			}
			l.Conns = l.Conns[:0]
		})
	}
	c.conns = c.conns[:0]
	return n
}

// NextID returns the ID the next dialed connection should get: IDs stay
// unique across DropAll.
func (c *Client) NextID() int { return c.ids }

func newLoop(c *Client, i int) (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		return nil, err
	}
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	ev = unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(tfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, tfd, &ev); err != nil {
		return nil, err
	}
	return &Loop{c: c, Index: i, epfd: epfd, evfd: evfd, tfd: tfd, rbuf: make([]byte, 256<<10),
		wbuf: make([]byte, 14+c.cfg.MaxSize+64), rng: c.seed + uint64(i)*0x9E3779B97F4A7C15}, nil
}

// SetTimer makes f run on the loop at client time at (Now() units, ns);
// at <= 0 disarms it. Loop only; f replaces the previous one.
func (l *Loop) SetTimer(at int64, f func()) {
	l.timer = f
	var spec unix.ItimerSpec
	if at > 0 {
		spec.Value = unix.NsecToTimespec(at + l.c.mono)
	}
	_ = unix.TimerfdSettime(l.tfd, unix.TFD_TIMER_ABSTIME, &spec, nil)
}

// Exec runs f on the loop and waits for it to finish.
func (l *Loop) Exec(f func()) {
	done := make(chan struct{})
	l.Post(func() { f(); close(done) })
	<-done
}

// Post queues f to run on the loop.
func (l *Loop) Post(f func()) {
	l.mu.Lock()
	l.tasks = append(l.tasks, f)
	l.mu.Unlock()
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(l.evfd, one[:])
}

// Close stops the loops and resets every connection (SO_LINGER 0, so no
// TIME_WAIT is left behind on the shared source ports).
func (c *Client) Close() {
	for _, l := range c.loops {
		l.Exec(func() {
			for _, cn := range l.Conns {
				if cn.state != stClosed {
					cn.state = stClosed
					unix.Close(cn.fd)
				}
			}
			l.closed.Store(true)
		})
	}
}

func (l *Loop) run() {
	events := make([]unix.EpollEvent, 512)
	for !l.closed.Load() {
		n, err := unix.EpollWait(l.epfd, events, 1000)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			panic(err)
		}
		for i := 0; i < n; i++ {
			fd := int(events[i].Fd)
			if fd == l.evfd {
				var b [8]byte
				_, _ = unix.Read(l.evfd, b[:])
				l.runTasks()
				continue
			}
			if fd == l.tfd {
				var b [8]byte
				_, _ = unix.Read(l.tfd, b[:])
				if l.timer != nil {
					l.timer()
				}
				continue
			}
			cn := l.c.table[fd].Load()
			if cn == nil || cn.state == stClosed {
				continue
			}
			ev := events[i].Events
			if ev&unix.EPOLLOUT != 0 {
				l.writable(cn)
			}
			if ev&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) != 0 && cn.state != stClosed {
				l.readable(cn)
			}
		}
	}
	unix.Close(l.epfd)
	unix.Close(l.evfd)
	unix.Close(l.tfd)
}

func (l *Loop) runTasks() {
	l.mu.Lock()
	t := l.tasks
	l.tasks = l.spare[:0]
	l.mu.Unlock()
	for i, f := range t {
		f()
		t[i] = nil
	}
	l.spare = t
}

// Dial opens connection number id (non-blocking) on loop id % loops. It
// blocks while Inflight handshakes are in progress.
func (c *Client) Dial(id int) error {
	c.sem <- struct{}{}
	c.ids = max(c.ids, id+1)
	l := c.loops[id%len(c.loops)]
	src := c.cfg.Sources[id%len(c.cfg.Sources)]
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		<-c.sem
		c.Failed.Add(1)
		c.noteErr(fmt.Errorf("socket: %w", err))
		return err
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
		unix.Close(fd)
		<-c.sem
		c.Failed.Add(1)
		c.noteErr(fmt.Errorf("bind %v: %w", src, err))
		return err
	}
	if fd >= len(c.table) {
		unix.Close(fd)
		<-c.sem
		c.Failed.Add(1)
		return errors.New("fd table full")
	}
	// Every field the loop reads is set before the table publishes cn (an
	// atomic store): the loop finds cn through the table once epoll reports
	// the socket, and the race detector cannot see that ordering through
	// the kernel. wOut: the socket is registered for EPOLLOUT below.
	cn := &Conn{ID: id, fd: fd, loop: l, state: stConnecting, T0: c.Now(), wOut: true}
	c.conns = append(c.conns, cn)
	c.table[fd].Store(cn)
	l.Post(func() { l.Conns = append(l.Conns, cn) })
	err = unix.Connect(fd, &unix.SockaddrInet4{Addr: c.cfg.Target.Addr().As4(), Port: int(c.cfg.Target.Port())})
	if err != nil && err != unix.EINPROGRESS {
		c.table[fd].Store(nil)
		unix.Close(fd)
		cn.state = stClosed
		<-c.sem
		c.Failed.Add(1)
		c.noteErr(fmt.Errorf("connect: %w", err))
		return err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		c.table[fd].Store(nil)
		unix.Close(fd)
		cn.state = stClosed
		<-c.sem
		c.Failed.Add(1)
		return err
	}
	return nil
}

// fail closes a connection after an error.
func (l *Loop) fail(cn *Conn, err error) {
	was, ok := l.closeConn(cn)
	if !ok {
		return
	}
	if was == stOpen {
		l.c.Closed.Add(1)
	} else {
		l.c.Failed.Add(1)
	}
	if err != nil {
		l.c.noteErr(fmt.Errorf("conn %d: %w", cn.ID, err))
	}
}

// drop closes a connection for DropAll, counting it nowhere; a handshake
// in flight gives its slot back.
func (l *Loop) drop(cn *Conn) { l.closeConn(cn) }

// closeConn closes a connection's socket and forgets it; a handshake in
// flight gives its slot back. It returns the state the connection was in,
// and false if it was closed already.
func (l *Loop) closeConn(cn *Conn) (was uint8, ok bool) {
	if cn.state == stClosed {
		return cn.state, false
	}
	was = cn.state
	cn.state = stClosed
	l.c.table[cn.fd].Store(nil)
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, cn.fd, nil)
	unix.Close(cn.fd)
	cn.wbuf, cn.hs, cn.ctl = nil, nil, nil
	if was != stOpen {
		<-l.c.sem
	}
	return was, true
}

// IsOpen reports whether the connection completed its handshake and is
// still open.
func (cn *Conn) IsOpen() bool { return cn.state == stOpen }

func (l *Loop) key(cn *Conn) []byte {
	var raw [16]byte
	binary.LittleEndian.PutUint64(raw[:8], l.c.seed^uint64(cn.ID)*0x9E3779B97F4A7C15)
	binary.LittleEndian.PutUint64(raw[8:], uint64(cn.fd)<<32|uint64(cn.ID))
	out := make([]byte, 24)
	base64.StdEncoding.Encode(out, raw[:])
	return out
}

func (l *Loop) writable(cn *Conn) {
	if cn.state == stConnecting {
		errno, err := unix.GetsockoptInt(cn.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && errno != 0 {
			err = unix.Errno(errno)
		}
		if err != nil {
			l.fail(cn, fmt.Errorf("connect: %w", err))
			return
		}
		cn.state = stHandshake
		req := l.wbuf[:0]
		req = append(req, "GET "...)
		req = append(req, l.c.cfg.Path...)
		req = append(req, " HTTP/1.1\r\nHost: "...)
		req = append(req, l.c.cfg.Host...)
		req = append(req, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "...)
		req = append(req, l.key(cn)...)
		req = append(req, "\r\n\r\n"...)
		l.send(cn, req)
		if !cn.wOut || len(cn.wbuf) == 0 {
			l.setOut(cn, false)
		}
		return
	}
	for len(cn.wbuf) > 0 {
		n, err := unix.Write(cn.fd, cn.wbuf)
		if err == unix.EAGAIN {
			return
		}
		if err != nil {
			l.fail(cn, err)
			return
		}
		cn.wbuf = cn.wbuf[n:]
	}
	cn.wbuf = nil
	l.setOut(cn, false)
}

func (l *Loop) setOut(cn *Conn, on bool) {
	if cn.wOut == on || cn.state == stClosed {
		return
	}
	cn.wOut = on
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(cn.fd)}
	if on {
		ev.Events |= unix.EPOLLOUT
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, cn.fd, &ev); err != nil {
		l.fail(cn, err)
	}
}

// send writes b (which may be the loop's scratch buffer) and keeps what the
// socket does not take.
func (l *Loop) send(cn *Conn, b []byte) {
	if cn.state == stClosed {
		return
	}
	if len(cn.wbuf) > 0 {
		cn.wbuf = append(cn.wbuf, b...)
		return
	}
	for len(b) > 0 {
		n, err := unix.Write(cn.fd, b)
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			l.fail(cn, err)
			return
		}
		b = b[n:]
	}
	if len(b) > 0 {
		cn.wbuf = append([]byte(nil), b...)
		l.setOut(cn, true)
	}
}

func (l *Loop) rand32() uint32 {
	l.rng ^= l.rng << 13
	l.rng ^= l.rng >> 7
	l.rng ^= l.rng << 17
	return uint32(l.rng >> 16)
}

// SendFunc builds a masked frame with an n-byte payload written by fill
// (into the slice it is given) and sends it. fill is called once.
func (l *Loop) SendFunc(cn *Conn, op byte, n int, fill func(p []byte)) {
	if cn.state != stOpen {
		return
	}
	if n > len(l.wbuf)-14 {
		l.wbuf = make([]byte, 14+n)
	}
	b := l.wbuf[:0]
	b = append(b, 0x80|op)
	switch {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	key := l.rand32()
	b = binary.LittleEndian.AppendUint32(b, key)
	h := len(b)
	b = b[:h+n]
	fill(b[h:])
	Mask(key, b[h:])
	l.send(cn, b)
}

// Send sends payload as one masked frame.
func (l *Loop) Send(cn *Conn, op byte, payload []byte) {
	l.SendFunc(cn, op, len(payload), func(p []byte) { copy(p, payload) })
}

// Mask XORs b with the 4-byte mask key (key's little-endian bytes, as they
// appear on the wire).
func Mask(key uint32, b []byte) {
	k := uint64(key) | uint64(key)<<32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		v := binary.LittleEndian.Uint64(b[i:])
		binary.LittleEndian.PutUint64(b[i:], v^k)
	}
	var kb [4]byte
	binary.LittleEndian.PutUint32(kb[:], key)
	for ; i < len(b); i++ {
		b[i] ^= kb[i&3]
	}
}

func (l *Loop) readable(cn *Conn) {
	for cn.state != stClosed {
		n, err := unix.Read(cn.fd, l.rbuf)
		if err == unix.EAGAIN {
			return
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			l.fail(cn, err)
			return
		}
		if n == 0 {
			l.fail(cn, errors.New("server closed the connection"))
			return
		}
		l.input(cn, l.rbuf[:n])
		if n < len(l.rbuf) {
			return
		}
	}
}

func (l *Loop) input(cn *Conn, b []byte) {
	if cn.state == stHandshake {
		var rest []byte
		var ok bool
		if rest, ok = l.handshake(cn, b); !ok {
			return
		}
		b = rest
	}
	if cn.state == stOpen && len(b) > 0 {
		l.frames(cn, b)
	}
}

func (l *Loop) handshake(cn *Conn, b []byte) ([]byte, bool) {
	buf := b
	if len(cn.hs) > 0 {
		cn.hs = append(cn.hs, b...)
		buf = cn.hs
	}
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		if len(buf) > 8192 {
			l.fail(cn, errors.New("handshake response too long"))
			return nil, false
		}
		if len(cn.hs) == 0 {
			cn.hs = append([]byte(nil), b...)
		}
		return nil, false
	}
	head := buf[:end+2]
	rest := buf[end+4:]
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) {
		line, _, _ := bytes.Cut(head, []byte("\r\n"))
		l.fail(cn, fmt.Errorf("handshake: %q", line))
		return nil, false
	}
	sum := sha1.Sum(append(l.key(cn), wsGUID...))
	want := base64.StdEncoding.EncodeToString(sum[:])
	got, found := headerValue(head, "sec-websocket-accept")
	if !found || got != want {
		l.fail(cn, fmt.Errorf("bad Sec-WebSocket-Accept %q, want %q", got, want))
		return nil, false
	}
	if len(cn.hs) > 0 {
		rest = append([]byte(nil), rest...)
	}
	cn.hs = nil
	cn.state = stOpen
	now := l.c.Now()
	lat := now - cn.T0
	l.c.handshakeMu.Lock()
	l.c.handshakeLat = append(l.c.handshakeLat, lat)
	l.c.openedAt = append(l.c.openedAt, now)
	l.c.handshakeMu.Unlock()
	l.c.Opened.Add(1)
	<-l.c.sem
	l.c.cfg.App.Opened(cn)
	return rest, cn.state == stOpen
}

func headerValue(head []byte, name string) (string, bool) {
	for _, line := range bytes.Split(head, []byte("\r\n"))[1:] {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && string(bytes.ToLower(bytes.TrimSpace(k))) == name {
			return string(bytes.TrimSpace(v)), true
		}
	}
	return "", false
}

func headerLen(b0, b1 byte) int {
	n := 2
	switch b1 & 0x7F {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

func (l *Loop) frames(cn *Conn, b []byte) {
	app := l.c.cfg.App
	for len(b) > 0 && cn.state == stOpen {
		if !cn.inPayload {
			var h []byte
			if cn.hdrN == 0 && len(b) >= 2 && len(b) >= headerLen(b[0], b[1]) {
				n := headerLen(b[0], b[1])
				h, b = b[:n], b[n:]
			} else {
				cn.hdr[cn.hdrN] = b[0]
				cn.hdrN++
				b = b[1:]
				if cn.hdrN < 2 || int(cn.hdrN) < headerLen(cn.hdr[0], cn.hdr[1]) {
					continue
				}
				h = cn.hdr[:cn.hdrN]
				cn.hdrN = 0
			}
			if !l.header(cn, h) {
				return
			}
			if cn.remain > 0 {
				continue
			}
		} else {
			take := len(b)
			if int64(take) > cn.remain {
				take = int(cn.remain)
			}
			chunk := b[:take]
			b = b[take:]
			cn.remain -= int64(take)
			if cn.ctlFrame {
				cn.ctl = append(cn.ctl, chunk...)
			} else {
				if !app.Data(cn, cn.msgOp, cn.msgOff, chunk) {
					l.c.Mismatches.Add(1)
					l.fail(cn, errors.New("echo mismatch"))
					return
				}
				cn.msgOff += take
			}
			if cn.remain > 0 {
				continue
			}
		}
		// frame complete
		cn.inPayload = false
		if cn.ctlFrame {
			l.control(cn)
			continue
		}
		if cn.fin {
			op, n := cn.msgOp, cn.msgOff
			cn.msgOp, cn.msgOff = 0, 0
			app.Message(cn, op, n)
		}
	}
}

func (l *Loop) header(cn *Conn, h []byte) bool {
	fin := h[0]&0x80 != 0
	op := h[0] & 0x0F
	if h[0]&0x70 != 0 || h[1]&0x80 != 0 {
		l.c.ProtoErrors.Add(1)
		l.fail(cn, fmt.Errorf("unexpected frame header % x (RSV or mask set)", h))
		return false
	}
	var n int64
	switch h[1] & 0x7F {
	case 126:
		n = int64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		n = int64(binary.BigEndian.Uint64(h[2:]))
	default:
		n = int64(h[1] & 0x7F)
	}
	cn.fin, cn.frameOp, cn.remain, cn.inPayload = fin, op, n, true
	cn.ctlFrame = op&0x8 != 0
	switch {
	case cn.ctlFrame:
		if !fin || n > 125 {
			l.c.ProtoErrors.Add(1)
			l.fail(cn, errors.New("bad control frame"))
			return false
		}
		cn.ctl = cn.ctl[:0]
	case op == OpCont:
		if cn.msgOp == 0 {
			l.c.ProtoErrors.Add(1)
			l.fail(cn, errors.New("continuation without a message"))
			return false
		}
	case op == OpText || op == OpBinary:
		if cn.msgOp != 0 {
			l.c.ProtoErrors.Add(1)
			l.fail(cn, errors.New("new message inside a fragmented one"))
			return false
		}
		cn.msgOp, cn.msgOff = op, 0
	default:
		l.c.ProtoErrors.Add(1)
		l.fail(cn, fmt.Errorf("reserved opcode %d", op))
		return false
	}
	return true
}

func (l *Loop) control(cn *Conn) {
	switch cn.frameOp {
	case OpPing:
		p := append([]byte(nil), cn.ctl...)
		l.Send(cn, OpPong, p)
	case OpClose:
		l.fail(cn, fmt.Errorf("server sent close % x", cn.ctl))
	}
}
