//go:build wsloop_lockcount

package engine

import (
	"sync"
	"sync/atomic"
)

// connLocks counts wsConn.mu acquisitions, in a wsloop_lockcount build.
var connLocks atomic.Int64

// connMutex is a sync.Mutex that counts its Lock calls.
type connMutex struct{ sync.Mutex }

func (m *connMutex) Lock() {
	connLocks.Add(1)
	m.Mutex.Lock()
}
