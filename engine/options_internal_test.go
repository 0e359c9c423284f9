package engine

import (
	"runtime"
	"testing"
)

// EventLoops defaults to GOMAXPROCS, which follows a container's CPU
// limit, not to the host's CPU count. GOMAXPROCS is set above NumCPU here
// so that the two cannot agree by chance.
func TestEventLoopsDefaultGOMAXPROCS(t *testing.T) {
	want := runtime.NumCPU() + 1
	prev := runtime.GOMAXPROCS(want)
	defer runtime.GOMAXPROCS(prev)
	for _, n := range []int{0, -1} {
		if got := (&Options{EventLoops: n}).withDefaults().EventLoops; got != want {
			t.Errorf("EventLoops %d defaults to %d loops, want GOMAXPROCS %d (NumCPU %d)", n, got, want, runtime.NumCPU())
		}
	}
	if got := (&Options{EventLoops: 3}).withDefaults().EventLoops; got != 3 {
		t.Errorf("EventLoops 3 became %d", got)
	}
}
