package engine

import (
	"bytes"
	"testing"
)

// The big message buffers keep their contents through every growth and
// shrink, whichever road the build takes: mremap on Linux (bigbuf_linux.go),
// heap copies elsewhere and with -tags wsloop_portable (bigbuf_other.go).
func TestBigBufKeepsContents(t *testing.T) {
	const step = bigStepSmall
	b := bigAlloc(2 * step)
	if len(b) != 2*step || cap(b) < 2*step {
		t.Fatalf("bigAlloc(%d): len %d cap %d", 2*step, len(b), cap(b))
	}
	for i := range b {
		b[i] = byte(i * 7)
	}
	want := bytes.Clone(b)
	for _, size := range []int{3 * step, 40 * step, 4 * bigStep, 8 * step} {
		n := len(b)
		if n > size {
			n = size
			b = b[:n]
		}
		b = bigResize(b, size)
		if len(b) != n || cap(b) < size {
			t.Fatalf("bigResize to %d: len %d (want %d) cap %d", size, len(b), n, cap(b))
		}
		if !bytes.Equal(b, want[:n]) {
			t.Fatalf("bigResize to %d changed the contents", size)
		}
		b = b[:size]
		for i := n; i < size; i++ {
			b[i] = byte(i * 7)
		}
		want = append(want[:n], b[n:]...)
	}
	bigFree(b)
	// A buffer that fell back to the heap is freed by the collector:
	// bigFree must accept it.
	bigFree(make([]byte, step))
}
