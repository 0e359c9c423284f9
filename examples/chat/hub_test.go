package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsloop/wsloop/handler"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestHub(t *testing.T, cfg HubConfig) *Hub {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	h := NewHub(cfg)
	h.SetBroadcaster(fakeServer{})
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestJoinMembersAndNotices(t *testing.T) {
	h := newTestHub(t, HubConfig{PresenceInterval: -1})
	ann := connect(t, h, "lobby", "ann")
	if hist := ann.ofType("history"); len(hist) != 1 || len(hist[0]["messages"].([]any)) != 0 {
		t.Fatalf("ann: want one empty history, got %v", ann.messages())
	}
	if m := ann.last("members"); !slices.Equal(names(m), []string{"ann"}) || m["count"] != 1.0 {
		t.Fatalf("ann members = %v", m)
	}
	if ann.messages()[0]["type"] != "history" {
		t.Fatalf("history must come first, got %v", ann.messages())
	}

	before := len(ann.messages())
	bob := connect(t, h, "lobby", "bob")
	if m := bob.last("members"); !slices.Equal(names(m), []string{"ann", "bob"}) || m["count"] != 2.0 {
		t.Fatalf("bob members = %v", m)
	}
	if bob.last("join") != nil {
		t.Fatalf("bob was told about his own join: %v", bob.messages())
	}
	// ann gets exactly one delta for bob's join: no member list.
	got := ann.messages()[before:]
	if want := []map[string]any{{"type": "join", "name": "bob", "count": 2.0}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ann got %v for bob's join, want %v", got, want)
	}

	before = len(ann.messages())
	h.OnClose(bob, &handler.CloseError{Code: 1001, Remote: true})
	got = ann.messages()[before:]
	if want := []map[string]any{{"type": "leave", "name": "bob", "count": 1.0}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ann got %v for bob's leave, want %v", got, want)
	}
	if v := ann.view(); !slices.Equal(v.sorted(), []string{"ann"}) || v.count != 1 {
		t.Fatalf("ann's view after bob left = %v (%d)", v.sorted(), v.count)
	}
}

// TestJoinCostsEachMemberOneDelta fills a room, every notice sent at once,
// and checks what each member received: its own snapshots, then one small
// delta per later join, so a room of N costs each member O(N) bytes, not
// O(N²).
func TestJoinCostsEachMemberOneDelta(t *testing.T) {
	h := newTestHub(t, HubConfig{PresenceInterval: -1})
	const n = 300
	conns := make([]*fakeConn, n)
	for i := range n {
		conns[i] = connect(t, h, "big", fmt.Sprintf("m%03d", i))
	}
	for i, c := range conns {
		msgs := c.messages()
		if len(msgs) != 2+(n-1-i) {
			t.Fatalf("m%03d got %d messages, want history, members and %d joins", i, len(msgs), n-1-i)
		}
		for _, m := range msgs[2:] {
			if m["type"] != "join" {
				t.Fatalf("m%03d got %v after its snapshots", i, m)
			}
		}
		if v := c.view(); len(v.names) != n || v.count != n {
			t.Fatalf("m%03d sees %d names, count %d; want %d", i, len(v.names), v.count, n)
		}
	}
}

// TestJoinStormNoticesAreGathered: the first join after a quiet spell is
// announced at once, the ones that follow within PresenceInterval go out
// together in one "presence" message, which a chat message flushes first so
// that nobody's message arrives before their join.
func TestJoinStormNoticesAreGathered(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	// The clock stands still and the interval is long: only the message
	// can end it.
	h := newTestHub(t, HubConfig{PresenceInterval: time.Hour, Now: func() time.Time { return now }})
	const n = 300
	conns := make([]*fakeConn, n)
	for i := range n {
		conns[i] = connect(t, h, "storm", fmt.Sprintf("m%03d", i))
	}
	h.OnClose(conns[7], nil)
	say(h, conns[n-1], "last")

	var types []string
	for _, m := range conns[0].messages() {
		types = append(types, m["type"].(string))
	}
	if want := []string{"history", "members", "join", "presence", "message"}; !slices.Equal(types, want) {
		t.Fatalf("m000 got %v, want %v", types, want)
	}
	// m007 joined and left within the interval: the others never hear of
	// it.
	batch := conns[0].last("presence")
	got := batch["joined"].([]any)
	if len(got) != n-3 || got[0] != "m002" || got[len(got)-1] != fmt.Sprintf("m%03d", n-1) || slices.Contains(got, any("m007")) {
		t.Fatalf("presence joined = %v", got)
	}
	if left := batch["left"].([]any); len(left) != 0 || batch["count"] != float64(n-1) {
		t.Fatalf("presence = left %v, count %v", left, batch["count"])
	}
	for i, c := range conns {
		if i == 7 {
			continue
		}
		if v := c.view(); len(v.names) != n-1 || v.count != n-1 || v.names["m007"] {
			t.Fatalf("m%03d sees %d names, count %d", i, len(v.names), v.count)
		}
		if c.last("message") == nil {
			t.Fatalf("m%03d did not get the message", i)
		}
	}
}

