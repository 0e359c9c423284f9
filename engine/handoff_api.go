package engine

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/wsloop/wsloop/handler"
)

// HandOffOptions configures [Server.HandOff]. The zero value (or nil) hands
// over the server's own listener and every connection that can move.
type HandOffOptions struct {
	// AllowUIDs lists user ids besides this process's own that the
	// successor may run as. Any other process that reaches the handoff
	// socket gets nothing, and is logged.
	AllowUIDs []int

	// Listeners are the application's own listening sockets to hand over
	// too, by name (the successor finds them with [Takeover.Listener]):
	// an http.Server's, say. Each must be a *net.TCPListener or a
	// *net.UnixListener. From the moment the successor has them this
	// process accepts nothing more on them (their Accept returns a
	// timeout error until the application closes them); a Unix
	// listener's socket file is left in place for the successor. The
	// name "" is the server's own listener.
	Listeners map[string]net.Listener

	// State returns the application's global state (a chat's rooms and
	// their history), which the successor's TakeOverOptions.State gets
	// before any connection is restored. It runs once every connection
	// that moves has left its loop, so nothing a moved connection sent
	// is missing from it. An error calls the handoff off.
	State func() ([]byte, error)

	// MoveTimeout bounds how long a connection may take to reach a
	// message boundary in both directions: a message it is receiving
	// completes, a NextWriter open on it closes, and the kernel takes
	// what it was sent. Connections past it stay in this process and
	// are drained. Default 2 s.
	MoveTimeout time.Duration

	// MaxBuffered is the most bytes, unparsed input and queued output
	// together, a connection may hold to move; one holding more stays.
	// Default 1 MiB.
	MaxBuffered int

	// DrainTimeout is how long the connections that stayed are served
	// after the commit, until they close by themselves; then they get
	// 1001 Going Away (with CloseTimeout to answer). Default 30 s;
	// negative sends 1001 at once.
	DrainTimeout time.Duration
}

// Defaults of HandOffOptions.
const (
	DefaultMoveTimeout  = 2 * time.Second
	DefaultMaxBuffered  = 1 << 20
	DefaultDrainTimeout = 30 * time.Second
)

func (o HandOffOptions) withDefaults() HandOffOptions {
	if o.MoveTimeout <= 0 {
		o.MoveTimeout = DefaultMoveTimeout
	}
	if o.MaxBuffered <= 0 {
		o.MaxBuffered = DefaultMaxBuffered
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	return o
}

// HandOffResult reports what [Server.HandOff] did.
type HandOffResult struct {
	// Successor is the process id of the process that took over, as the
	// kernel reports it (0 where the platform does not say).
	Successor int
	// Listeners is the number of listening sockets handed over.
	Listeners int
	// Moved is the number of connections the successor serves now.
	Moved int
	// Stayed counts, by reason, the connections that stayed in this
	// process and were drained: "tls" (wss terminated here: crypto/tls
	// cannot export a live session), "bridged" (wss through net/http),
	// "handshake", "closing", "not a mover" (its handler does not
	// implement handler.Mover), "bounds" (no message boundary within
	// MoveTimeout), "too large" (over MaxBuffered), "application" (its
	// OnMove failed) and "descriptor" (no descriptor left to duplicate
	// its socket).
	Stayed map[string]int
	// Pause is how long the moved connections were read by neither
	// process, as far as this process knows: from the first one taken
	// off its loop to the successor's acknowledgement of the commit.
	// The successor's restore adds its own part (RestoreResult.Duration).
	Pause time.Duration
	// Duration is the whole transfer, from the successor's connection to
	// its acknowledgement of the commit.
	Duration time.Duration
	// Drained is the number of connections still open when the drain
	// timeout passed, which were sent 1001.
	Drained int64
}

// TakeOverOptions configures [TakeOver].
type TakeOverOptions struct {
	// AllowUIDs lists user ids besides this process's own that the old
	// process may run as.
	AllowUIDs []int
	// State receives the application's global state from the old
	// process's HandOffOptions.State, before any connection is restored.
	// ok is false when the old process sent none: it has no State hook,
	// or it died before sending it (then the connections it had given
	// are restored all the same). An error is logged; the connections
	// are restored anyway, and their OnRestore decides.
	State func(state []byte, ok bool) error
	// Logger receives the lines about the transfer. Default
	// slog.Default().
	Logger *slog.Logger
}

// RestoreResult reports what [Takeover.Restore] did.
type RestoreResult struct {
	// Restored is the number of connections served here now.
	Restored int
	// Refused is the number of connections closed with 1012 Service
	// Restart: their OnRestore failed, or the deflate budget had no room
	// for their compression context.
	Refused int
	// Partial is true when the old process died during the transfer:
	// what it had given is restored, the rest is lost with it.
	Partial bool
	// Duration is the time from the commit (or the old process's death)
	// to the last connection resumed.
	Duration time.Duration
}

// ErrHandOffUnsupported is returned by HandOff and TakeOver where the
// platform cannot pass sockets between processes (Windows).
var ErrHandOffUnsupported = errors.New("wsloop: handoff needs Unix sockets with SCM_RIGHTS and peer credentials (Linux, macOS, FreeBSD)")

// errHandedOff ends an accept loop whose listener now belongs to a
// successor.
var errHandedOff = errors.New("wsloop: listener handed off")

// ConnID returns the identifier of a connection of this package: unique
// among the connections of a server and of the processes it hands over to
// and takes over from (a random 64-bit base, then a counter), and stable
// across a handoff. It returns 0 for anything else. The first call
// allocates the connection's extra state.
func ConnID(c handler.Conn) uint64 {
	wc, ok := unwrapConn(c)
	if !ok {
		return 0
	}
	return wc.id()
}

// id returns the connection's ConnID, giving it one on first use.
func (wc *wsConn) id() uint64 {
	x := wc.extra()
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if x.id == 0 {
		x.id = wc.lp.srv.nextID.Add(1)
	}
	return x.id
}

// randomIDBase is where a server's ConnIDs start: random, so that the IDs of
// a process and of its successors do not meet, and far from the top, so
// that counting up never reaches 0 (which means "none").
func randomIDBase() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) >> 1
}

// acceptGate holds a server's accept loops while a handoff offers its
// listener to a successor: released, they accept again (the handoff was
// called off) or end (the listener is the successor's).
type acceptGate struct {
	mu    sync.Mutex
	state int           // gateOpen, gateHeld, gateGone
	ch    chan struct{} // closed when leaving gateHeld
}

const (
	gateOpen = iota
	gateHeld
	gateGone
)

func (g *acceptGate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state == gateOpen {
		g.state = gateHeld
		g.ch = make(chan struct{})
	}
}

// held reports whether the accept loops must not accept.
func (g *acceptGate) held() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state != gateOpen
}

// wait blocks while the gate is held, and reports whether the listener is
// gone to a successor.
func (g *acceptGate) wait(stop <-chan struct{}) bool {
	g.mu.Lock()
	state, ch := g.state, g.ch
	g.mu.Unlock()
	switch state {
	case gateOpen:
		return false
	case gateGone:
		return true
	}
	select {
	case <-ch:
	case <-stop:
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state == gateGone
}

// release opens the gate again, or for good when gone.
func (g *acceptGate) release(gone bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state != gateHeld {
		return
	}
	g.state = gateOpen
	if gone {
		g.state = gateGone
	}
	close(g.ch)
}

// moveRec is a connection taken off its loop by a handoff: the connection
// itself, a duplicate of its socket (ours until the commit or the
// take-back) and its record.
type moveRec struct {
	wc  *wsConn
	fd  int
	rec *connRecord
}
