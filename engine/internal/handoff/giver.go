//go:build linux || darwin || freebsd

package handoff

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Giver is the old process's end of a transfer.
//
// Its descriptors stay the caller's until Commit returns nil (or
// ErrCommitUnknown): only then may the caller close its copies. After any
// other failure the caller calls TakeBack and serves everything again.
type Giver struct {
	c   *Conn
	cfg Config
	seq uint32 // last sequence number sent; writers only

	mu          sync.Mutex
	changed     chan struct{}     // closed and replaced on every change below
	unacked     map[uint32]uint16 // sent, not yet acknowledged: seq -> descriptors
	err         error             // why the transfer cannot go on
	commitAcked bool
	takenBack   bool

	readerDone chan struct{} // closed when the taker's end closed
}

// Offer binds the handoff socket in dir, waits until a process with
// acceptable credentials connects (others are logged and dropped) and
// agrees on the versions, and returns the giving end. The socket is
// unlinked once the successor is connected.
func Offer(ctx context.Context, dir string, cfg Config) (*Giver, error) {
	ln, err := listen(dir)
	if err != nil {
		return nil, err
	}
	c, err := accept(ctx, ln, &cfg)
	ln.Close() // one successor: nobody else may connect now
	if err != nil {
		return nil, err
	}
	if err := c.hello(ctx, cfg.Version); err != nil {
		c.Close()
		return nil, err
	}
	if cfg.Window <= 0 {
		cfg.Window = 8
	}
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = 30 * time.Second
	}
	g := &Giver{c: c, cfg: cfg, changed: make(chan struct{}), unacked: map[uint32]uint16{}, readerDone: make(chan struct{})}
	go g.read()
	return g, nil
}

// Peer returns the successor's credentials.
func (g *Giver) Peer() Peer { return g.c.Peer }

// read takes the taker's answers until its end closes.
func (g *Giver) read() {
	defer close(g.readerDone)
	for {
		m, err := g.c.recv()
		if err != nil {
			g.fail(fmt.Errorf("%w (%v)", ErrTakerGone, err))
			return
		}
		m.closeFDs() // a taker sends none
		g.mu.Lock()
		switch {
		case m.bad != "":
			g.failLocked(fmt.Errorf("wsloop handoff: a damaged answer from the new process: %s", m.bad))
		case m.typ == msgAck:
			delete(g.unacked, m.seq)
		case m.typ == msgRefuse:
			g.failLocked(&RefusedError{Seq: m.seq, Reason: string(m.payload)})
		case m.typ == msgCommitAck:
			g.commitAcked = true
		default:
			g.failLocked(fmt.Errorf("wsloop handoff: unexpected message %d from the new process", m.typ))
		}
		g.signalLocked()
		g.mu.Unlock()
	}
}

func (g *Giver) signalLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *Giver) fail(err error) {
	g.mu.Lock()
	g.failLocked(err)
	g.signalLocked()
	g.mu.Unlock()
}

func (g *Giver) failLocked(err error) {
	if g.err == nil {
		g.err = err
	}
}

