package handoff

import (
	"log/slog"
	"os"
	"time"
)

// Peer identifies the process at the other end of the socket, from the
// kernel's credentials of the socket (not from anything the peer says).
type Peer struct {
	UID int
	PID int // 0 where the platform does not say
}

// Config configures either end of a transfer.
type Config struct {
	// Version is the engine's state format version; both ends must agree.
	Version uint32
	// AllowUIDs lists uids besides our own that may be the other end.
	AllowUIDs []int
	// Logger receives the lines about strangers and failures.
	Logger *slog.Logger
	// Window is the most batches sent and not yet acknowledged. Default 8
	// (2,024 descriptors in flight, well under the usual RLIMIT_NOFILE
	// that bounds them).
	Window int
	// CommitTimeout bounds the giver's wait for the commit's
	// acknowledgement. Default 30 s.
	CommitTimeout time.Duration

	// Test hooks.
	corruptSeq uint32          // giver: damage the payload of the message with this seq after its checksum
	sendErr    func(int) error // giver: an error to report instead of sending a message with n descriptors
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.Default()
	}
	return c.Logger
}

func (c *Config) allowed(p Peer) bool {
	if p.UID == os.Geteuid() {
		return true
	}
	for _, u := range c.AllowUIDs {
		if u == p.UID {
			return true
		}
	}
	return false
}

// Kind is the kind of a message the taker receives.
type Kind uint8

// Kinds of messages.
const (
	Listeners Kind = iota + 1 // listening sockets
	Batch                     // connections
	State                     // the application's global state
	Commit                    // everything received is the taker's now
)

// Message is what Taker.Next returns: the payload and the descriptors
// that came with it, close-on-exec. The descriptors are the caller's to
// close; they must not be read or written before Commit.
type Message struct {
	Kind    Kind
	Seq     uint32
	Payload []byte
	FDs     []int
}
