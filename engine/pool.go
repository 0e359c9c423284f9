package engine

import "sync"

// Buffers for outbound frames and message assembly come from size-classed
// pools, so an idle connection pins none and a busy one reuses what another
// just released. The pools hold pointers to arrays: a slice converts to and
// from its array pointer without allocating, where putting a *[]byte would
// allocate a slice header on every release.
const (
	class0 = 512
	class1 = 4 << 10
	class2 = 32 << 10
	class3 = 256 << 10
	class4 = 2 << 20
)

var (
	pool0 = sync.Pool{New: func() any { return new([class0]byte) }}
	pool1 = sync.Pool{New: func() any { return new([class1]byte) }}
	pool2 = sync.Pool{New: func() any { return new([class2]byte) }}
	pool3 = sync.Pool{New: func() any { return new([class3]byte) }}
	pool4 = sync.Pool{New: func() any { return new([class4]byte) }}
)

// getBuf returns an empty slice with capacity of at least n.
func getBuf(n int) []byte {
	switch {
	case n <= class0:
		return pool0.Get().(*[class0]byte)[:0]
	case n <= class1:
		return pool1.Get().(*[class1]byte)[:0]
	case n <= class2:
		return pool2.Get().(*[class2]byte)[:0]
	case n <= class3:
		return pool3.Get().(*[class3]byte)[:0]
	case n <= class4:
		return pool4.Get().(*[class4]byte)[:0]
	}
	return make([]byte, 0, n)
}

// poolClassSize returns the capacity getBuf(n) gives, for n up to class4.
func poolClassSize(n int) int {
	switch {
	case n <= class0:
		return class0
	case n <= class1:
		return class1
	case n <= class2:
		return class2
	case n <= class3:
		return class3
	}
	return class4
}

// putBuf gives b back to its pool. A buffer larger than the biggest class is
// left to the garbage collector, so that one huge message does not pin its
// memory forever.
func putBuf(b []byte) {
	switch cap(b) {
	case class0:
		pool0.Put((*[class0]byte)(b[:class0]))
	case class1:
		pool1.Put((*[class1]byte)(b[:class1]))
	case class2:
		pool2.Put((*[class2]byte)(b[:class2]))
	case class3:
		pool3.Put((*[class3]byte)(b[:class3]))
	case class4:
		pool4.Put((*[class4]byte)(b[:class4]))
	}
}

// grownSize is the capacity to ask for when a buffer holding n bytes of
// capacity c needs extra more: exactly enough within the classes, and past
// them at least double, so that growth by small steps copies O(n) bytes, not
// O(n²).
func grownSize(n, c, extra int) int {
	need := n + extra
	if need > class4 && need < 2*c {
		need = 2 * c
	}
	return need
}

// growBuf makes room for extra more bytes in b, moving to a buffer of a
// larger class when b is full and giving the old one back.
func growBuf(b []byte, extra int) []byte {
	if len(b)+extra <= cap(b) {
		return b
	}
	nb := append(getBuf(grownSize(len(b), cap(b), extra)), b...)
	if b != nil {
		putBuf(b)
	}
	return nb
}

// outBuf holds a connection's queued outbound frames. The connection keeps a
// pointer to it (8 bytes instead of a 24-byte slice header) only while
// frames are queued; buffers of each class come from their own pool with
// the outBuf that carries them, so taking and releasing one is one pool
// operation, as for getBuf.
type outBuf struct{ b []byte }

var outPools = [...]struct {
	size int
	pool sync.Pool
}{{size: class0}, {size: class1}, {size: class2}, {size: class3}, {size: class4}}

func init() {
	for i := range outPools {
		n := outPools[i].size
		outPools[i].pool.New = func() any { return &outBuf{b: make([]byte, 0, n)} }
	}
}

// getOut returns an empty outBuf with room for at least n bytes.
func getOut(n int) *outBuf {
	for i := range outPools {
		if n <= outPools[i].size {
			return outPools[i].pool.Get().(*outBuf)
		}
	}
	return &outBuf{b: make([]byte, 0, n)}
}

// putOut gives o back to the pool of its class; one larger than the largest
// class is left to the garbage collector.
func putOut(o *outBuf) {
	for i := range outPools {
		if cap(o.b) == outPools[i].size {
			o.b = o.b[:0]
			outPools[i].pool.Put(o)
			return
		}
	}
}

// growOut makes room for extra more bytes after what o holds (o may be
// nil), moving to a buffer of a larger class when needed.
func growOut(o *outBuf, extra int) *outBuf {
	if o == nil {
		return getOut(extra)
	}
	if len(o.b)+extra <= cap(o.b) {
		return o
	}
	no := getOut(grownSize(len(o.b), cap(o.b), extra))
	no.b = append(no.b, o.b...)
	putOut(o)
	return no
}

// Message buffers: assembled messages and decompressed output. Small ones
// (up to 32 KiB) come from the pools. Larger ones come from bigAlloc
// (bigbuf_*.go), outside the Go heap, grown in place and freed the moment
// the message has been delivered: a pooled or collected heap buffer of a
// large message stays resident until the next collection, which a server
// whose heap is mostly idle connections may not run for a long time, so a
// burst of large messages would leave its memory behind. Big buffers are
// sized in steps of 64 KiB up to 1 MiB and of 1 MiB beyond, so a message
// costs its size plus less than a step.
const (
	bigThreshold = class2
	bigStepSmall = 64 << 10
	bigStep      = 1 << 20
)

// msgBufSize is the capacity to allocate for need bytes.
func msgBufSize(need int) int {
	switch {
	case need <= bigThreshold:
		return poolClassSize(need)
	case need <= bigStep:
		return (need + bigStepSmall - 1) &^ (bigStepSmall - 1)
	}
	return (need + bigStep - 1) &^ (bigStep - 1)
}

// newMsgBuf returns an empty message buffer with capacity msgBufSize(n).
func newMsgBuf(n int) []byte {
	if size := msgBufSize(n); size > bigThreshold {
		return bigAlloc(size)[:0]
	}
	return getBuf(n)
}

// resizeMsgBuf returns b (a message buffer or nil) with capacity size and
// the same contents, releasing b if it moved.
func resizeMsgBuf(b []byte, size int) []byte {
	switch {
	case size <= bigThreshold:
		nb := append(getBuf(size), b...)
		freeMsgBuf(b)
		return nb
	case cap(b) > bigThreshold:
		return bigResize(b, size)
	}
	nb := append(bigAlloc(size)[:0], b...)
	freeMsgBuf(b)
	return nb
}

// freeMsgBuf releases a message buffer.
func freeMsgBuf(b []byte) {
	if cap(b) > bigThreshold {
		bigFree(b)
		return
	}
	putBuf(b)
}