// wait blocks until cond holds (checked under mu), the transfer failed,
// or ctx is done.
func (g *Giver) wait(ctx context.Context, cond func() bool) error {
	for {
		g.mu.Lock()
		if g.err != nil {
			err := g.err
			g.mu.Unlock()
			return err
		}
		if cond() {
			g.mu.Unlock()
			return nil
		}
		ch := g.changed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// send sends one message that the taker acknowledges, within the window.
// ETOOMANYREFS (the kernel's limit on this user's descriptors in flight)
// is waited out: as acknowledgements come, descriptors leave the flight.
func (g *Giver) send(ctx context.Context, typ uint8, payload []byte, fds []int) (uint32, error) {
	if len(fds) > MaxFDs {
		return 0, fmt.Errorf("wsloop handoff: %d descriptors in one message, at most %d", len(fds), MaxFDs)
	}
	if err := g.wait(ctx, func() bool { return len(g.unacked) < g.cfg.Window }); err != nil {
		return 0, err
	}
	g.seq++
	seq := g.seq
	for {
		g.mu.Lock()
		g.unacked[seq] = uint16(len(fds))
		g.mu.Unlock()
		var err error
		if g.cfg.sendErr != nil {
			err = g.cfg.sendErr(len(fds))
		}
		if err == nil {
			err = g.c.send(typ, seq, payload, fds, seq == g.cfg.corruptSeq)
		}
		if err == nil {
			return seq, nil
		}
		g.mu.Lock()
		delete(g.unacked, seq)
		inFlight := len(g.unacked)
		ch := g.changed
		g.mu.Unlock()
		if err != unix.ETOOMANYREFS || inFlight == 0 {
			return 0, g.sendFailed(err)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// sendFailed records a failed send. A taker that refused a message closes
// its end, and the giver's next send may fail before the refusal is read:
// the refusal, which says why, is what the caller should see, so the
// answers already on their way are read first.
func (g *Giver) sendFailed(err error) error {
	t := time.NewTimer(time.Second)
	select {
	case <-g.readerDone:
	case <-t.C:
	}
	t.Stop()
	g.fail(fmt.Errorf("wsloop handoff: sending to the new process: %w", err))
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// SendListeners sends the listening sockets, described by payload, and
// waits until the taker has them.
func (g *Giver) SendListeners(ctx context.Context, payload []byte, fds []int) error {
	seq, err := g.send(ctx, msgListeners, payload, fds)
	if err != nil {
		return err
	}
	return g.wait(ctx, func() bool { _, pending := g.unacked[seq]; return !pending })
}

// SendBatch sends one batch of connections, described by payload, at most
// MaxFDs. It returns once the batch is sent, waiting first while Window
// batches are unacknowledged.
func (g *Giver) SendBatch(ctx context.Context, payload []byte, fds []int) error {
	_, err := g.send(ctx, msgBatch, payload, fds)
	return err
}

// Flush waits until every message sent is acknowledged.
func (g *Giver) Flush(ctx context.Context) error {
	return g.wait(ctx, func() bool { return len(g.unacked) == 0 })
}

// InFlight returns the number of messages sent and not yet acknowledged.
func (g *Giver) InFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.unacked)
}

// SendState sends the application's global state and waits until the
// taker has it.
func (g *Giver) SendState(ctx context.Context, payload []byte) error {
	seq, err := g.send(ctx, msgState, payload, nil)
	if err != nil {
		return err
	}
	return g.wait(ctx, func() bool { _, pending := g.unacked[seq]; return !pending })
}

// Commit hands everything sent to the taker once it is all acknowledged.
// nil: the taker has it, the caller closes its copies. ErrTakerGone (or
// any error before the commit went out): nothing is the taker's, the
// caller takes everything back. ErrCommitUnknown: the taker is alive but
// silent; it may serve what it got, so the caller must not take it back
// and closes its copies too.
func (g *Giver) Commit(ctx context.Context) error {
	if err := g.Flush(ctx); err != nil {
		return err
	}
	g.mu.Lock()
	g.seq++
	seq := g.seq
	g.mu.Unlock()
	if err := g.c.send(msgCommit, seq, nil, nil, false); err != nil {
		// The taker will see the commit whole or not at all: a short
		// write leaves it waiting for bytes that never come, and it
		// serves nothing then.
		err = fmt.Errorf("%w (sending the commit: %v)", ErrTakerGone, err)
		g.fail(err)
		return err
	}
	// From here the taker may serve everything: only its going away
	// before its acknowledgement proves it does not.
	tctx, cancel := context.WithTimeout(context.Background(), g.cfg.CommitTimeout)
	defer cancel()
	for {
		g.mu.Lock()
		acked, err, ch := g.commitAcked, g.err, g.changed
		g.mu.Unlock()
		if acked {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ch:
		case <-tctx.Done():
			return ErrCommitUnknown
		}
	}
}

// TakeBack calls the transfer off: it tells the taker (which then closes
// every descriptor it received, unread), then closes the socket. The
// caller serves everything again. It must not be called after Commit
// returned nil or ErrCommitUnknown.
func (g *Giver) TakeBack() {
	g.mu.Lock()
	done := g.takenBack
	g.takenBack = true
	g.mu.Unlock()
	if done {
		return
	}
	_ = g.c.uc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = g.c.send(msgTakeBack, 0, nil, nil, false)
	g.c.Close()
}

// Close closes the socket after a commit.
func (g *Giver) Close() error { return g.c.Close() }
