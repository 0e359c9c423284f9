package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsloop/wsloop/handler"
	"github.com/wsloop/wsloop/internal/testtool"
)

func TestFallbackServesThePage(t *testing.T) {
	app := NewApp(Config{MaxText: 321, Logger: quietLogger()})
	for _, path := range []string{"/", "/index.html"} {
		res := app.fallback(&handler.Request{Method: "GET", Path: path, RawQuery: "room=lobby&name=ann"})
		if res.Status != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("%s: %d %v", path, res.Status, res.Header)
		}
		body := string(res.Body)
		if !strings.Contains(body, "const MAX_TEXT = 321;") || strings.Contains(body, "{{") {
			t.Fatalf("%s: limit not filled in", path)
		}
	}
	if res := app.fallback(&handler.Request{Method: "GET", Path: "/ws"}); res.Status != http.StatusUpgradeRequired {
		t.Fatalf("plain GET /ws: %d", res.Status)
	}
	if res := app.fallback(&handler.Request{Method: "GET", Path: "/secret"}); res.Status != http.StatusNotFound {
		t.Fatalf("/secret: %d", res.Status)
	}
}

// TestPageScriptParses checks the page's JavaScript with node --check, so a
// syntax error is caught without a browser.
func TestPageScriptParses(t *testing.T) {
	node := testtool.Node(t)
	app := NewApp(Config{Logger: quietLogger()})
	page := string(app.page)
	start := strings.Index(page, "<script>")
	end := strings.LastIndex(page, "</script>")
	if start < 0 || end < start {
		t.Fatal("no script in the page")
	}
	f := filepath.Join(t.TempDir(), "page.js")
	if err := os.WriteFile(f, []byte(page[start+len("<script>"):end]), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(node, "--check", f).CombinedOutput(); err != nil {
		t.Fatalf("page script: %v\n%s", err, out)
	}
}