// TestJoinerListIsCapped joins more members than a member list holds: the
// joiner gets MaxListedMembers names, its own among them, and the count.
func TestJoinerListIsCapped(t *testing.T) {
	h := newTestHub(t, HubConfig{PresenceInterval: -1})
	const n = MaxListedMembers + 200
	for i := range n {
		connectQuiet(t, h, "huge", fmt.Sprintf("m%04d", i))
	}
	late := connect(t, h, "huge", "zz-late")
	m := late.last("members")
	list := names(m)
	if len(list) != MaxListedMembers || m["count"] != float64(n+1) {
		t.Fatalf("late joiner got %d names, count %v; want %d names, count %d", len(list), m["count"], MaxListedMembers, n+1)
	}
	if !slices.IsSorted(list) || list[0] != "m0000" || list[len(list)-1] != "zz-late" {
		t.Fatalf("list is not the first names in order with the joiner's own: %v ... %v", list[:3], list[len(list)-3:])
	}
}

// TestLateJoinerAfterChurn: after 100 joins and 50 leaves a late joiner's
// list and count are right, and so is the view an early member built from
// the deltas.
func TestLateJoinerAfterChurn(t *testing.T) {
	h := newTestHub(t, HubConfig{PresenceInterval: -1})
	first := connect(t, h, "churn", "first")
	var conns []*fakeConn
	for i := range 100 {
		conns = append(conns, connect(t, h, "churn", fmt.Sprintf("p%03d", i)))
	}
	want := []string{"first"}
	for i, c := range conns {
		if i%2 == 0 {
			h.OnClose(c, nil)
		} else {
			want = append(want, c.name)
		}
	}
	late := connect(t, h, "churn", "late")
	want = append(want, "late")
	slices.Sort(want)
	if m := late.last("members"); !slices.Equal(names(m), want) || m["count"] != float64(len(want)) {
		t.Fatalf("late joiner's members = %v", m)
	}
	if v := first.view(); !slices.Equal(v.sorted(), want) || v.count != len(want) {
		t.Fatalf("first's view = %v (count %d), want %v", v.sorted(), v.count, want)
	}
}

func TestMessageFanOutAndRoomsAreSeparate(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_123)
	h := newTestHub(t, HubConfig{Now: func() time.Time { return now }})
	ann := connect(t, h, "lobby", "ann")
	bob := connect(t, h, "lobby", "bob")
	cy := connect(t, h, "other", "cy")

	say(h, ann, "hello <b>bob</b>")
	for _, c := range []*fakeConn{ann, bob} {
		m := c.last("message")
		want := map[string]any{"type": "message", "room": "lobby", "from": "ann", "text": "hello <b>bob</b>", "ts": float64(now.UnixMilli())}
		if fmt.Sprint(m) != fmt.Sprint(want) {
			t.Fatalf("%s got %v, want %v", c.name, m, want)
		}
	}
	if cy.last("message") != nil {
		t.Fatalf("a message leaked into another room: %v", cy.messages())
	}
	// the same name in another room is fine
	ann2 := connect(t, h, "other", "ann")
	if closed, _, _ := ann2.closeCode(); closed {
		t.Fatal("ann could not join a second room")
	}
}

func TestHistoryReplayLast50(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	ann := connect(t, h, "lobby", "ann")
	for i := range 60 {
		say(h, ann, fmt.Sprintf("m%d", i))
	}
	late := connect(t, h, "lobby", "late")
	hist := late.ofType("history")
	if len(hist) != 1 {
		t.Fatalf("want one history message, got %v", late.messages())
	}
	msgs := hist[0]["messages"].([]any)
	if len(msgs) != 50 {
		t.Fatalf("history has %d messages, want 50", len(msgs))
	}
	for i, m := range msgs {
		m := m.(map[string]any)
		if m["text"] != fmt.Sprintf("m%d", i+10) || m["from"] != "ann" || m["type"] != "message" || m["room"] != "lobby" {
			t.Fatalf("history[%d] = %v", i, m)
		}
	}
	if late.last("message") != nil {
		t.Fatal("history was also sent as live messages")
	}
}

