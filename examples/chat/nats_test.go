package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// startNATS runs an embedded NATS server on a free loopback port.
func startNATS(t *testing.T) string {
	t.Helper()
	return startNATSServer(t).ClientURL()
}

func startNATSServer(t *testing.T) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// newNATSHub starts a hub on the shared NATS server, with fake connections.
func newNATSHub(t *testing.T, url, node string) *Hub {
	t.Helper()
	b := NewNATSBroker(url, NATSOptions{Logger: quietLogger()})
	h := newTestHub(t, HubConfig{Node: node, Broker: b, Heartbeat: time.Hour})
	t.Cleanup(func() { _ = b.Close() })
	return h
}

func TestNATSTwoNodesShareRooms(t *testing.T) {
	ns := startNATSServer(t)
	url := ns.ClientURL()
	n1 := newNATSHub(t, url, "n1")
	n2 := newNATSHub(t, url, "n2")

	ann := connect(t, n1, "lobby", "ann")
	ann.waitFor(t, "the history", func() bool { return ann.last("history") != nil })
	say(n1, ann, "before bob came")
	ann.waitFor(t, "own message back through NATS", func() bool { return ann.last("message") != nil })
	if n2.room("lobby", false) != nil {
		t.Fatal("n2 follows lobby without members there")
	}

	// bob's join on n2 asks n1 about lobby before bob gets anything.
	bob := connect(t, n2, "lobby", "bob")
	bob.waitFor(t, "the member list", func() bool { return bob.last("members") != nil })
	hist := bob.ofType("history")
	if len(hist) != 1 || len(hist[0]["messages"].([]any)) != 1 ||
		hist[0]["messages"].([]any)[0].(map[string]any)["text"] != "before bob came" {
		t.Fatalf("bob's history on n2 = %v", bob.messages())
	}
	if m := bob.last("members"); !slices.Equal(names(m), []string{"ann", "bob"}) || m["count"] != 2.0 {
		t.Fatalf("bob sees members %v", m)
	}
	ann.waitFor(t, "bob's join from n2", func() bool {
		v := ann.view()
		return v.count == 2 && slices.Equal(v.sorted(), []string{"ann", "bob"})
	})

	// A message sent on n1 reaches a client of n2, and the other way round.
	say(n1, ann, "hello from n1")
	bob.waitFor(t, "ann's message", func() bool {
		m := bob.last("message")
		return m != nil && m["text"] == "hello from n1" && m["from"] == "ann" && m["room"] == "lobby"
	})
	say(n2, bob, "hello from n2")
	ann.waitFor(t, "bob's message", func() bool {
		m := ann.last("message")
		return m != nil && m["text"] == "hello from n2" && m["from"] == "bob"
	})

	// Names are unique across nodes.
	dup := connect(t, n2, "lobby", "ann")
	dup.waitFor(t, "the refusal", func() bool { closed, _, _ := dup.closeCode(); return closed })
	if _, code, _ := dup.closeCode(); code != CloseNameTaken {
		t.Fatalf("second ann on n2 was not refused: %v", dup.messages())
	}

	// Both nodes keep the same history, in the same order.
	late := connect(t, n1, "lobby", "late")
	var texts []string
	for _, m := range late.ofType("history")[0]["messages"].([]any) {
		texts = append(texts, m.(map[string]any)["text"].(string))
	}
	if want := []string{"before bob came", "hello from n1", "hello from n2"}; !slices.Equal(texts, want) {
		t.Fatalf("history on n1 = %v, want %v", texts, want)
	}

	// A room only one node serves is not sent to the other.
	cy := connect(t, n1, "other", "cy")
	cy.waitFor(t, "the history", func() bool { return cy.last("history") != nil })
	say(n1, cy, "n1 only")
	cy.waitFor(t, "own message", func() bool { return cy.last("message") != nil })
	if n2.room("other", false) != nil {
		t.Fatal("n2 got events of a room it has no members in")
	}

	// bob leaves: ann on n1 sees it, and n2 stops listening to lobby.
	n2.OnClose(bob, nil)
	ann.waitFor(t, "bob's leave", func() bool { return !ann.view().names["bob"] })
	waitFor(t, "n2 to unsubscribe from lobby", func() bool {
		return ns.GlobalAccount().Interest("wsloop.chat.room.lobby") == 1 // n1's
	})

	// n1 shuts down: a member of n2 forgets n1's members at once.
	dan := connect(t, n2, "lobby", "dan")
	dan.waitFor(t, "lobby's members", func() bool { return dan.view().count == 3 })
	n1.Stop()
	dan.waitFor(t, "n1's members to go", func() bool {
		v := dan.view()
		return v.count == 1 && slices.Equal(v.sorted(), []string{"dan"})
	})
}

