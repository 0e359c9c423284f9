//go:build !linux || wsloop_portable

package engine

// Every system but Linux (and Linux with the wsloop_portable tag, which
// tests this file): without mremap, large message buffers are ordinary heap
// slices, grown by copying: a message grown to n bytes may cost up to twice
// n until the collector runs.

func bigAlloc(size int) []byte { return make([]byte, size) }

func bigResize(b []byte, size int) []byte { return append(make([]byte, 0, size), b...) }

func bigFree([]byte) {}
