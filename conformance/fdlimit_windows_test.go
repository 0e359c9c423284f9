package conformance

import "testing"

// fdLimit stands for RLIMIT_NOFILE, which Windows does not have: sockets
// are bounded by memory there, so the scale tests run at full size.
func fdLimit(*testing.T) int { return 1 << 20 }