// TestNATSHeartbeatHasConstantSize checks that what a node tells every
// other node does not grow with its members.
func TestNATSHeartbeatHasConstantSize(t *testing.T) {
	url := startNATS(t)
	tap, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	beats, err := tap.SubscribeSync("wsloop.chat.nodes")
	if err != nil {
		t.Fatal(err)
	}
	if err := tap.Flush(); err != nil {
		t.Fatal(err)
	}
	b := NewNATSBroker(url, NATSOptions{Logger: quietLogger()})
	t.Cleanup(func() { _ = b.Close() })
	h := newTestHub(t, HubConfig{Node: "n1", Broker: b, Heartbeat: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	defer func() { cancel(); <-done }()

	heartbeat := func() []byte {
		t.Helper()
		for {
			m, err := beats.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatalf("no heartbeat: %v", err)
			}
			var ev Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatalf("node event %q: %v", m.Data, err)
			}
			if ev.Type != EvHello {
				return m.Data
			}
		}
	}
	empty := heartbeat()
	var last *fakeConn
	for i := range 200 {
		last = connect(t, h, fmt.Sprintf("r%d", i%4), fmt.Sprintf("member-long-name-%03d", i))
	}
	last.waitFor(t, "the join", func() bool { return last.last("members") != nil })
	// Skip heartbeats sent before the joins: take one sent after.
	_ = heartbeat()
	if full := heartbeat(); len(full) != len(empty) {
		t.Fatalf("heartbeat grew from %d bytes (%s) to %d bytes (%s) with 200 members", len(empty), empty, len(full), full)
	}
}

