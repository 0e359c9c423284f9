package engine

import (
	"sync"
	"time"
)

// Clock is the engine's one source of time: every timeout, the timer wheel's
// ticks and the log rate limits read it. The zero [Options] use the system
// clock. A test gives the server a clock it moves by hand
// (enginetest.Clock), so that a timeout fires when the test says so, never
// because the machine happened to be slow.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// Every calls f every d, one call at a time, until stop is called.
	// The engine advances its timers in f.
	Every(d time.Duration, f func()) (stop func())
}

// systemClock is the wall clock with a time.Ticker behind Every.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) Every(d time.Duration, f func()) func() {
	t := time.NewTicker(d)
	done := make(chan struct{})
	go func() { // one goroutine per server, not per connection
		for {
			select {
			case <-t.C:
				f()
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.Stop()
			close(done)
		})
	}
}

// socketDeadline returns the deadline d from now for a net.Conn. A socket
// deadline is wall-clock time by definition (the kernel and Go's poller
// measure it). The engine reads the wall clock, besides through Options.Clock,
// only where it bounds a blocking call off the loops: here (writing the 101
// of a net/http upgrade, a bridged TLS connection's last reads), and in the
// context deadlines of Dial's handshake timeout (dial.go, which ends the
// dial's socket I/O when its context does) and of the drain's grace when
// Start's context ends (server.go). Never a timeout of a connection on a
// loop, which a test moves with its clock.
func socketDeadline(d time.Duration) time.Time { return time.Now().Add(d) }
