// Package servers holds one echo-and-broadcast WebSocket server per
// implementation under comparison. Every server behaves the same way on the
// wire so the load generator can drive all of them identically:
//
//   - a binary message, or a text message not starting with BroadcastPrefix,
//     is echoed back unchanged on the same connection;
//   - a text message starting with BroadcastPrefix makes the server send the
//     rest of the message, as one text message, to every connection it holds
//     (the sender included), using that library's normal broadcast API.
//
// Each server is configured as its own README or documentation recommends for
// production, with the differences noted next to it.
package servers

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// BroadcastPrefix marks a text message as a broadcast request.
const BroadcastPrefix = "broadcast:"

// Server runs one implementation until the process exits. ready is called
// once the listener accepts connections.
type Server func(addr string, set Settings, ready func()) error

// Settings are the knobs the harness may turn on any server. The zero
// value is each library's default, which is what the side-by-side tables
// use; the scaling table and the many-process runs turn them.
type Settings struct {
	// Loops is the number of event loops (wsloop) or pollers (nbio). The
	// goroutine-per-connection servers have no such knob and ignore it:
	// GOMAXPROCS (or the CPU set the process is pinned to) bounds them.
	Loops int
	// ReusePort sets SO_REUSEPORT on the listening socket(s), so that
	// several server processes can share one port and the kernel spreads
	// the connections over them: the way past a per-process descriptor
	// limit.
	ReusePort bool
	// Options are Field=Value pairs applied to wsloop's engine.Options by
	// field name (int, bool, string and time.Duration fields), so an
	// engine setting can be compared without a new bench flag. Other
	// implementations refuse them.
	Options []string
	// TLS, when set, makes the server serve wss:// with this certificate
	// instead of ws:// (wsloop, gws and nbio: see SupportsTLS).
	TLS *TLSCert
}

// listen opens a TCP listener, with SO_REUSEPORT when reusePort is set.
func listen(addr string, reusePort bool) (net.Listener, error) {
	if !reusePort {
		return net.Listen("tcp", addr)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}

var registry = map[string]Server{}

// Info describes a registered implementation.
type Info struct {
	Name    string
	Module  string
	Version string
	Notes   string
}

var infos = map[string]Info{}

func register(i Info, s Server) {
	registry[i.Name] = s
	infos[i.Name] = i
}

// Get returns the server registered under name.
func Get(name string) (Server, error) {
	s, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("unknown implementation %q (have %v)", name, Names())
	}
	return s, nil
}

// Names lists the registered implementations in a stable order.
func Names() []string {
	var n []string
	for k := range registry {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Describe returns the description of name.
func Describe(name string) Info { return infos[name] }

// connSet is the set of open connections a server broadcasts to.
type connSet[T comparable] struct {
	mu sync.Mutex
	m  map[T]struct{}
}

func newConnSet[T comparable]() *connSet[T] { return &connSet[T]{m: make(map[T]struct{})} }

func (s *connSet[T]) add(c T) {
	s.mu.Lock()
	s.m[c] = struct{}{}
	s.mu.Unlock()
}

func (s *connSet[T]) remove(c T) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

// snapshot copies the members into dst[:0] so that writes happen outside the
// lock.
func (s *connSet[T]) snapshot(dst []T) []T {
	dst = dst[:0]
	s.mu.Lock()
	for c := range s.m {
		dst = append(dst, c)
	}
	s.mu.Unlock()
	return dst
}

func isBroadcast(text bool, data []byte) ([]byte, bool) {
	if !text || len(data) < len(BroadcastPrefix) || string(data[:len(BroadcastPrefix)]) != BroadcastPrefix {
		return nil, false
	}
	return data[len(BroadcastPrefix):], true
}
