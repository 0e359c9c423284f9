package enginetest

import (
	"sync"
	"time"
)

// Clock is an engine.Clock that moves only when a test tells it to. Give it
// to a server (engine.Options.Clock) and call Advance where the test would
// otherwise sleep: every timeout that falls due fires during the call, on
// the server's event loops, before Advance returns. A timeout therefore
// fires because the test moved the clock, never because the machine was
// slow, and a test never asserts how long something took.
//
// Advance does not wait for bytes in flight: when a test sends something
// that must reach the server before the clock moves (a pong that resets an
// idle timer, say), it waits for a sign that it did (an echo) first.
type Clock struct {
	mu   sync.Mutex
	now  time.Time
	subs []*sub
}

type sub struct {
	every   time.Duration
	next    time.Time
	f       func()
	stopped bool
}

// NewClock returns a clock set to a fixed instant.
func NewClock() *Clock {
	return &Clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Every registers f to be called every d of the clock's time; Advance makes
// the calls.
func (c *Clock) Every(d time.Duration, f func()) (stop func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &sub{every: d, next: c.now.Add(d), f: f}
	c.subs = append(c.subs, s)
	return func() {
		c.mu.Lock()
		s.stopped = true
		c.mu.Unlock()
	}
}

// Advance moves the clock forward by d, one tick of each registered
// callback at a time, calling the callbacks as their ticks come (in the
// caller's goroutine, without the clock's lock held). A server's callback
// returns once every event loop has handled the tick, so when Advance
// returns, every timeout due by the new time has fired.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var due *sub
		for _, s := range c.subs {
			if !s.stopped && !s.next.After(end) && (due == nil || s.next.Before(due.next)) {
				due = s
			}
		}
		if due == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		c.now = due.next
		due.next = due.next.Add(due.every)
		f := due.f
		c.mu.Unlock()
		f()
	}
}
