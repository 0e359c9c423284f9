package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wsloop/wsloop/internal/testtool"
)

// TestBrowserEcho loads the page in a headless Chromium: the page comes
// from net/http, its WebSocket is upgraded by the same server onto the
// engine, and what the person types comes back.
func TestBrowserEcho(t *testing.T) {
	path := testtool.Chromium(t)
	app, _, _ := startApp(t, Config{})

	// The flags keep the browser off every network but loopback.
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
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
		chromedp.UserDataDir(t.TempDir()),
	)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	// The first action starts the browser; it must not run under a timeout.
	if err := chromedp.Do(browser, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}

	ctx, cancel := context.WithTimeout(browser, 20*time.Second)
	defer cancel()
	const msg = "hello from Chromium"
	err := chromedp.Do(ctx,
		chromedp.Navigate("http://"+app.Addr().String()+"/"),
		until(`document.getElementById("status").dataset.state === "open"`),
		chromedp.SendKeys(chromedp.CSS("#text"), msg),
		chromedp.Click(chromedp.CSS("#send")),
		until(`[...document.querySelectorAll("#log li.echo")].some(e => e.textContent === "`+msg+`")`),
	)
	if err != nil {
		t.Fatalf("page: %v", err)
	}
	if st := app.WS.Stats(); st.Upgraded != 1 || st.MessagesIn != 1 {
		t.Errorf("engine saw %d upgrades and %d messages, want 1 and 1", st.Upgraded, st.MessagesIn)
	}
}

// until waits for a JavaScript expression to become true in the page.
func until(expr string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		var err error
		// Right after a navigation chromedp may still hold the old page's
		// execution context; polling again picks up the new one.
		for range 20 {
			_, err = chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(15*time.Second))(ctx, t)
			if err == nil || !strings.Contains(err.Error(), "Cannot find context") || ctx.Err() != nil {
				break
			}
		}
		return chromedp.Void{}, err
	}
}
