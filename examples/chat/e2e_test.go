package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/wsloop/wsloop/engine"
)

func TestE2EPageIsServedOnTheSamePort(t *testing.T) {
	app := startApp(t, Config{MaxText: 1234})
	for _, path := range []string{"/", "/?room=lobby&name=ann"} {
		resp, err := http.Get("http://" + app.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if !strings.Contains(string(body), "const MAX_TEXT = 1234;") {
			t.Fatalf("GET %s: page without the limit filled in", path)
		}
	}
	resp, err := http.Get("http://" + app.Addr().String() + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("GET /nope: %d", resp.StatusCode)
	}
}

func TestE2EChat(t *testing.T) {
	app := startApp(t, Config{MaxText: 100})
	addr := app.Addr()

	ann := mustDial(t, addr, "lobby", "ann")
	if h := ann.expect(t, "history", typeIs("history")); len(h["messages"].([]any)) != 0 {
		t.Fatalf("fresh room has history %v", h)
	}
	bob := mustDial(t, addr, "lobby", "bob")
	bob.expect(t, "history", typeIs("history"))
	ann.expect(t, "bob's join", joined("bob"))
	bob.expect(t, "members", func(m map[string]any) bool {
		return m["type"] == "members" && slices.Equal(names(m), []string{"ann", "bob"})
	})

	ann.say(t, "hi bob")
	for _, c := range []*wsClient{ann, bob} {
		m := c.expect(t, "ann's message", textIs("hi bob"))
		if m["from"] != "ann" || m["room"] != "lobby" || m["ts"].(float64) < 1e12 {
			t.Fatalf("%s got %v", c.name, m)
		}
	}

	ann.say(t, strings.Repeat("x", 101))
	e := ann.expect(t, "size error", typeIs("error"))
	if !strings.Contains(e["text"].(string), "too long") {
		t.Fatalf("error = %v", e)
	}

	// A duplicate name gets an error message and close code 4409.
	dup := mustDial(t, addr, "lobby", "ann")
	e = dup.expect(t, "name error", typeIs("error"))
	if !strings.Contains(e["text"].(string), "already taken") {
		t.Fatalf("error = %v", e)
	}
	if code := dup.waitClosed(t); code != CloseNameTaken {
		t.Fatalf("duplicate closed with %d, want %d", code, CloseNameTaken)
	}

	// A late joiner gets the history; a leave is announced.
	cy := mustDial(t, addr, "lobby", "cy")
	h := cy.expect(t, "history", typeIs("history"))
	if msgs := h["messages"].([]any); len(msgs) != 1 || msgs[0].(map[string]any)["text"] != "hi bob" {
		t.Fatalf("history = %v", h)
	}
	_ = bob.write(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")))
	cy.expect(t, "bob's leave", left("bob"))

	// Bad requests are refused with an HTTP status and a reason.
	_, err := dialChat(t, addr, "no spaces", "x")
	var se ws.StatusError
	if !errors.As(err, &se) || int(se) != http.StatusBadRequest {
		t.Fatalf("bad room: %v", err)
	}
}

// TestE2EConnectionsPerAddressAreLimited runs the chat as main does, with
// a cap on the tabs of one address: past it the upgrade gets 429, and once
// one of them left, the address may join again.
func TestE2EConnectionsPerAddressAreLimited(t *testing.T) {
	app := startApp(t, Config{Engine: engine.Options{MaxConnsPerClient: 2}})
	addr := app.Addr()
	ann := mustDial(t, addr, "tabs", "ann")
	ann.expect(t, "history", typeIs("history"))
	bob := mustDial(t, addr, "tabs", "bob")
	ann.expect(t, "bob's join", joined("bob"))
	_, err := dialChat(t, addr, "tabs", "cy")
	var se ws.StatusError
	if !errors.As(err, &se) || int(se) != http.StatusTooManyRequests {
		t.Fatalf("a third tab from the same address: %v, want 429", err)
	}
	_ = bob.write(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")))
	ann.expect(t, "bob's leave", left("bob"))
	cy := mustDial(t, addr, "tabs", "cy")
	cy.expect(t, "history", typeIs("history"))
	if st := app.Server.Stats(); st.ClientConnLimited != 1 {
		t.Errorf("Stats.ClientConnLimited = %d, want 1", st.ClientConnLimited)
	}
}

// TestE2ESlowConsumerDoesNotSlowTheRoom has a member that never reads. The
// engine drops it once its outbound buffer passes the cap, and the member
// who reads gets every message in time.
func TestE2ESlowConsumerDoesNotSlowTheRoom(t *testing.T) {
	app := startApp(t, Config{MaxText: 4000, Engine: engine.Options{MaxOutboundBytes: 256 << 10}})
	addr := app.Addr()

	ann := mustDial(t, addr, "busy", "ann")
	bob := mustDial(t, addr, "busy", "bob")
	ann.expect(t, "history", typeIs("history"))
	bob.expect(t, "history", typeIs("history"))

	// slow completes the handshake and then never reads; a tiny receive
	// buffer makes the kernel absorb little.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		_ = rc.Control(func(fd uintptr) { serr = setRcvBuf(fd, 4096) }) // platform_*_test.go
		return serr
	}}
	raw, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	fmt.Fprintf(raw, "GET /ws?room=busy&name=slow HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	ann.expect(t, "slow's join", joined("slow"))

	// About 8 MB through the room: far past the cap plus what the kernel
	// buffers for the stuck socket.
	const n = 2000
	text := strings.Repeat("y", 3900)
	start := time.Now()
	go func() {
		for i := range n {
			if ann.write(ws.NewTextFrame(mustJSON(clientMsg{Type: "message", Text: fmt.Sprintf("%05d %s", i, text)}))) != nil {
				return // the test has failed or ended; expect reports it
			}
		}
	}()
	sawLeave := false
	for i := 0; i < n; {
		m := bob.expect(t, fmt.Sprintf("message %d", i), func(m map[string]any) bool {
			return m["type"] == "message" || left("slow")(m)
		})
		if m["type"] != "message" {
			sawLeave = true
			continue
		}
		if want := fmt.Sprintf("%05d ", i); !strings.HasPrefix(m["text"].(string), want) {
			t.Fatalf("message %d out of order: %.10s", i, m["text"])
		}
		i++
	}
	if !sawLeave {
		bob.expect(t, "slow to be dropped", left("slow"))
	}
	t.Logf("%d messages of 4 KB reached bob in %v; slow was dropped (slow consumers: %d)", n, time.Since(start), app.Server.Stats().SlowConsumers)
}

// TestE2ETwoNodesOverNATS runs two chat processes' worth of servers on one
// embedded NATS server: a message sent on one node reaches a client of the
// other, and a client joining later on either node gets the same history.
func TestE2ETwoNodesOverNATS(t *testing.T) {
	url := startNATS(t)
	a := startApp(t, Config{NATS: url, Node: "a"})
	b := startApp(t, Config{NATS: url, Node: "b"})

	ann := mustDial(t, a.Addr(), "lobby", "ann")
	ann.expect(t, "history", typeIs("history"))
	bob := mustDial(t, b.Addr(), "lobby", "bob")
	bob.expect(t, "members on b", func(m map[string]any) bool {
		return m["type"] == "members" && slices.Equal(names(m), []string{"ann", "bob"})
	})
	ann.expect(t, "bob's join on a", joined("bob"))

	ann.say(t, "from node a")
	bob.expect(t, "ann's message on b", textIs("from node a"))
	bob.say(t, "from node b")
	ann.expect(t, "bob's message on a", textIs("from node b"))

	// ann's name is taken on node b too.
	dup := mustDial(t, b.Addr(), "lobby", "ann")
	if code := dup.waitClosed(t); code != CloseNameTaken {
		t.Fatalf("duplicate across nodes closed with %d", code)
	}

	cy := mustDial(t, b.Addr(), "lobby", "cy")
	h := cy.expect(t, "history", typeIs("history"))
	var texts []string
	for _, m := range h["messages"].([]any) {
		texts = append(texts, m.(map[string]any)["text"].(string))
	}
	if !slices.Equal(texts, []string{"from node a", "from node b"}) {
		t.Fatalf("history on b = %v", texts)
	}
}

// TestE2EJoinStormKeepsReaders has hundreds of members join one room at
// once, on a small outbound cap. Each member that reads gets its own
// snapshots and one small delta per other joiner, so nobody is dropped as a
// slow consumer and everyone ends with the full list and count; the first
// member's bytes grow with the room, not with its square.
func TestE2EJoinStormKeepsReaders(t *testing.T) {
	app := startApp(t, Config{Engine: engine.Options{MaxOutboundBytes: 64 << 10}})
	const n, dialers = 300, 16
	clients := make([]*wsClient, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for d := range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := d; i < n; i += dialers {
				c, err := dialChat(t, app.Addr(), "storm", fmt.Sprintf("m%03d", i))
				if err != nil {
					errs <- err
					return
				}
				clients[i] = c
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, c := range clients {
		v := memberView{names: map[string]bool{}}
		for v.count != n || len(v.names) != n {
			m := c.expect(t, fmt.Sprintf("the room to fill (sees %d, count %d)", len(v.names), v.count), func(m map[string]any) bool {
				return m["type"] == "members" || m["type"] == "join" || m["type"] == "leave" || m["type"] == "presence"
			})
			v = replayInto(v, m)
		}
	}
	if st := app.Server.Stats(); st.SlowConsumers != 0 || st.Open != n {
		t.Fatalf("after the storm: %d slow consumers dropped, %d of %d open", st.SlowConsumers, st.Open, n)
	}
	// Each join costs each member one delta of about 40 bytes; the member
	// lists of the old protocol cost the first member ~0.3 MB here.
	var most int64
	for _, c := range clients {
		most = max(most, c.bytes.Load())
	}
	if limit := int64(64*n + 8<<10); most > limit {
		t.Fatalf("a member received %d bytes while %d joined; want at most %d", most, n, limit)
	}
}

// TestE2EOriginTricks: the chat's origin check (the engine's default,
// same origin) against the tricks of issue 25. Two Host lines are refused
// before the check (400); an absolute-form target gives the host the
// check compares with (RFC 9112 §3.2.2), so a foreign Origin is refused
// whether the target names the chat or another host.
func TestE2EOriginTricks(t *testing.T) {
	app := startApp(t, Config{MaxText: 100})
	addr := app.Addr().String()
	const rest = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, c := range []struct {
		name, req string
		status    int
	}{
		{"two Hosts, foreign Origin", "GET /ws?room=r&name=a HTTP/1.1\r\nHost: evil.example\r\nHost: " + addr + "\r\nOrigin: http://evil.example\r\n" + rest, 400},
		{"absolute form, foreign Origin", "GET http://" + addr + "/ws?room=r&name=b HTTP/1.1\r\nHost: " + addr + "\r\nOrigin: http://evil.example\r\n" + rest, 403},
		{"absolute form naming another host", "GET http://evil.example/ws?room=r&name=c HTTP/1.1\r\nHost: " + addr + "\r\nOrigin: http://" + addr + "\r\n" + rest, 403},
		{"absolute form, same origin", "GET http://" + addr + "/ws?room=r&name=d HTTP/1.1\r\nHost: " + addr + "\r\nOrigin: http://" + addr + "\r\n" + rest, 101},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(conn, c.req+"\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
			}
		})
	}
}
