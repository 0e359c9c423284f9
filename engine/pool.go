package engine

import "sync"

// Buffers for outbound frames and message assembly come from size-classed
// pools, so an idle connection pins none and a busy one reuses what another
// just released.
var bufClasses = [...]int{512, 4 << 10, 32 << 10, 256 << 10, 2 << 20}

var bufPools [len(bufClasses)]sync.Pool

// getBuf returns an empty slice with capacity of at least n.
func getBuf(n int) []byte {
	for i, size := range bufClasses {
		if n <= size {
			if p, ok := bufPools[i].Get().(*[]byte); ok {
				return (*p)[:0]
			}
			return make([]byte, 0, size)
		}
	}
	return make([]byte, 0, n)
}

// putBuf gives b back to its pool. Buffers larger than the biggest class, or
// of a capacity no class has, are left to the garbage collector so that one
// huge message does not pin memory forever.
func putBuf(b []byte) {
	c := cap(b)
	for i, size := range bufClasses {
		if c == size {
			b = b[:0]
			bufPools[i].Put(&b)
			return
		}
	}
}

// growBuf makes room for extra more bytes in b, moving to a buffer of a
// larger class when b is full and giving the old one back.
func growBuf(b []byte, extra int) []byte {
	if len(b)+extra <= cap(b) {
		return b
	}
	need := len(b) + extra
	if need > bufClasses[len(bufClasses)-1] && need < 2*cap(b) {
		need = 2 * cap(b) // past the classes, grow geometrically: no O(n²) copying
	}
	nb := getBuf(need)
	nb = append(nb, b...)
	if b != nil {
		putBuf(b)
	}
	return nb
}
