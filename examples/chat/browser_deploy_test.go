//go:build linux

package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// wsWatch counts, through the DevTools protocol, the WebSockets a tab opens
// and sees closed.
type wsWatch struct {
	mu             sync.Mutex
	created, close int
}

func watchWebSockets(t *testing.T, tab context.Context) *wsWatch {
	t.Helper()
	w := &wsWatch{}
	if err := chromedp.Listen(tab, func(ev any) {
		switch ev.(type) {
		case *network.EventWebSocketCreated:
			w.mu.Lock()
			w.created++
			w.mu.Unlock()
		case *network.EventWebSocketClosed:
			w.mu.Lock()
			w.close++
			w.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *wsWatch) counts() (created, closed int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.created, w.close
}

// talkJS makes the page send "NAME-1" to "NAME-n", one every ms
// milliseconds, through its own form; window.__sent counts them.
func talkJS(name string, n, ms int) string {
	return fmt.Sprintf(`(() => {
		window.__sent = 0;
		const timer = setInterval(() => {
			if (window.__sent >= %d) { clearInterval(timer); return; }
			window.__sent++;
			document.getElementById("text").value = %s + "-" + window.__sent;
			document.getElementById("sendbtn").click();
		}, %d);
		return true;
	})()`, n, jsString(name), ms)
}

// inOrderJS is true once the page shows every message of both senders,
// 1 to n, each once and in order, and nothing else since it joined but
// the notice of bob's arrival.
func inOrderJS(n int) string {
	return `(() => {
		const texts = [...document.querySelectorAll("#messages li.msg .text")].map(e => e.textContent);
		const next = {ann: 1, bob: 1};
		for (const t of texts) {
			const [who, num] = t.split("-");
			if (+num !== next[who]) return false;
			next[who]++;
		}
		return next.ann === ` + strconv.Itoa(n+1) + ` && next.bob === ` + strconv.Itoa(n+1) + `;
	})()`
}

// eval evaluates a JavaScript expression in a tab.
func eval[T any](t *testing.T, tab context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// noticesJS returns the page's notices, joined with "|".
const noticesJS = `[...document.querySelectorAll("#messages li.notice")].map(e => e.textContent).join("|")`

// TestBrowserDeploy: two Chromium tabs chat while the chat server is
// redeployed with SIGHUP. Through the DevTools protocol neither tab sees
// its WebSocket close or a new one open; every message of both arrives
// once, in order; nobody is announced leaving or joining again.
func TestBrowserDeploy(t *testing.T) {
	browser := newBrowser(t)
	p := startChat(t)
	base := "http://" + p.addr.String()

	ann := browser
	annWS := watchWebSockets(t, ann)
	do(t, ann, "ann joins", chromedp.Navigate(base+"/?room=deploy&name=ann"), statusIs("connected"), membersAre("ann"))
	bob := newTab(t, browser)
	bobWS := watchWebSockets(t, bob)
	do(t, bob, "bob joins", chromedp.Navigate(base+"/?room=deploy&name=bob"), statusIs("connected"), membersAre("ann", "bob"))
	do(t, ann, "ann sees bob", membersAre("ann", "bob"))
	annNotices := eval[string](t, ann, noticesJS)
	bobNotices := eval[string](t, bob, noticesJS)

	const n = 60
	eval[bool](t, ann, talkJS("ann", n, 30))
	eval[bool](t, bob, talkJS("bob", n, 30))
	do(t, ann, "the conversation is going", until(`window.__sent >= 10`))

	p.redeploy(t)

	for name, tab := range map[string]context.Context{"ann": ann, "bob": bob} {
		do(t, tab, name+" sent everything", until(`window.__sent === `+strconv.Itoa(n)))
		do(t, tab, name+" got every message once, in order", until(inOrderJS(n)), statusIs("connected"))
	}
	if after := eval[string](t, ann, noticesJS); after != annNotices {
		t.Errorf("ann's notices changed during the deploy: %q, then %q", annNotices, after)
	}
	if after := eval[string](t, bob, noticesJS); after != bobNotices {
		t.Errorf("bob's notices changed during the deploy: %q, then %q", bobNotices, after)
	}
	for name, w := range map[string]*wsWatch{"ann": annWS, "bob": bobWS} {
		if created, closed := w.counts(); created != 1 || closed != 0 {
			t.Errorf("%s's tab: %d WebSockets created, %d closed; want 1 and 0", name, created, closed)
		}
	}
	screenshot(t, ann, "chat-after-deploy.png")
}
