package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gobwas/ws"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/internal/testtool"
)

var updateDocs = flag.Bool("update-docs", false, "also write the browser test's screenshot to docs/chat.png at the repository root")

// newBrowser starts a headless Chromium with a fresh profile and returns
// the context of its first tab. The flags keep it off the network: this
// machine's is closed to everything but loopback.
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path := testtool.Chromium(t)
	opts := append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 640),
	}, extra...)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first action starts the browser; it must not run under a timeout.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	return ctx
}

// newTab opens another tab in the browser of ctx.
func newTab(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("new tab: %v", err)
	}
	return ctx
}

// do runs steps in a tab, bounded in time.
func do(t *testing.T, tab context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// until waits for a JavaScript expression to become true in the page.
func until(expr string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		var err error
		// Right after a navigation chromedp may still hold the old
		// page's execution context; polling again picks up the new one.
		for range 20 {
			_, err = chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(15*time.Second))(ctx, t)
			if err == nil || !strings.Contains(err.Error(), "Cannot find context") || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			err = fmt.Errorf("waiting for %s: %w", expr, err)
		}
		return chromedp.Void{}, err
	}
}

func jsString(s string) string { b, _ := json.Marshal(s); return string(b) }

func statusIs(state string) chromedp.Action[chromedp.Void] {
	return until(`document.getElementById("status").dataset.state === ` + jsString(state))
}

func shows(text string) chromedp.Action[chromedp.Void] {
	return until(`[...document.querySelectorAll("#messages li.msg .text")].some(e => e.textContent === ` + jsString(text) + `)`)
}

func membersAre(names ...string) chromedp.Action[chromedp.Void] {
	return until(`[...document.querySelectorAll("#members li")].map(e => e.textContent).join(",") === ` + jsString(strings.Join(names, ",")))
}

func countIs(n int) chromedp.Action[chromedp.Void] {
	return until(`document.getElementById("membercount").textContent === ` + jsString(strconv.Itoa(n)))
}

func send(text string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(chromedp.SendKeys(chromedp.CSS("#text"), text), chromedp.Click(chromedp.CSS("#sendbtn")))
}

// TestBrowserChat is the chat as a person uses it: tabs of a real headless
// Chromium join a room, talk, see the history, get refused a taken name and
// a too long message, and come back by themselves after a server restart.
func TestBrowserChat(t *testing.T) {
	browser := newBrowser(t)
	// permessage-deflate on, compressing every message: Chromium offers it
	// on its own, so the page's traffic runs compressed both ways.
	deflate := engine.Options{Deflate: engine.Deflate{Enabled: true, Threshold: -1}}
	app, stop := runApp(t, Config{Engine: deflate})
	t.Cleanup(func() { stop() })
	base := "http://" + app.Addr().String()

	ann := browser
	do(t, ann, "ann joins via the URL", chromedp.Navigate(base+"/?room=lobby&name=ann"), statusIs("connected"), membersAre("ann"), countIs(1))

	bob := newTab(t, browser)
	do(t, bob, "bob joins with the form",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#join")),
		chromedp.SendKeys(chromedp.CSS("#name"), "bob"),
		chromedp.Click(chromedp.CSS("#joinbtn")),
		statusIs("connected"), membersAre("ann", "bob"), countIs(2))
	do(t, ann, "ann sees bob arrive", membersAre("ann", "bob"), countIs(2),
		until(`[...document.querySelectorAll("#messages li.notice")].some(e => e.textContent === "bob joined")`))

	do(t, ann, "ann sends", send("hello from ann"), shows("hello from ann"))
	do(t, bob, "bob gets it and answers", shows("hello from ann"), send("hi ann, the room works"))
	do(t, ann, "ann gets the answer", shows("hi ann, the room works"))

	cy := newTab(t, browser)
	do(t, cy, "cy gets the history", chromedp.Navigate(base+"/?room=lobby&name=cy"), statusIs("connected"),
		shows("hello from ann"), shows("hi ann, the room works"), membersAre("ann", "bob", "cy"), countIs(3),
		until(`[...document.querySelectorAll("#messages li.notice")].some(e => e.textContent === "you joined #lobby (last 2 messages above)")`))
	do(t, bob, "bob sees three members", membersAre("ann", "bob", "cy"), countIs(3), send("welcome cy"))
	do(t, cy, "cy sees bob", shows("welcome cy"))
	if n := app.Server.Stats().Deflate.Negotiated; n < 3 {
		t.Errorf("%d of the 3 tabs negotiated permessage-deflate with Chromium", n)
	}

	shot := screenshot(t, bob, "chat.png")
	if *updateDocs {
		dst := filepath.Join("..", "..", "docs", "chat.png")
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", dst)
	}

	do(t, cy, "a message over the limit shows an error",
		chromedp.SetValue(chromedp.CSS("#text"), strings.Repeat("z", 2001)),
		chromedp.Click(chromedp.CSS("#sendbtn")),
		chromedp.WaitVisible(chromedp.CSS("#error")),
		until(`document.getElementById("error").textContent.includes("too long")`))

	dup := newTab(t, browser)
	do(t, dup, "a taken name is refused with a reason", chromedp.Navigate(base+"/?room=lobby&name=ann"),
		statusIs("refused"), chromedp.WaitVisible(chromedp.CSS("#join")),
		until(`document.getElementById("joinerror").textContent.includes("already taken")`))

	// Restart the server on the same port: every tab reconnects by itself.
	addr := app.Addr().String()
	stop()
	do(t, ann, "ann notices the server is gone", statusIs("reconnecting"))
	_, stop2 := runApp(t, Config{Addr: addr, Engine: deflate})
	t.Cleanup(stop2)
	for name, tab := range map[string]context.Context{"ann": ann, "bob": bob, "cy": cy} {
		do(t, tab, name+" reconnects", statusIs("connected"), membersAre("ann", "bob", "cy"))
	}
	screenshot(t, ann, "chat-after-restart.png")
}

