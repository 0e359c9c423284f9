// Package tlsbuf is everything the engine assumes about crypto/tls beyond its
// documented API, in one place, with the checks that tell whether this
// binary's crypto/tls still behaves that way.
//
// The engine drives a *tls.Conn from an event loop (engine/tls.go): it feeds
// the ciphertext the loop read to the connection's transport and calls
// Conn.Read until the transport has nothing more, which the transport
// reports with ErrWouldBlock. That relies on two behaviours crypto/tls does
// not document:
//
//   - A: a read error from the transport that is a net.Error with
//     Temporary() == true is returned by Conn.Read without being stored as
//     the connection's permanent error (crypto/tls/conn.go, readRecordOrCCS,
//     checked in Go 1.26 and 1.27), and a record that arrived in part stays
//     where it was, so the next Read, after more bytes were fed, goes on.
//   - B: plaintext crypto/tls already decrypted (a record larger than the
//     caller's buffer, or several records fed at once) is returned before
//     the would-block comes back, so that the engine sees all of it in one
//     call.
//
// Independently, to keep an idle connection's memory small, the engine lends
// crypto/tls a pooled buffer as its unexported record buffer (Conn.rawInput)
// and drops its handshake buffer (Conn.hand) after the handshake; both
// fields are found by name and type through reflection.
//
// [Check] is the one entry point: it runs the checks once per process, on
// a tls.Conn pair in memory, and says what the engine may do. When A or B
// fails, the engine serves wss through its goroutine bridge instead; when
// only the buffers are not found, it reads on the loop without lending them.
// The package's tests are the canaries: each fails under a name that says
// which assumption a Go release broke.
package tlsbuf

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"
)

// ErrWouldBlock is what the engine's transport returns from Read when the
// loop has fed it nothing more: a net.Error whose Temporary() is true,
// which crypto/tls passes on without storing (behaviour A).
var ErrWouldBlock net.Error = wouldBlock{}

// wouldBlock is ErrWouldBlock's type: a timeout that is temporary.
type wouldBlock struct{}

func (wouldBlock) Error() string   { return "wsloop: no TLS bytes buffered" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// The ways the checks fail. Check's errors wrap one of them, with what was
// seen.
var (
	// ErrWouldBlockStored: behaviour A broke. A tls.Conn fed by an event
	// loop would fail for good at the first read that finds no bytes.
	ErrWouldBlockStored = errors.New("crypto/tls did not pass the transport's would-block error through unstored (behaviour A)")
	// ErrPlaintextNotDrained: behaviour B broke. Decrypted bytes would
	// wait in crypto/tls until the peer sent more.
	ErrPlaintextNotDrained = errors.New("crypto/tls returned the would-block error before the plaintext it held (behaviour B)")
	// ErrBuffersNotFound: Conn.rawInput or Conn.hand is not there, or not
	// the buffer it was.
	ErrBuffersNotFound = errors.New("crypto/tls's record and handshake buffers (Conn.rawInput, Conn.hand) were not found")
	// ErrProbe: the checks could not run (no key, no handshake).
	ErrProbe = errors.New("the in-process check of crypto/tls could not run")
)

// Coupling is what this binary's crypto/tls lets the engine do.
type Coupling struct {
	// Loop is nil when a tls.Conn can be read from an event loop
	// (behaviours A and B hold); otherwise it says which broke, wrapping
	// ErrWouldBlockStored, ErrPlaintextNotDrained or ErrProbe.
	Loop error
	// Buffers is nil when RawInput and Hand reach crypto/tls's buffers
	// and they behave as the engine expects; otherwise it says why not,
	// wrapping ErrBuffersNotFound (or ErrProbe).
	Buffers error

	rawInput, hand uintptr
}

// RawInput returns c's record buffer (Conn.rawInput), or nil when
// k.Buffers is not nil.
func (k *Coupling) RawInput(c *tls.Conn) *bytes.Buffer {
	if k.Buffers != nil {
		return nil
	}
	return (*bytes.Buffer)(unsafe.Add(unsafe.Pointer(c), k.rawInput))
}

// Hand returns c's handshake message buffer (Conn.hand), or nil when
// k.Buffers is not nil.
func (k *Coupling) Hand(c *tls.Conn) *bytes.Buffer {
	if k.Buffers != nil {
		return nil
	}
	return (*bytes.Buffer)(unsafe.Add(unsafe.Pointer(c), k.hand))
}

var (
	checked = sync.OnceValue(probe)
	forced  atomic.Pointer[error]
)

// Check returns what this binary's crypto/tls allows. The first call runs
// the checks (two TLS handshakes in memory, a few milliseconds); later
// calls return the same answer.
func Check() *Coupling {
	k := checked()
	if f := forced.Load(); f != nil {
		c := *k
		c.Loop = *f
		return &c
	}
	return k
}

// Force makes Check report err as the reason the loop cannot read a
// tls.Conn, until restore is called: a test hook, for running wss through
// the engine's fallback. It changes what every Check in the process
// returns.
func Force(err error) (restore func()) {
	forced.Store(&err)
	return func() { forced.Store(nil) }
}

// lookup finds crypto/tls's two buffers by name and type.
func lookup() (rawInput, hand uintptr, ok bool) {
	t := reflect.TypeFor[tls.Conn]()
	raw, ok1 := t.FieldByName("rawInput")
	h, ok2 := t.FieldByName("hand")
	bt := reflect.TypeFor[bytes.Buffer]()
	if ok1 && ok2 && raw.Type == bt && h.Type == bt && len(raw.Index) == 1 && len(h.Index) == 1 {
		return raw.Offset, h.Offset, true
	}
	return 0, 0, false
}
