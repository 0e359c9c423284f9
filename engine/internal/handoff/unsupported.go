//go:build !(linux || darwin || freebsd)

package handoff

import "context"

// Giver is the old process's end of a transfer; see the Unix build.
type Giver struct{}

// Taker is the new process's end of a transfer; see the Unix build.
type Taker struct{}

// Offer returns ErrUnsupported: this platform cannot pass descriptors.
func Offer(context.Context, string, Config) (*Giver, error) { return nil, ErrUnsupported }

// Connect returns ErrUnsupported: this platform cannot pass descriptors.
func Connect(context.Context, string, Config) (*Taker, error) { return nil, ErrUnsupported }

// Peer is never reached here.
func (*Giver) Peer() Peer { return Peer{} }

// SendListeners is never reached here.
func (*Giver) SendListeners(context.Context, []byte, []int) error { return ErrUnsupported }

// SendBatch is never reached here.
func (*Giver) SendBatch(context.Context, []byte, []int) error { return ErrUnsupported }

// Flush is never reached here.
func (*Giver) Flush(context.Context) error { return ErrUnsupported }

// InFlight is never reached here.
func (*Giver) InFlight() int { return 0 }

// SendState is never reached here.
func (*Giver) SendState(context.Context, []byte) error { return ErrUnsupported }

// Commit is never reached here.
func (*Giver) Commit(context.Context) error { return ErrUnsupported }

// TakeBack is never reached here.
func (*Giver) TakeBack() {}

// Close is never reached here.
func (*Giver) Close() error { return nil }

// Peer is never reached here.
func (*Taker) Peer() Peer { return Peer{} }

// Next is never reached here.
func (*Taker) Next(context.Context, func(*Message) error) (*Message, error) {
	return nil, ErrUnsupported
}

// Abandon is never reached here.
func (*Taker) Abandon() {}
