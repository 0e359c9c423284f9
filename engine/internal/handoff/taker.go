//go:build linux || darwin || freebsd

package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"
)

// Taker is the new process's end of a transfer.
type Taker struct {
	c     *Conn
	cfg   Config
	watch *procWatch
	done  bool
}

// giverExitWait is how long the taker waits, when the giver's end closed
// without a word, for the giver to finish exiting: a process closes its
// descriptors before it is counted as exited.
const giverExitWait = 2 * time.Second

// Connect connects to the handoff socket in dir (waiting, until ctx is
// done, for the old process to bind it), checks the old process's
// credentials and agrees on the versions.
func Connect(ctx context.Context, dir string, cfg Config) (*Taker, error) {
	c, err := dial(ctx, dir, &cfg)
	if err != nil {
		return nil, err
	}
	// Watch the giver from now, while it is surely the process at the
	// other end: its exit is what makes acknowledged batches ours when
	// its end closes without a word.
	w := watchPeer(c.Peer)
	if err := c.hello(ctx, cfg.Version); err != nil {
		w.close()
		c.Close()
		return nil, err
	}
	return &Taker{c: c, cfg: cfg, watch: w}, nil
}

// Peer returns the old process's credentials.
func (t *Taker) Peer() Peer { return t.c.Peer }

// Next reads the next message and acknowledges it, or refuses it when it
// did not arrive whole or check (if not nil) returns an error for it (its
// descriptors are closed then, and the transfer is off: Next returns a
// *RefusedError). On Commit the transfer is
// complete and the socket closed. It returns ErrTakenBack when the giver
// called the transfer off, and ErrGiverGone when the giver died: then
// what was acknowledged is the taker's, and so is the message returned
// with ErrGiverGone, if any (it arrived whole; its acknowledgement found
// the giver dead). After ErrTakenBack, or any other error, nothing is and
// every descriptor received must be closed unread.
func (t *Taker) Next(ctx context.Context, check func(*Message) error) (*Message, error) {
	if t.done {
		return nil, errors.New("wsloop handoff: the transfer is over")
	}
	undo := t.c.setDeadline(ctx)
	m, err := t.c.recv()
	undo()
	if err != nil {
		return nil, t.end(ctx, err)
	}
	if m.bad != "" {
		m.closeFDs()
		_ = t.c.send(msgRefuse, m.seq, []byte(m.bad), nil, false)
		t.close()
		return nil, &RefusedError{Seq: m.seq, Reason: m.bad}
	}
	var k Kind
	switch m.typ {
	case msgListeners:
		k = Listeners
	case msgBatch:
		k = Batch
	case msgState:
		k = State
	case msgCommit:
		// Acknowledge, then serve: the giver takes nothing back once
		// this acknowledgement can reach it, and if it cannot (the
		// giver gave up waiting, or died) nothing is taken back
		// either. So what was received is ours either way.
		m.closeFDs()
		_ = t.c.send(msgCommitAck, m.seq, nil, nil, false)
		t.close()
		return &Message{Kind: Commit, Seq: m.seq}, nil
	case msgTakeBack:
		m.closeFDs()
		t.close()
		return nil, ErrTakenBack
	default:
		m.closeFDs()
		t.close()
		return nil, fmt.Errorf("wsloop handoff: unexpected message %d from the old process", m.typ)
	}
	out := &Message{Kind: k, Seq: m.seq, Payload: m.payload, FDs: m.fds}
	if check != nil {
		if err := check(out); err != nil {
			m.closeFDs()
			_ = t.c.send(msgRefuse, m.seq, []byte(err.Error()), nil, false)
			t.close()
			return nil, &RefusedError{Seq: m.seq, Reason: err.Error()}
		}
	}
	if err := t.c.send(msgAck, m.seq, nil, nil, false); err != nil {
		err = t.end(ctx, err)
		if errors.Is(err, ErrGiverGone) {
			// The giver died: it will not take this back either.
			return out, err
		}
		m.closeFDs()
		return nil, err
	}
	return out, nil
}

// end decides what a broken stream means. The giver says TakeBack before
// it closes its end to serve everything again; an end without that word
// while the giver lives on is treated the same (it may have failed to
// say it), so only a giver that has exited leaves its acknowledged
// batches to the taker.
func (t *Taker) end(ctx context.Context, err error) error {
	defer t.close()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) {
		if t.watch.exitedWithin(giverExitWait) {
			return fmt.Errorf("%w (%v)", ErrGiverGone, err)
		}
		return fmt.Errorf("%w (its end closed while it lives on)", ErrTakenBack)
	}
	return fmt.Errorf("wsloop handoff: receiving from the old process: %w", err)
}

// Abandon gives up: the giver sees the end close and takes everything
// back. The caller closes every descriptor it received, unread.
func (t *Taker) Abandon() { t.close() }

func (t *Taker) close() {
	if !t.done {
		t.done = true
		t.watch.close()
		t.c.Close()
	}
}
