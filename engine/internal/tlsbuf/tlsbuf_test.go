package tlsbuf

import (
	"crypto/tls"
	"errors"
	"io"
	"testing"
)

// The canaries: each asserts one thing the engine's wss reads assume about
// crypto/tls, on a plain tls.Conn pair, and fails under a name that says
// which assumption this Go release broke. What each means, and what the
// engine does then, is in the package comment.

var versions = []uint16{tls.VersionTLS13, tls.VersionTLS12}

func testPair(t *testing.T, v uint16, wb error) *pair {
	t.Helper()
	cert, err := ephemeralCert()
	if err != nil {
		t.Fatal(err)
	}
	p, err := newPair(cert, v, wb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p
}

// Behaviour A: a would-block error from the transport reaches the caller
// and is not kept as the connection's error; a record fed in pieces around
// it still decodes.
func TestCanaryWouldBlockNotStored(t *testing.T) {
	for _, v := range versions {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			if err := testPair(t, v, ErrWouldBlock).wouldBlockNotStored(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Behaviour B: everything crypto/tls decrypted comes out before the
// would-block error does.
func TestCanaryPlaintextDrainedBeforeWouldBlock(t *testing.T) {
	for _, v := range versions {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			if err := testPair(t, v, ErrWouldBlock).plaintextDrained(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The record and handshake buffers are found by name and type, and behave
// as the engine's lending expects.
func TestCanaryBuffersFound(t *testing.T) {
	raw, hand, ok := lookup()
	if !ok {
		t.Fatal("crypto/tls's Conn.rawInput or Conn.hand is gone or changed type: idle wss connections keep their buffers")
	}
	for _, v := range versions {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			if err := testPair(t, v, ErrWouldBlock).buffers(&Coupling{rawInput: raw, hand: hand}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The check the engine runs at its first wss connection finds nothing
// wrong with this Go release.
func TestCheck(t *testing.T) {
	k := Check()
	if k.Loop != nil || k.Buffers != nil {
		t.Fatalf("Loop: %v; Buffers: %v", k.Loop, k.Buffers)
	}
	if k.RawInput(&tls.Conn{}) == nil || k.Hand(&tls.Conn{}) == nil {
		t.Fatal("buffers found but not returned")
	}
}

// permanent is a transport error crypto/tls must store: what the check
// sees if a release stops passing would-block errors through.
type permanent struct{}

func (permanent) Error() string   { return "permanent" }
func (permanent) Timeout() bool   { return false }
func (permanent) Temporary() bool { return false }

// The check of behaviour A fails when crypto/tls keeps the error.
func TestCheckSeesAStoredError(t *testing.T) {
	p := testPair(t, tls.VersionTLS13, permanent{})
	if err := p.wouldBlockNotStored(); !errors.Is(err, ErrWouldBlockStored) {
		t.Fatalf("got %v, want ErrWouldBlockStored", err)
	}
}

// hoarder answers would-block after its first read, holding back what the
// tls.Conn under it decrypted: what the check sees if a release returns
// the error first.
type hoarder struct {
	r    io.Reader
	read bool
}

func (h *hoarder) Read(b []byte) (int, error) {
	if h.read {
		return 0, ErrWouldBlock
	}
	h.read = true
	return h.r.Read(b)
}

// The check of behaviour B fails when plaintext is held back.
func TestCheckSeesHeldPlaintext(t *testing.T) {
	p := testPair(t, tls.VersionTLS13, ErrWouldBlock)
	p.r = &hoarder{r: p.srv}
	if err := p.plaintextDrained(); !errors.Is(err, ErrPlaintextNotDrained) {
		t.Fatalf("got %v, want ErrPlaintextNotDrained", err)
	}
}

// The check of the buffers fails when a field is not the buffer it should
// be: here the record buffer's place holds the handshake buffer.
func TestCheckSeesAWrongBuffer(t *testing.T) {
	raw, hand, ok := lookup()
	if !ok {
		t.Skip("buffers not found: TestCanaryBuffersFound fails")
	}
	p := testPair(t, tls.VersionTLS13, ErrWouldBlock)
	if err := p.buffers(&Coupling{rawInput: hand, hand: raw}); !errors.Is(err, ErrBuffersNotFound) {
		t.Fatalf("got %v, want ErrBuffersNotFound", err)
	}
}

// Force makes Check report the loop as unusable, and restore undoes it.
func TestForce(t *testing.T) {
	why := errors.New("forced by a test")
	restore := Force(why)
	k := Check()
	restore()
	if k.Loop != why {
		t.Errorf("forced: Loop %v", k.Loop)
	}
	if k.Buffers != nil || k.RawInput(&tls.Conn{}) == nil {
		t.Errorf("forcing the loop off changed the buffers: %v", k.Buffers)
	}
	if err := Check().Loop; err != nil {
		t.Errorf("after restore: Loop %v", err)
	}
}

// BenchmarkProbe measures the checks a server runs once, at its first wss
// connection (two in-memory handshakes and the reads).
//
//	go test -run '^$' -bench Probe ./engine/internal/tlsbuf
func BenchmarkProbe(b *testing.B) {
	for range b.N {
		if k := probe(); k.Loop != nil {
			b.Fatal(k.Loop)
		}
	}
}
