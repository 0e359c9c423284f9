package main

import (
	"context"
	"slices"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// startNATS runs an embedded NATS server on a free loopback port.
func startNATS(t *testing.T) string {
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
	return ns.ClientURL()
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
	url := startNATS(t)
	n1 := newNATSHub(t, url, "n1")

	ann := connect(t, n1, "lobby", "ann")
	say(n1, ann, "before n2 started")
	ann.waitFor(t, "own message back through NATS", func() bool { return ann.last("message") != nil })

	// n2 starts later: the snapshot gives it n1's members and history.
	n2 := newNATSHub(t, url, "n2")
	waitHub(t, n2, func() bool { return n2.hasMember("lobby", "ann") })

	bob := connect(t, n2, "lobby", "bob")
	hist := bob.ofType("history")
	if len(hist) != 1 || len(hist[0]["messages"].([]any)) != 1 ||
		hist[0]["messages"].([]any)[0].(map[string]any)["text"] != "before n2 started" {
		t.Fatalf("bob's history on n2 = %v", bob.messages())
	}
	if got := names(bob.last("members")); !slices.Equal(got, []string{"ann", "bob"}) {
		t.Fatalf("bob sees members %v", got)
	}
	ann.waitFor(t, "bob's join from n2", func() bool {
		j := ann.last("join")
		return j != nil && j["name"] == "bob" && slices.Equal(names(ann.last("members")), []string{"ann", "bob"})
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
	if closed, code, _ := dup.closeCode(); !closed || code != CloseNameTaken {
		t.Fatalf("second ann on n2 was not refused: %v", dup.messages())
	}

	// Both nodes keep the same history, in the same order.
	late := connect(t, n1, "lobby", "late")
	var texts []string
	for _, m := range late.ofType("history")[0]["messages"].([]any) {
		texts = append(texts, m.(map[string]any)["text"].(string))
	}
	if want := []string{"before n2 started", "hello from n1", "hello from n2"}; !slices.Equal(texts, want) {
		t.Fatalf("history on n1 = %v, want %v", texts, want)
	}

	// bob leaves: ann on n1 sees it.
	n2.OnClose(bob, nil)
	ann.waitFor(t, "bob's leave", func() bool {
		l := ann.last("leave")
		return l != nil && l["name"] == "bob"
	})

	// n1 shuts down: n2 forgets its members at once.
	n1.Stop()
	waitHub(t, n2, func() bool { return !n2.hasMember("lobby", "ann") })
}

func TestNATSSilentNodeExpires(t *testing.T) {
	url := startNATS(t)
	b := NewNATSBroker(url, NATSOptions{Logger: quietLogger()})
	t.Cleanup(func() { _ = b.Close() })
	n1 := newTestHub(t, HubConfig{Node: "n1", Broker: b, Heartbeat: 20 * time.Millisecond})
	watcher := connect(t, n1, "lobby", "watcher")
	n1.remoteMember(&Event{Type: EvJoin, Node: "ghost", Room: "lobby", Name: "casper"})
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
		return slices.Equal(names(watcher.last("members")), []string{"watcher"})
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
	return slices.Contains(r.namesLocked(), name)
}

// waitHub polls a hub's state; its changes arrive on NATS goroutines that
// give the test no signal of their own.
func waitHub(t *testing.T, h *Hub, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for hub state")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