// screenshot saves the tab's viewport as a PNG test artifact in
// $CHAT_ARTIFACTS (or a temporary directory) and returns it.
func screenshot(t *testing.T, tab context.Context, name string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("CHAT_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
	return png
}

// TestBrowserMemberListAfterChurn: 100 members join a room a page is in and
// 50 of them leave. The page keeps its list from the join and leave deltas
// alone, and a page that joins afterwards gets the right list and count.
func TestBrowserMemberListAfterChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("a browser with 100 members coming and going: skipped with -short")
	}
	browser := newBrowser(t)
	app := startApp(t, Config{})
	base := "http://" + app.Addr().String()

	ann := browser
	do(t, ann, "ann joins", chromedp.Navigate(base+"/?room=churn&name=ann"), statusIs("connected"), membersAre("ann"))

	want := []string{"ann"}
	var clients []*wsClient
	for i := range 100 {
		c := mustDial(t, app.Addr(), "churn", fmt.Sprintf("p%03d", i))
		c.expect(t, "history", typeIs("history"))
		clients = append(clients, c)
	}
	for i, c := range clients {
		if i%2 == 0 {
			_ = c.write(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")))
			c.waitClosed(t)
		} else {
			want = append(want, c.name)
		}
	}
	do(t, ann, "ann's list follows the joins and leaves", countIs(len(want)), membersAre(want...))

	zed := newTab(t, browser)
	want = append(want, "zed")
	slices.Sort(want)
	do(t, zed, "a late joiner gets the list and the count",
		chromedp.Navigate(base+"/?room=churn&name=zed"), statusIs("connected"), countIs(len(want)), membersAre(want...))
	do(t, ann, "ann sees zed", countIs(len(want)), membersAre(want...))
}

// TestBrowserChatTLS is the chat over https:// and wss://: the page and the
// WebSocket served by the engine over crypto/tls on its event loops, with a
// test certificate the browser is told to accept, and permessage-deflate.
func TestBrowserChatTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("a second browser session, over TLS: skipped with -short")
	}
	browser := newBrowser(t, chromedp.Flag("ignore-certificate-errors", true))
	opts := engine.Options{Deflate: engine.Deflate{Enabled: true, Threshold: -1}, TLSConfig: testTLSConfig(t)}
	app, stop := runApp(t, Config{Engine: opts})
	t.Cleanup(func() { stop() })
	base := "https://" + app.Addr().String()

	ann := browser
	do(t, ann, "ann joins over wss", chromedp.Navigate(base+"/?room=secure&name=ann"), statusIs("connected"), membersAre("ann"), countIs(1))
	bob := newTab(t, browser)
	do(t, bob, "bob joins over wss", chromedp.Navigate(base+"/?room=secure&name=bob"), statusIs("connected"), membersAre("ann", "bob"), countIs(2))
	do(t, ann, "ann sends", send("hello over TLS"), shows("hello over TLS"))
	do(t, bob, "bob gets it and answers", shows("hello over TLS"), send("encrypted both ways"))
	do(t, ann, "ann gets the answer", shows("encrypted both ways"))
	st := app.Server.Stats()
	if st.TLSHandshakes < 2 || app.Server.Stats().Deflate.Negotiated < 2 {
		t.Errorf("TLS handshakes %d, deflate negotiated %d: want both tabs on wss with permessage-deflate", st.TLSHandshakes, app.Server.Stats().Deflate.Negotiated)
	}
}
