package load

import (
	"sync/atomic"
	"time"

	"github.com/wsloop/wsloop/bench/internal/hist"
)

// Template returns the filler every payload is cut from: printable ASCII
// (so text messages are valid UTF-8) with a period that no payload size
// used here divides.
func Template(n int) []byte {
	t := make([]byte, n)
	x := uint32(2463534242)
	for i := range t {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		t[i] = 'A' + byte(x%58) // 'A'..'z', printable
	}
	return t
}

const tagLen = 8

// rot chooses where in the template a message's filler starts, so that
// consecutive messages differ and a stale or misrouted echo is caught.
func rot(seq uint32) int { return int(seq % 251) }

// EchoApp sends binary messages of Size bytes and checks each echo byte for
// byte: the first 8 bytes are the connection id and the sequence number,
// the rest comes from the template at an offset given by the sequence.
type EchoApp struct {
	Client *Client
	Size   int
	tmpl   []byte

	// Continuous makes every echo trigger the next message (closed loop).
	Continuous atomic.Bool
	Measuring  atomic.Bool
	Stopping   atomic.Bool

	Stats []EchoLoopStats // by loop index, owned by the loop

	Replies    atomic.Int64 // echoes received while not continuous
	BadReplies atomic.Int64

	open *openSchedule // open-loop mode when set (set before any send)
}

// EchoLoopStats is one loop's share of an echo measurement.
type EchoLoopStats struct {
	Msgs        int64
	Outstanding int64
	Late        int64 // open loop: sends more than 1 ms behind their schedule
	Hist        hist.H
}

// NewEchoApp returns an echo app for messages of size bytes (at least 8).
func NewEchoApp(size, loops int) *EchoApp {
	if size < tagLen {
		size = tagLen
	}
	return &EchoApp{Size: size, tmpl: Template(size + 512), Stats: make([]EchoLoopStats, loops)}
}

func (a *EchoApp) fill(c *Conn) func(p []byte) {
	return func(p []byte) {
		putTag(p, uint32(c.ID), c.Seq)
		r := rot(c.Seq)
		copy(p[tagLen:], a.tmpl[r+tagLen:r+len(p)])
	}
}

func putTag(p []byte, id, seq uint32) {
	p[0], p[1], p[2], p[3] = byte(id), byte(id>>8), byte(id>>16), byte(id>>24)
	p[4], p[5], p[6], p[7] = byte(seq), byte(seq>>8), byte(seq>>16), byte(seq>>24)
}

// SendOne sends the connection's next message. Loop only.
func (a *EchoApp) SendOne(c *Conn) {
	if !c.IsOpen() {
		return
	}
	c.T0 = a.Client.Now()
	a.Stats[c.loop.Index].Outstanding++
	c.loop.SendFunc(c, OpBinary, a.Size, a.fill(c))
}

// Opened implements App.
func (a *EchoApp) Opened(c *Conn) {
	if a.Continuous.Load() && !a.Stopping.Load() {
		a.SendOne(c)
	}
}

// Data implements App.
func (a *EchoApp) Data(c *Conn, op byte, off int, chunk []byte) bool {
	if op != OpBinary || off+len(chunk) > a.Size {
		return false
	}
	var tag [tagLen]byte
	putTag(tag[:], uint32(c.ID), c.Seq)
	for len(chunk) > 0 && off < tagLen {
		if chunk[0] != tag[off] {
			return false
		}
		chunk = chunk[1:]
		off++
	}
	if len(chunk) == 0 {
		return true
	}
	r := rot(c.Seq)
	return string(chunk) == string(a.tmpl[r+off:r+off+len(chunk)])
}

// Message implements App.
func (a *EchoApp) Message(c *Conn, op byte, n int) {
	st := &a.Stats[c.loop.Index]
	st.Outstanding--
	if n != a.Size {
		a.Client.Mismatches.Add(1)
		c.loop.fail(c, nil)
		return
	}
	c.Recv++
	if a.open != nil {
		a.openMessage(c, st)
		return
	}
	if !a.Continuous.Load() {
		a.Replies.Add(1)
		c.Seq++
		return
	}
	if a.Measuring.Load() {
		st.Msgs++
		st.Hist.Record(time.Duration(a.Client.Now() - c.T0))
	}
	c.Seq++
	if !a.Stopping.Load() {
		a.SendOne(c)
	}
}

// BroadcastApp checks broadcast messages: 8 hex digits of the broadcast's
// sequence number, then template filler chosen by that number, Size bytes
// in all.
type BroadcastApp struct {
	Client *Client
	Size   int
	tmpl   []byte

	Expect atomic.Int64 // receivers each broadcast must reach
	Counts []atomic.Int64
	SentAt []atomic.Int64
	DoneAt []atomic.Int64
	Done   chan uint32
}

