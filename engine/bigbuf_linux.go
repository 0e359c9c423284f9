//go:build !wsloop_portable

package engine

import "golang.org/x/sys/unix"

// Linux: large message buffers live outside the Go heap, in anonymous mappings:
// growing one is an mremap, which moves page tables instead of copying
// bytes and leaves no garbage behind, and freeing one returns its memory to
// the kernel at once. On the heap, a message grown to n bytes would leave
// its earlier buffers as garbage and cost up to twice n until a collection.
// Only pages that were written count in RSS.
//
// A buffer from bigAlloc must be released with bigFree exactly once; the
// handler sees it only during its callback, as the package documents for
// every message. Other systems have no mremap, and the wsloop_portable tag
// builds their road here too: bigbuf_other.go.

func bigAlloc(size int) []byte {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return make([]byte, size) // out of address space: fall back to the heap
	}
	return b
}

func bigResize(b []byte, size int) []byte {
	n := len(b)
	nb, err := unix.Mremap(b[:cap(b)], size, unix.MREMAP_MAYMOVE)
	if err != nil {
		nb = append(bigAlloc(size)[:0], b...)
		bigFree(b)
	}
	return nb[:n]
}

func bigFree(b []byte) {
	if err := unix.Munmap(b[:cap(b)]); err != nil {
		// Not a mapping (the heap fallback): the collector frees it.
		return
	}
}
