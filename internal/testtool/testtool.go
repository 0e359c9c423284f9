// Package testtool finds the third-party programs that the browser and
// interop tests drive (Chromium, Node and its ws package, Python's
// websockets), for the tests of this repository's modules.
//
// A test that lacks one is skipped with a message in one fixed form,
//
//	missing tool: NAME (install: COMMAND)
//
// which names the tool and how to install it, so that a skip says what to
// do. CI's runner (.ci/run) reads these messages: a test skipped for want of
// a tool the runner installed fails the run, so a broken install or lookup
// cannot pass as a green build.
package testtool

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The tools, by the names that skip messages and .ci/run use.
const (
	ToolChromium         = "chromium"
	ToolNode             = "node"
	ToolNodeWS           = "node-ws"
	ToolPythonWebsockets = "python3-websockets"
)

// debianNodeModules is where Debian's node-* packages install Node modules.
const debianNodeModules = "/usr/share/nodejs"

// Skip skips tb because tool is missing, saying how to install it.
func Skip(tb testing.TB, tool, install string) {
	tb.Helper()
	tb.Skipf("missing tool: %s (install: %s)", tool, install)
}

// Chromium returns the path of a Chrome or Chromium binary ($CHROMIUM, or
// one on PATH), or skips tb.
func Chromium(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	Skip(tb, ToolChromium, "apt-get install -y chromium, or set $CHROMIUM to a Chrome or Chromium binary")
	return ""
}

// Node returns the path of node, or skips tb.
func Node(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		Skip(tb, ToolNode, "apt-get install -y nodejs")
	}
	return p
}

// NodeWS returns node and the directory of Node's ws package, or skips
// tb. The package is looked for where `npm ci` in npmDir installs it, then
// where Debian's node-ws package does (/usr/share/nodejs/ws). A script
// loads it from that directory (the WS_MODULE environment variable in this
// repository's scripts): ES modules do not search Debian's directory by
// themselves.
func NodeWS(tb testing.TB, npmDir string) (node, wsModule string) {
	tb.Helper()
	node = Node(tb)
	for _, dir := range []string{filepath.Join(npmDir, "node_modules", "ws"), filepath.Join(debianNodeModules, "ws")} {
		if _, err := os.Stat(filepath.Join(dir, "package.json")); err == nil {
			abs, err := filepath.Abs(dir)
			if err != nil {
				tb.Fatal(err)
			}
			return node, abs
		}
	}
	if abs, err := filepath.Abs(npmDir); err == nil {
		npmDir = abs
	}
	Skip(tb, ToolNodeWS, "apt-get install -y node-ws, or npm ci in "+npmDir)
	return "", ""
}

// PythonWebsockets returns a python3 that can import websockets: $envVar,
// python3 on PATH, or Debian's own interpreter (which a PATH-first pyenv
// or venv python may hide); or skips tb.
func PythonWebsockets(tb testing.TB, envVar string) string {
	tb.Helper()
	var candidates []string
	if p := os.Getenv(envVar); p != "" {
		candidates = append(candidates, p)
	}
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	candidates = append(candidates, "/usr/bin/python3")
	for _, p := range candidates {
		if exec.Command(p, "-c", "import websockets").Run() == nil {
			return p
		}
	}
	Skip(tb, ToolPythonWebsockets, "apt-get install -y python3-websockets, or set $"+envVar+" to a python3 that has it")
	return ""
}