func TestNameTakenIsRefused(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	ann := connect(t, h, "lobby", "ann")
	dup := connect(t, h, "lobby", "ann")
	e := dup.last("error")
	if e == nil || !strings.Contains(e["text"].(string), "already taken") {
		t.Fatalf("duplicate got no clear error: %v", dup.messages())
	}
	if closed, code, _ := dup.closeCode(); !closed || code != CloseNameTaken {
		t.Fatalf("duplicate not closed with %d: closed=%v code=%d", CloseNameTaken, closed, code)
	}
	if dup.last("history") != nil {
		t.Fatal("duplicate was let in")
	}
	// The refused connection's OnClose must not remove the real ann.
	h.OnClose(dup, &handler.CloseError{Code: CloseNameTaken})
	say(h, ann, "still here")
	if m := ann.last("message"); m == nil || m["text"] != "still here" {
		t.Fatalf("ann lost her membership: %v", ann.messages())
	}
	if ann.last("leave") != nil {
		t.Fatal("a leave was announced for the refused duplicate")
	}
	// Once ann left, the name is free again.
	h.OnClose(ann, errors.New("EOF"))
	again := connect(t, h, "lobby", "ann")
	if closed, _, _ := again.closeCode(); closed {
		t.Fatal("name not released after leave")
	}
}

func TestBadInputGetsVisibleErrors(t *testing.T) {
	h := newTestHub(t, HubConfig{MaxText: 10})
	ann := connect(t, h, "lobby", "ann")
	bob := connect(t, h, "lobby", "bob")
	cases := []struct {
		op   handler.Op
		data string
		want string
	}{
		{handler.Text, `{"type":"message","text":"12345678901"}`, "message too long: 11 bytes, the limit is 10"},
		{handler.Binary, "\x00\x01", "binary messages are not supported"},
		{handler.Text, `{"type":`, "invalid JSON"},
		{handler.Text, `{"type":"shout","text":"x"}`, `unknown message type "shout"`},
	}
	for _, tc := range cases {
		h.OnMessage(ann, tc.op, []byte(tc.data))
		e := ann.last("error")
		if e == nil || !strings.Contains(e["text"].(string), tc.want) {
			t.Errorf("%q: want error containing %q, got %v", tc.data, tc.want, e)
		}
	}
	h.OnMessage(ann, handler.Text, []byte(`{"type":"message","text":"   "}`))
	if bob.last("message") != nil || bob.last("error") != nil {
		t.Fatalf("bad input reached another member: %v", bob.messages())
	}
	if closed, _, _ := ann.closeCode(); closed {
		t.Fatal("a soft error closed the connection")
	}
}

func TestUpgradeValidation(t *testing.T) {
	h := newTestHub(t, HubConfig{MaxRooms: 1})
	cases := []struct {
		path, query string
		status      int
	}{
		{"/chat", "room=a&name=b", http.StatusNotFound},
		{"/ws", "name=b", http.StatusBadRequest},
		{"/ws", "room=no+spaces&name=b", http.StatusBadRequest},
		{"/ws", "room=a&name=", http.StatusBadRequest},
		{"/ws", "room=a&name=%20%20", http.StatusBadRequest},
		{"/ws", "room=a&name=" + strings.Repeat("x", 25), http.StatusBadRequest},
		{"/ws", "room=a&name=%07bell", http.StatusBadRequest},
		{"/ws", "room=a&name=%ff", http.StatusBadRequest},
	}
	for _, tc := range cases {
		var res handler.UpgradeResponse
		err := h.OnUpgrade(&handler.Request{Path: tc.path, RawQuery: tc.query}, &res)
		var he *handler.HTTPError
		if !errors.As(err, &he) || he.Status != tc.status || he.Reason == "" {
			t.Errorf("%s?%s: got %v, want %d with a reason", tc.path, tc.query, err, tc.status)
		}
	}
	var res handler.UpgradeResponse
	if err := h.OnUpgrade(&handler.Request{Path: "/ws", RawQuery: "room=a&name=Zoë+K"}, &res); err != nil {
		t.Fatal(err)
	}
	if m := res.Context.(*member); m.name != "Zoë K" || m.roomName != "a" {
		t.Fatalf("context = %+v", m)
	}
	connect(t, h, "a", "x")
	err := h.OnUpgrade(&handler.Request{Path: "/ws", RawQuery: "room=b&name=x"}, &res)
	var he *handler.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable {
		t.Fatalf("room cap: got %v", err)
	}
}