func TestNATSSilentNodeExpires(t *testing.T) {
	url := startNATS(t)
	b := NewNATSBroker(url, NATSOptions{Logger: quietLogger()})
	t.Cleanup(func() { _ = b.Close() })
	n1 := newTestHub(t, HubConfig{Node: "n1", Broker: b, Heartbeat: 20 * time.Millisecond})
	watcher := connect(t, n1, "lobby", "watcher")
	watcher.waitFor(t, "the member list", func() bool { return watcher.last("members") != nil })
	n1.deliver(&Event{Type: EvJoin, Node: "ghost", Room: "lobby", Name: "casper"})
	n1.mu.Lock()
	n1.nodes["ghost"] = time.Now().Add(-time.Hour) // last heard from long ago
	n1.mu.Unlock()
	if !n1.hasMember("lobby", "casper") {
		t.Fatal("remote member not recorded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n1.Run(ctx) }()
	defer func() { cancel(); <-done }()
	watcher.waitFor(t, "casper to expire", func() bool {
		v := watcher.view()
		return v.count == 1 && slices.Equal(v.sorted(), []string{"watcher"})
	})
}

// hasMember reports whether the hub lists name in room (any node).
func (h *Hub) hasMember(room, name string) bool {
	r := h.room(room, false)
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refs[name] > 0
}

// waitFor polls state that changes on goroutines (NATS deliveries, the
// NATS server) that give the test no signal of their own.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNATSJoinerWaitsForEveryServingNode: a room served by two nodes gets
// a member on a third; the joiner's first member list already has both
// other nodes' members, because the third node waits for the answer of
// every node an answer names.
func TestNATSJoinerWaitsForEveryServingNode(t *testing.T) {
	url := startNATS(t)
	n1, n2, n3 := newNATSHub(t, url, "n1"), newNATSHub(t, url, "n2"), newNATSHub(t, url, "n3")
	ann := connect(t, n1, "lobby", "ann")
	ann.waitFor(t, "the member list", func() bool { return ann.last("members") != nil })
	bob := connect(t, n2, "lobby", "bob")
	bob.waitFor(t, "the member list", func() bool { return bob.last("members") != nil })
	ann.waitFor(t, "bob", func() bool { return ann.view().count == 2 })
	for i := range 5 {
		cy := connect(t, n3, "lobby", "cy")
		cy.waitFor(t, "the member list", func() bool { return cy.last("members") != nil })
		if m := cy.ofType("members")[0]; !slices.Equal(names(m), []string{"ann", "bob", "cy"}) || m["count"] != 3.0 {
			t.Fatalf("round %d: cy's first member list = %v", i, m)
		}
		n3.OnClose(cy, nil) // n3 stops serving lobby; the next cy asks again
		ann.waitFor(t, "cy to leave", func() bool { return ann.view().count == 2 })
	}
}

// TestNATSFirstMembersAtOnce: the first members of a room on two nodes
// join at the same moment; neither node has answered yet when the other
// asks, and each must still learn of the other's member through the room's
// events.
func TestNATSFirstMembersAtOnce(t *testing.T) {
	url := startNATS(t)
	n1, n2 := newNATSHub(t, url, "n1"), newNATSHub(t, url, "n2")
	for i := range 10 {
		room := fmt.Sprintf("r%d", i)
		var a, b *fakeConn
		done := make(chan struct{})
		go func() { defer close(done); a = connect(t, n1, room, "ann") }()
		b = connect(t, n2, room, "bob")
		<-done
		for _, c := range []*fakeConn{a, b} {
			c.waitFor(t, room+": both members", func() bool {
				v := c.view()
				return v.count == 2 && slices.Equal(v.sorted(), []string{"ann", "bob"})
			})
		}
	}
}

// lineLog is a log destination that hands each line to a channel (and
// drops lines nobody waits for any more).
type lineLog chan string

func (l lineLog) Write(p []byte) (int, error) {
	select {
	case l <- string(p):
	default:
	}
	return len(p), nil
}

// next returns the next line that contains s, failing the test with every
// line read so far when none comes within 10 s.
func (l lineLog) next(t *testing.T, s string) (seen []string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line := <-l:
			seen = append(seen, line)
			if strings.Contains(line, s) {
				return seen
			}
		case <-timeout:
			t.Fatalf("no log line with %q; got:\n%s", s, strings.Join(seen, ""))
		}
	}
}

// A node logs its NATS connection once; a clean shutdown logs no warning;
// a NATS server that goes away does.
func TestNATSLogLines(t *testing.T) {
	for _, lost := range []bool{false, true} {
		ns := startNATSServer(t)
		lines := make(lineLog, 1024)
		b := NewNATSBroker(ns.ClientURL(), NATSOptions{Logger: slog.New(slog.NewTextHandler(lines, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		newTestHub(t, HubConfig{Node: "n1", Broker: b, Heartbeat: time.Hour})
		var seen []string
		if lost {
			ns.Shutdown()
			seen = lines.next(t, "level=WARN")
			if !strings.Contains(seen[len(seen)-1], "nats disconnected") {
				t.Errorf("warning when the NATS server went away: %s", seen[len(seen)-1])
			}
		}
		_ = b.Close()
		seen = append(seen, lines.next(t, "nats connection closed")...)
		connected, warned := 0, 0
		for _, l := range seen {
			if strings.Contains(l, `msg="nats connected"`) {
				connected++
			}
			if strings.Contains(l, "level=WARN") {
				warned++
			}
		}
		if want := map[bool]int{false: 0, true: 1}[lost]; connected != 1 || warned != want {
			t.Errorf("server lost: %v; connection logged %d times, %d warnings (want 1, %d):\n%s", lost, connected, warned, want, strings.Join(seen, ""))
		}
	}
}
