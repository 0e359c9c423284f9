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
	if got := (&Options{}).withDefaults().EventLoops; got != want {
		t.Errorf("EventLoops 0 defaults to %d loops, want GOMAXPROCS %d (NumCPU %d)", got, want, runtime.NumCPU())
	}
	// Negative is not a default: Start refuses it (TestStartRejectsInvalidOptions).
	if err := (&Options{EventLoops: -1}).validate(); err == nil {
		t.Error("EventLoops -1 is valid")
	}
	if got := (&Options{EventLoops: 3}).withDefaults().EventLoops; got != 3 {
		t.Errorf("EventLoops 3 became %d", got)
	}
}
