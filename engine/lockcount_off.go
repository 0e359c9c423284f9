//go:build !wsloop_lockcount

package engine

import "sync"

// connMutex is wsConn.mu. A test build with the wsloop_lockcount tag swaps
// in a counting mutex (lockcount_on.go) to measure the locks on the path of
// one message.
type connMutex = sync.Mutex
