package tlsbuf

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"time"
)

// The in-process checks: a tls.Conn pair over an in-memory transport that
// behaves as the engine's does (blocking during the handshake, answering
// would-block after it), and the steps the engine's reads depend on.

// probe runs every check once, over TLS 1.3 and TLS 1.2, and returns the
// first failure of each kind.
func probe() *Coupling {
	k := &Coupling{}
	if raw, hand, ok := lookup(); ok {
		k.rawInput, k.hand = raw, hand
	} else {
		k.Buffers = ErrBuffersNotFound
	}
	cert, err := ephemeralCert()
	if err != nil {
		k.Loop = fmt.Errorf("%w: a key for the check: %v", ErrProbe, err)
		if k.Buffers == nil {
			k.Buffers = k.Loop
		}
		return k
	}
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		p, err := newPair(cert, v, ErrWouldBlock)
		if err != nil {
			if k.Loop == nil {
				k.Loop = err
			}
			if k.Buffers == nil {
				k.Buffers = err
			}
			continue
		}
		if k.Loop == nil {
			if err := p.wouldBlockNotStored(); err != nil {
				k.Loop = err
			} else if err := p.plaintextDrained(); err != nil {
				k.Loop = err
			}
		}
		if k.Buffers == nil {
			k.Buffers = p.buffers(k)
		}
		p.close()
	}
	return k
}

// ephemeralCert makes a self-signed certificate that lives as long as the
// check.
func ephemeralCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		DNSNames:     []string{"tlsbuf.invalid"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// pair is a server tls.Conn and a client tls.Conn joined in memory, after
// their handshake. The server's transport is in the engine's mode: what
// the client writes waits until feed hands it over, and a read with nothing
// fed answers wb.
type pair struct {
	srv, cli *tls.Conn
	st       *memConn // the server's transport
	r        io.Reader
	wb       error
}

// newPair makes a pair speaking TLS version v whose server transport
// answers wb when it has nothing (ErrWouldBlock, or in a test an error
// crypto/tls must store).
func newPair(cert tls.Certificate, v uint16, wb error) (*pair, error) {
	st, ct := &memConn{wb: wb}, &memConn{wb: wb}
	st.cond.L, ct.cond.L = &st.mu, &ct.mu
	st.peer, ct.peer = ct, st
	srv := tls.Server(st, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: v, MaxVersion: v})
	cli := tls.Client(ct, &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v})
	// A handshake in memory takes milliseconds; the bound only keeps a
	// broken crypto/tls from hanging the server's first connection.
	stop := time.AfterFunc(10*time.Second, func() { st.Close(); ct.Close() })
	defer stop.Stop()
	cerr := make(chan error, 1)
	go func() { cerr <- cli.Handshake() }()
	serr := srv.Handshake()
	if err := <-cerr; serr == nil {
		serr = err
	}
	if serr != nil {
		st.Close()
		ct.Close()
		return nil, fmt.Errorf("%w: in-memory %s handshake: %v", ErrProbe, tls.VersionName(v), serr)
	}
	st.mu.Lock()
	st.nonBlocking, st.staging = true, true
	st.mu.Unlock()
	return &pair{srv: srv, cli: cli, st: st, r: srv, wb: wb}, nil
}

func (p *pair) close() {
	p.st.Close()
	p.st.peer.Close()
}

// send has the client write each message (a record each) and returns how
// many bytes of ciphertext now wait to be fed to the server.
func (p *pair) send(msgs ...[]byte) (int, error) {
	for _, m := range msgs {
		if _, err := p.cli.Write(m); err != nil {
			return 0, fmt.Errorf("%w: the client's write: %v", ErrProbe, err)
		}
	}
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	return len(p.st.staged), nil
}

// read reads once from the server with a buffer of size n.
func (p *pair) read(n int) ([]byte, error) {
	b := make([]byte, n)
	m, err := p.r.Read(b)
	return b[:m], err
}

// wouldBlockNotStored checks behaviour A: with nothing fed, and with a
// record fed in part, Read returns the transport's would-block error; once
// the rest is fed, the next Read returns the record's plaintext.
func (p *pair) wouldBlockNotStored() error {
	if b, err := p.read(64); len(b) != 0 || !errors.Is(err, p.wb) {
		return fmt.Errorf("%w: Read with nothing fed returned %d bytes and %v, want the would-block error", ErrWouldBlockStored, len(b), err)
	}
	n, err := p.send([]byte("ping"))
	if err != nil {
		return err
	}
	fed := 0
	for _, upTo := range []int{3, n - 1} { // inside the record header, then all but its last byte
		p.st.feed(upTo - fed)
		fed = upTo
		if b, err := p.read(64); len(b) != 0 || !errors.Is(err, p.wb) {
			return fmt.Errorf("%w: Read with %d of a %d-byte record fed returned %d bytes and %v, want the would-block error", ErrWouldBlockStored, fed, n, len(b), err)
		}
	}
	p.st.feed(n - fed)
	if b, err := p.read(64); string(b) != "ping" || err != nil {
		return fmt.Errorf("%w: after would-block errors, Read of the completed record returned %q and %v", ErrWouldBlockStored, b, err)
	}
	if b, err := p.read(64); len(b) != 0 || !errors.Is(err, p.wb) {
		return fmt.Errorf("%w: Read after the record returned %d bytes and %v, want the would-block error", ErrWouldBlockStored, len(b), err)
	}
	return nil
}