// TestConcurrentRooms joins, talks and leaves from many goroutines at once,
// as event loops do; run with -race.
func TestConcurrentRooms(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	const workers, rounds = 8, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				room := fmt.Sprintf("r%d", i%3)
				c := connect(t, h, room, fmt.Sprintf("w%d", w))
				say(h, c, "hi")
				h.OnClose(c, nil)
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, r := range h.allRooms() {
		r.mu.Lock()
		n, hist := len(r.local), len(r.history)
		r.mu.Unlock()
		if n != 0 {
			t.Fatalf("room %s still has %d members", r.name, n)
		}
		total += hist
	}
	// r0 and r1 got 56 messages each (capped at 50), r2 got 48.
	if total != 50+50+48 {
		t.Fatalf("history sizes sum to %d, want 148", total)
	}
}

// TestConcurrentJoinsConverge joins many members at once and checks that the
// last member list each of them received names everyone: snapshots and
// join notices must reach every connection in the order the room changed,
// or a stale snapshot can overwrite a newer one (as a browser tab once
// showed after a server restart).
func TestConcurrentJoinsConverge(t *testing.T) {
	for round := range 50 {
		h := newTestHub(t, HubConfig{})
		const n = 8
		conns := make([]*fakeConn, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conns[i] = connect(t, h, "lobby", fmt.Sprintf("m%d", i))
			}()
		}
		wg.Wait()
		for i, c := range conns {
			// The last notices may wait for the end of PresenceInterval.
			c.waitFor(t, fmt.Sprintf("round %d: m%d to see all %d members", round, i, n), func() bool {
				v := c.view()
				return len(v.names) == n && v.count == n
			})
		}
	}
}

// TestRoomNameCheckedBeforeCreation: nothing creates a room with an invalid
// name, not even an event from another node.
func TestRoomNameCheckedBeforeCreation(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	h.deliver(&Event{Type: EvMessage, Node: "other", Room: "bad room",
		Msg: &StoredMessage{ID: "x", Message: Message{Type: "message", Room: "bad room", From: "a", Text: "hi"}}})
	h.deliver(&Event{Type: EvJoin, Node: "other", Room: "bad room", Name: "a"})
	if r := h.room("bad room", true); r != nil {
		t.Fatal("a room with an invalid name was created")
	}
	if n := len(h.allRooms()); n != 0 {
		t.Fatalf("%d rooms exist after events for rooms nobody joined", n)
	}
}

// TestHelloForgetsOnlyAnotherProcess: a node's hello and its room events
// travel on different subjects, so a hello may arrive after the first joins
// of the process that sent it. It must forget only what another process of
// that node name had, whichever comes first.
func TestHelloForgetsOnlyAnotherProcess(t *testing.T) {
	h := newTestHub(t, HubConfig{PresenceInterval: -1})
	ann := connect(t, h, "lobby", "ann")
	members := func() []string { return ann.view().sorted() }

	h.deliver(&Event{Type: EvJoin, Node: "n2", Inc: "b", Room: "lobby", Name: "bob"})
	h.deliver(&Event{Type: EvHello, Node: "n2", Inc: "b"}) // late hello of bob's process
	if got := members(); !slices.Equal(got, []string{"ann", "bob"}) {
		t.Fatalf("after a late hello of bob's own process: members %v, want [ann bob]", got)
	}

	h.deliver(&Event{Type: EvHello, Node: "n2", Inc: "c"}) // n2 restarted
	if got := members(); !slices.Equal(got, []string{"ann"}) {
		t.Fatalf("after the hello of a new process of n2: members %v, want [ann]", got)
	}

	// A new process's first join may also beat its hello: the old
	// process's members go at that join.
	h.deliver(&Event{Type: EvJoin, Node: "n2", Inc: "c", Room: "lobby", Name: "bob"})
	h.deliver(&Event{Type: EvJoin, Node: "n2", Inc: "d", Room: "lobby", Name: "cy"})
	if got := members(); !slices.Equal(got, []string{"ann", "cy"}) {
		t.Fatalf("after a join of a newer process of n2: members %v, want [ann cy]", got)
	}
	// A late leave from the old process changes nothing.
	h.deliver(&Event{Type: EvLeave, Node: "n2", Inc: "c", Room: "lobby", Name: "cy"})
	if got := members(); !slices.Equal(got, []string{"ann", "cy"}) {
		t.Fatalf("after a late leave of the old process: members %v, want [ann cy]", got)
	}
	h.deliver(&Event{Type: EvLeave, Node: "n2", Inc: "d", Room: "lobby", Name: "cy"})
	if got := members(); !slices.Equal(got, []string{"ann"}) {
		t.Fatalf("after cy's leave: members %v, want [ann]", got)
	}
}
