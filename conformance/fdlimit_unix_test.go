//go:build unix

package conformance

import (
	"syscall"
	"testing"
)

// fdLimit returns this process's soft RLIMIT_NOFILE. (Its type is uint64
// on Linux and macOS, int64 on FreeBSD and DragonFly.)
func fdLimit(t *testing.T) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if rl.Cur > 1<<30 {
		return 1 << 30
	}
	return int(rl.Cur)
}