// NewBroadcastApp returns a broadcast checker for up to maxSeq broadcasts.
func NewBroadcastApp(size, maxSeq int) *BroadcastApp {
	if size < tagLen {
		size = tagLen
	}
	return &BroadcastApp{Size: size, tmpl: Template(size + 512), Counts: make([]atomic.Int64, maxSeq),
		SentAt: make([]atomic.Int64, maxSeq), DoneAt: make([]atomic.Int64, maxSeq), Done: make(chan uint32, maxSeq)}
}

const hexdig = "0123456789abcdef"

// Payload returns the request that makes the server broadcast message seq.
func (a *BroadcastApp) Payload(seq uint32) []byte {
	p := make([]byte, 0, len("broadcast:")+a.Size)
	p = append(p, "broadcast:"...)
	for i := 7; i >= 0; i-- {
		p = append(p, hexdig[(seq>>(4*uint(i)))&0xF])
	}
	r := rot(seq)
	return append(p, a.tmpl[r+tagLen:r+a.Size]...)
}

// Opened implements App.
func (a *BroadcastApp) Opened(*Conn) {}

// Data implements App.
func (a *BroadcastApp) Data(c *Conn, op byte, off int, chunk []byte) bool {
	if op != OpText || off+len(chunk) > a.Size {
		return false
	}
	for len(chunk) > 0 && off < tagLen {
		c.Tag[off] = chunk[0]
		chunk = chunk[1:]
		off++
		if off == tagLen {
			var seq uint32
			for _, h := range c.Tag {
				var v byte
				switch {
				case h >= '0' && h <= '9':
					v = h - '0'
				case h >= 'a' && h <= 'f':
					v = h - 'a' + 10
				default:
					return false
				}
				seq = seq<<4 | uint32(v)
			}
			if int(seq) >= len(a.Counts) {
				return false
			}
			c.Seq = seq
		}
	}
	if len(chunk) == 0 {
		return true
	}
	r := rot(c.Seq)
	return string(chunk) == string(a.tmpl[r+off:r+off+len(chunk)])
}

// Message implements App.
func (a *BroadcastApp) Message(c *Conn, op byte, n int) {
	if n != a.Size {
		a.Client.Mismatches.Add(1)
		c.loop.fail(c, nil)
		return
	}
	c.Recv++
	seq := c.Seq
	if a.Counts[seq].Add(1) == a.Expect.Load() {
		a.DoneAt[seq].Store(a.Client.Now())
		a.Done <- seq
	}
}

// openSchedule is the open-loop echo's timetable, in client time (ns): a
// connection with phase p sends message k at start + p + k*period; only
// messages scheduled in [from, to) are measured, and none are scheduled
// from `to` on.
type openSchedule struct {
	start, period, from, to int64
}

// openLoopState walks one loop's connections in phase order: cursor j in
// cycle k.
type openLoopState struct {
	conns []*Conn
	j     int
	k     int64
	late  int64
}

func (a *EchoApp) fillSeq(c *Conn, seq uint32) func(p []byte) {
	return func(p []byte) {
		putTag(p, uint32(c.ID), seq)
		r := rot(seq)
		copy(p[tagLen:], a.tmpl[r+tagLen:r+len(p)])
	}
}

// openTick sends every message of l's connections that is due by now, in
// schedule order, then arms the loop's timer for the next one. A message
// is sent even while earlier ones are still unanswered: the schedule does
// not wait for the server. Loop only.
func (a *EchoApp) openTick(l *Loop, s *openLoopState) {
	sc := a.open
	now := a.Client.Now()
	st := &a.Stats[l.Index]
	for len(s.conns) > 0 {
		cn := s.conns[s.j]
		due := sc.start + cn.phase + s.k*sc.period
		if due >= sc.to {
			l.SetTimer(0, nil)
			return
		}
		if due > now {
			l.SetTimer(due, func() { a.openTick(l, s) })
			return
		}
		if cn.IsOpen() {
			if now-due > int64(time.Millisecond) {
				s.late++
				st.Late++
			}
			seq := uint32(cn.sendK)
			cn.sendK++
			st.Outstanding++
			l.SendFunc(cn, OpBinary, a.Size, a.fillSeq(cn, seq))
		}
		s.j++
		if s.j == len(s.conns) {
			s.j = 0
			s.k++
		}
	}
}

// openMessage accounts for an echo in open-loop mode: its latency runs
// from the time it was scheduled to be sent.
func (a *EchoApp) openMessage(c *Conn, st *EchoLoopStats) {
	sc := a.open
	due := sc.start + c.phase + c.recvK*sc.period
	c.recvK++
	c.Seq = uint32(c.recvK)
	if due >= sc.from && due < sc.to {
		st.Msgs++
		st.Hist.Record(time.Duration(a.Client.Now() - due))
	}
}
