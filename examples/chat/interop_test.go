package main

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/engine/enginetest"
	"github.com/wsloop/wsloop/handler"
	"github.com/wsloop/wsloop/internal/testtool"
)

// echoHandler sends every message back as it came.
type echoHandler struct{ handler.Base }

func (echoHandler) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	_ = c.WriteMessage(op, data)
}

// startEcho runs an echo server on the engine until the test ends.
func startEcho(t *testing.T, opts engine.Options) net.Addr {
	t.Helper()
	opts.Logger = quietLogger()
	return enginetest.Start(t, echoHandler{}, opts).Addr()
}

// runClient runs a third-party client script against the echo server and
// the chat server; the script exits non-zero on any protocol error.
func runClient(t *testing.T, name string, argv ...string) {
	echo := startEcho(t, engine.Options{})
	// The same exchange with permessage-deflate on: both clients offer it by
	// default, and the scripts fail unless it was negotiated.
	deflate := startEcho(t, engine.Options{Deflate: engine.Deflate{Enabled: true}})
	// And over TLS (wss://, a self-signed certificate the scripts accept),
	// compressed too.
	secure := startEcho(t, engine.Options{Deflate: engine.Deflate{Enabled: true}, TLSConfig: testTLSConfig(t)})
	app := startApp(t, Config{})
	cases := []struct{ name, url, mode string }{
		{"echo", "ws://" + echo.String() + "/", "echo"},
		{"echo-deflate", "ws://" + deflate.String() + "/", "echo-deflate"},
		{"echo-wss", "wss://" + secure.String() + "/", "echo-deflate"},
		{"chat", "ws://" + app.Addr().String() + "/ws?room=interop&name=" + name, "chat"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append(append([]string(nil), argv[1:]...), tc.url, tc.mode)
			out, err := exec.CommandContext(ctx, argv[0], args...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "ok "+tc.mode) {
				t.Fatalf("%s client against the %s server: %v\n%s", name, tc.name, err, out)
			}
		})
	}
}

// TestInteropNodeWS drives the servers with Node's ws package.
func TestInteropNodeWS(t *testing.T) {
	dir := filepath.Join("testdata", "node")
	node, ws := testtool.NodeWS(t, dir)
	t.Setenv("WS_MODULE", ws) // client.mjs loads ws from there
	runClient(t, "node", node, filepath.Join(dir, "client.mjs"))
}

// TestInteropPythonWebsockets drives the servers with Python's websockets
// (Debian package python3-websockets).
func TestInteropPythonWebsockets(t *testing.T) {
	py := testtool.PythonWebsockets(t, "CHAT_PYTHON")
	runClient(t, "python", py, filepath.Join("testdata", "python", "client.py"))
}