// plaintextDrained checks behaviour B: a record larger than the reader's
// buffer and a second record, fed at once, all come out of Reads before
// the would-block error does.
func (p *pair) plaintextDrained() error {
	want := append(bytes.Repeat([]byte("0123456789"), 100), "tail"...)
	n, err := p.send(want[:1000], want[1000:])
	if err != nil {
		return err
	}
	p.st.feed(n)
	var got []byte
	for range 64 {
		b, err := p.read(100)
		got = append(got, b...)
		if err == nil {
			continue
		}
		if !errors.Is(err, p.wb) {
			return fmt.Errorf("%w: Read failed with %v after %d of %d bytes", ErrPlaintextNotDrained, err, len(got), len(want))
		}
		break
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%w: %d of %d bytes came before the would-block error", ErrPlaintextNotDrained, len(got), len(want))
	}
	return nil
}

// buffers checks that the fields k found are the buffers the engine
// handles: the handshake buffer is empty after the handshake, a record that
// arrived in part waits in the record buffer, a lent record buffer is empty
// again after whole records were read, and crypto/tls works on with both
// buffers reset to their zero value.
func (p *pair) buffers(k *Coupling) error {
	if k.Buffers != nil {
		return k.Buffers
	}
	raw, hand := k.RawInput(p.srv), k.Hand(p.srv)
	if hand.Len() != 0 {
		return fmt.Errorf("%w: Conn.hand holds %d bytes after the handshake", ErrBuffersNotFound, hand.Len())
	}
	*hand = bytes.Buffer{}
	n, err := p.send([]byte("part"))
	if err != nil {
		return err
	}
	p.st.feed(3)
	if _, err := p.read(64); !errors.Is(err, p.wb) || raw.Len() != 3 {
		return fmt.Errorf("%w: with 3 bytes of a record fed, Conn.rawInput holds %d (read: %v)", ErrBuffersNotFound, raw.Len(), err)
	}
	p.st.feed(n - 3)
	if b, err := p.read(64); string(b) != "part" || err != nil || raw.Len() != 0 {
		return fmt.Errorf("%w: the completed record read %q, %v, leaving %d bytes in Conn.rawInput", ErrBuffersNotFound, b, err, raw.Len())
	}
	lent := make([]byte, 0, 32<<10)
	*raw = *bytes.NewBuffer(lent)
	n, err = p.send([]byte("lent"), []byte("twice"))
	if err != nil {
		return err
	}
	p.st.feed(n)
	b1, err1 := p.read(64)
	b2, err2 := p.read(64)
	_, err3 := p.read(64)
	if string(b1) != "lent" || string(b2) != "twice" || err1 != nil || err2 != nil || !errors.Is(err3, p.wb) || raw.Len() != 0 {
		return fmt.Errorf("%w: through a lent Conn.rawInput: %q %v, %q %v, then %v, leaving %d bytes", ErrBuffersNotFound, b1, err1, b2, err2, err3, raw.Len())
	}
	*raw = bytes.Buffer{}
	n, err = p.send([]byte("after"))
	if err != nil {
		return err
	}
	p.st.feed(n)
	if b, err := p.read(64); string(b) != "after" || err != nil {
		return fmt.Errorf("%w: after Conn.rawInput was reset: %q, %v", ErrBuffersNotFound, b, err)
	}
	return nil
}

// memConn is one end of an in-memory connection. Its reads block until the
// peer writes, or, once nonBlocking, answer wb when nothing is there; once
// staging, what the peer writes waits in staged until feed moves it.
type memConn struct {
	mu                           sync.Mutex
	cond                         sync.Cond
	in, staged                   []byte
	nonBlocking, staging, closed bool
	wb                           error
	peer                         *memConn
}

func (c *memConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.in) == 0 {
		switch {
		case c.closed:
			return 0, io.EOF
		case c.nonBlocking:
			return 0, c.wb
		}
		c.cond.Wait()
	}
	n := copy(p, c.in)
	c.in = c.in[n:]
	return n, nil
}

func (c *memConn) Write(p []byte) (int, error) {
	d := c.peer
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, net.ErrClosed
	}
	if d.staging {
		d.staged = append(d.staged, p...)
	} else {
		d.in = append(d.in, p...)
		d.cond.Broadcast()
	}
	return len(p), nil
}

// feed makes the first n staged bytes readable.
func (c *memConn) feed(n int) {
	c.mu.Lock()
	c.in = append(c.in, c.staged[:n]...)
	c.staged = c.staged[n:]
	c.mu.Unlock()
}

func (c *memConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	return nil
}

func (c *memConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

type memAddr struct{}

func (memAddr) Network() string { return "memory" }
func (memAddr) String() string  { return "tlsbuf-check" }
