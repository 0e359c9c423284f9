package interop

import (
	"sync"
	"testing"
	"time"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
)

// askProtocol is a text message the echo handler answers with the
// connection's negotiated subprotocol instead of echoing, so a test can see
// what the server side believes was chosen.
const askProtocol = "which subprotocol?"

// echoHandler echoes every message and records how each connection ended.
type echoHandler struct {
	handler.Base

	mu     sync.Mutex
	closed []error
	notify chan struct{}
}

// OnMessage echoes the message, or answers askProtocol.
func (h *echoHandler) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	if op == handler.Text && string(data) == askProtocol {
		_ = c.WriteMessage(op, []byte("subprotocol="+c.Subprotocol()))
		return
	}
	_ = c.WriteMessage(op, data)
}

// OnClose records why the connection ended and wakes waitClose.
func (h *echoHandler) OnClose(_ handler.Conn, err error) {
	h.mu.Lock()
	h.closed = append(h.closed, err)
	h.mu.Unlock()
	select {
	case h.notify <- struct{}{}:
	default:
	}
}

// waitClose returns the err of the n-th OnClose (counting from 1), waiting
// up to timeout for it.
func (h *echoHandler) waitClose(n int, timeout time.Duration) (error, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		if len(h.closed) >= n {
			err := h.closed[n-1]
			h.mu.Unlock()
			return err, true
		}
		h.mu.Unlock()
		select {
		case <-h.notify:
		case <-deadline.C:
			return nil, false
		}
	}
}

// startEcho starts the engine with an echo handler on a free loopback port
// and stops it when the test ends.
func startEcho(t testing.TB, opts engine.Options) (string, *echoHandler) {
	t.Helper()
	opts.MaxMessageSize = 64 << 20
	h := &echoHandler{notify: make(chan struct{}, 1)}
	srv := enginetest.Start(t, h, opts)
	return srv.Addr().String(), h
}

// payloads are the messages every client echoes: empty, small, and 1 MiB
// (several reads and several gnet buffer sizes).
func payloads() map[string][]byte {
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	return map[string][]byte{
		"empty": {},
		"small": []byte("hello, wsloop \xe2\x82\xac"),
		"1MiB":  big,
	}
}
