package engine

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// gnetLogger routes gnet's own log lines into the server's slog.Logger, so an
// embedding program sees one log stream with one format.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Infof(f string, a ...any) {
	if f == gnetClientStarting {
		// gnet says this of every client engine it starts, and the loops
		// are one: a server's log would call it a client. Say what it is.
		g.l.Info("wsloop: event loops started", append([]any{"loops"}, a...)...)
		return
	}
	g.l.Info(fmt.Sprintf(f, a...), "component", "gnet")
}

// gnetClientStarting is the format of gnet's line as the loops start
// (gnet's client_unix.go and client_windows.go, Client.Start).
const gnetClientStarting = "Starting gnet client with %d event loops"

func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "component", "gnet") }

// rateLimited lets one log line through per interval and counts the ones it
// suppressed, so a flood (thousands of refused connections per second) costs
// one line, not one per event.
type rateLimited struct {
	last       atomic.Int64
	suppressed atomic.Int64
}

// allow reports whether a line may be logged now, by clock, and how many
// were suppressed since the last one.
func (r *rateLimited) allow(clock Clock, every time.Duration) (bool, int64) {
	now := clock.Now().UnixNano()
	last := r.last.Load()
	if last != 0 && now-last < int64(every) || !r.last.CompareAndSwap(last, now) {
		r.suppressed.Add(1)
		return false, 0
	}
	return true, r.suppressed.Swap(0)
}
