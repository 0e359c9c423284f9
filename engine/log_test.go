package engine_test

import (
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/wsloop/wsloop/engine"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// logSink collects a server's log lines.
type logSink struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// count returns how many lines contain s.
func (l *logSink) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// A server's log says that its event loops started, and how many, and
// never calls the server a client (gnet starts the loops as a client
// engine and says so). Not parallel: gnet's logger is process-wide, the
// last server started gets its lines.
func TestLogLoopsStarted(t *testing.T) {
	logs := &logSink{}
	startServer(t, newRecorder(), engine.Options{EventLoops: 3, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if logs.count("client") != 0 || logs.count(`msg="wsloop: event loops started" loops=3`) != 1 {
		t.Errorf("log:\n%s", logs.b.String())
	}
}
