package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// Broadcaster writes one prepared frame to many connections.
// *engine.Server implements it; tests use a fake.
type Broadcaster interface {
	Broadcast(conns []handler.Conn, f *codec.PreparedFrame)
}

// HubConfig configures a [Hub]. Zero fields get the defaults below.
type HubConfig struct {
	// Node identifies this chat process among those sharing a broker.
	Node string
	// Broker carries chat events between nodes. Default: a LocalBroker.
	Broker Broker
	// HistorySize is how many messages of a room are kept and replayed to
	// whoever joins. Default 50.
	HistorySize int
	// MaxText is the largest message text, in bytes, the hub accepts; a
	// longer one is answered with an error message. Default 2000.
	MaxText int
	// MaxRooms caps the number of rooms; joining a new room past it is
	// refused with 503. Default 10000.
	MaxRooms int
	// Heartbeat is the period of presence announcements between nodes; a
	// node silent for three periods is forgotten. Default 5 s.
	Heartbeat time.Duration
	// PresenceInterval paces the join and leave notices of a room: a change
	// after a quiet spell is sent at once, and the changes that follow
	// within the interval are gathered into one "presence" message sent when
	// it ends, so a join storm costs each member at most one frame per
	// interval. Default 100 ms; negative sends every change at once.
	PresenceInterval time.Duration
	// Logger receives the hub's log lines. Default slog.Default().
	Logger *slog.Logger
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Hub is the chat room logic: a [handler.Handler] (and [handler.Upgrader])
// that keeps the rooms, their members and their history, and fans messages
// out with one encoded frame per message.
//
// Joining and leaving cost each other member one small delta ("join",
// "leave", with the new count), gathered into one "presence" message per
// PresenceInterval in a storm; only the joiner gets the member list, at most
// MaxListedMembers names and the count. So a room that fills up to N members
// sends O(N) bytes to each of them, not O(N²).
//
// Every callback runs on an event loop, so the hub never blocks: room state
// is guarded by a per-room mutex held only briefly, while the state is read
// or changed and its frames are queued (queuing never blocks and never runs
// a callback; see send), never while publishing to the broker.
type Hub struct {
	handler.Base

	cfg    HubConfig
	log    *slog.Logger
	out    atomic.Pointer[Broadcaster]
	seq    atomic.Uint64
	frozen atomic.Bool // a handoff is on: pending notices wait (handoff.go)

	// inc names this process among those that ever ran as cfg.Node. A
	// node's hello travels on another subject than its room events, and
	// NATS orders only the messages of one subject: a hello may reach the
	// others after this process's first joins. They forget only the
	// members of another incarnation, so the order does not matter.
	inc string

	mu    sync.Mutex
	rooms map[string]*room
	nodes map[string]time.Time // other nodes, last heard from
}

// Room states. A room is live while this node serves members in it and
// receives its events; it is idle (history kept, events not received)
// before its first local member and after its last; in between it is
// syncing: subscribed, waiting for the other nodes' answers, holding its
// joiners and the events that arrive meanwhile.
const (
	roomIdle = iota
	roomSyncing
	roomLive
)

// room is one chat room. Its fields are guarded by mu.
type room struct {
	name string

	mu        sync.Mutex
	state     int
	gen       uint64 // counts Subscribe and Sync calls; an answer for an older one is stale
	resyncing bool   // a repair Sync is out: hold join and leave events until it answers
	local     map[string]*member
	conns     []handler.Conn // local connections; conns[m.idx] == m.conn
	pending   []*member      // waiting for the room's first sync
	backlog   []*Event       // held while syncing

	// Everyone in the room, on every node: each name's number of places
	// (normally 1) and the names sorted, so a joiner's list is a prefix.
	remote map[string]map[string]struct{} // node -> names connected there
	incs   map[string]string              // node -> the Inc its names in remote came from
	refs   map[string]int
	names  []string

	history []histEntry // oldest first, at most HistorySize

	// Join and leave notices not sent yet (see HubConfig.PresenceInterval):
	// each changed name and whether the members last heard of it.
	pend        map[string]bool
	pendOrder   []string
	lastNotice  time.Time
	noticeTimer *time.Timer
}

type histEntry struct {
	msg StoredMessage
	raw []byte // msg.Message as the JSON clients get
}

// member is the Context of each connection: who it is and where.
type member struct {
	roomName string
	name     string
	conn     handler.Conn
	room     *room       // set in OnOpen
	joined   atomic.Bool // admitted to the room (false while it syncs)
	idx      int         // index in room.conns, guarded by room.mu
}

// NewHub returns a hub. Call [Hub.SetBroadcaster] and [Hub.Start] before
// serving connections.
func NewHub(cfg HubConfig) *Hub {
	if cfg.Node == "" {
		cfg.Node = "node-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	if cfg.Broker == nil {
		cfg.Broker = NewLocalBroker()
	}
	if cfg.HistorySize <= 0 {
		cfg.HistorySize = 50
	}
	if cfg.MaxText <= 0 {
		cfg.MaxText = 2000
	}
	if cfg.MaxRooms <= 0 {
		cfg.MaxRooms = 10000
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 5 * time.Second
	}
	if cfg.PresenceInterval == 0 {
		cfg.PresenceInterval = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Hub{
		cfg:   cfg,
		inc:   strconv.FormatUint(rand.Uint64(), 36),
		log:   cfg.Logger.With("node", cfg.Node),
		rooms: make(map[string]*room),
		nodes: make(map[string]time.Time),
	}
}

// SetBroadcaster sets what the hub fans messages out with, normally the
// *engine.Server that serves the hub.
func (h *Hub) SetBroadcaster(b Broadcaster) { h.out.Store(&b) }

// Start connects the hub to its broker and says hello to the other nodes,
// if any, so they forget what an earlier process of this name had.
func (h *Hub) Start() error {
	if err := h.cfg.Broker.Start(h.cfg.Node, brokerLink{h}); err != nil {
		return err
	}
	return h.cfg.Broker.Publish(&Event{Type: EvHello, Node: h.cfg.Node, Inc: h.inc})
}

// Run announces this node every heartbeat and forgets nodes that went
// silent, until ctx is done. Only useful with a shared broker.
func (h *Hub) Run(ctx context.Context) {
	t := time.NewTicker(h.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.publish(&Event{Type: EvPresence, Node: h.cfg.Node})
		deadline := h.cfg.Now().Add(-3 * h.cfg.Heartbeat)
		h.mu.Lock()
		var gone []string
		for n, seen := range h.nodes {
			if seen.Before(deadline) {
				gone = append(gone, n)
				delete(h.nodes, n)
			}
		}
		h.mu.Unlock()
		for _, n := range gone {
			h.log.Warn("chat node went silent; dropping its members", "peer", n)
			h.forgetNode(n, "")
		}
	}
}

// Stop tells the other nodes that this node's members are gone.
func (h *Hub) Stop() { h.publish(&Event{Type: EvBye, Node: h.cfg.Node}) }

// OnUpgrade accepts /ws?room=ROOM&name=NAME and refuses anything else with
// an HTTP error that says why.
func (h *Hub) OnUpgrade(r *handler.Request, res *handler.UpgradeResponse) error {
	if r.Path != "/ws" {
		return handler.Reject(http.StatusNotFound, "the chat WebSocket is at /ws?room=ROOM&name=NAME")
	}
	q, err := url.ParseQuery(r.RawQuery)
	if err != nil {
		return handler.Reject(http.StatusBadRequest, "bad query: "+err.Error())
	}
	roomName, name := q.Get("room"), strings.TrimSpace(q.Get("name"))
	if !validRoom(roomName) {
		return handler.Reject(http.StatusBadRequest, "room must be 1-32 letters, digits, '-' or '_'")
	}
	if !validName(name) {
		return handler.Reject(http.StatusBadRequest, fmt.Sprintf("name must be 1-%d printable characters", maxNameRunes))
	}
	h.mu.Lock()
	_, exists := h.rooms[roomName]
	full := !exists && len(h.rooms) >= h.cfg.MaxRooms
	h.mu.Unlock()
	if full {
		return handler.Reject(http.StatusServiceUnavailable, "too many rooms")
	}
	res.Context = &member{roomName: roomName, name: name}
	return nil
}

// OnOpen joins the connection to its room: it checks the name is free,
// replays the history and the member list, and tells everyone else. The
// first local member of a room waits (off the event loop) until the other
// nodes have said who is in the room and what was said.
func (h *Hub) OnOpen(c handler.Conn) {
	m, ok := c.Context().(*member)
	if !ok {
		_ = c.Close(1011, "no room")
		return
	}
	r := h.room(m.roomName, true)
	if r == nil {
		h.refuse(c, "too many rooms", 1013)
		return
	}
	m.conn, m.room = c, r
	r.mu.Lock()
	if r.takenLocked(m.name) {
		r.mu.Unlock()
		h.refuseTaken(m)
		return
	}
	switch r.state {
	case roomLive:
		h.admitLocked(r, m)
		r.mu.Unlock()
		h.publish(&Event{Type: EvJoin, Node: h.cfg.Node, Room: r.name, Name: m.name})
	case roomSyncing:
		r.pending = append(r.pending, m)
		r.mu.Unlock()
	default:
		r.state = roomSyncing
		r.pending = append(r.pending, m)
		r.gen++
		gen := r.gen
		r.mu.Unlock()
		h.cfg.Broker.Subscribe(r.name, func(states []RoomState) { h.synced(r, gen, states) })
	}
	h.log.Debug("join", "room", m.roomName, "name", m.name, "remote", c.RemoteAddr())
}

// admitLocked makes m a member of r: the joiner gets the history and the
// member list, the others one join delta.
func (h *Hub) admitLocked(r *room, m *member) {
	others := r.conns
	if r.addLocalLocked(m) {
		h.changedLocked(r, m.name, false, others)
	}
	m.joined.Store(true)
	hist := make([]json.RawMessage, len(r.history))
	for i, e := range r.history {
		hist[i] = e.raw
	}
	// Through Broadcast, like everything else the room sends, so the
	// joiner's snapshots are queued ahead of any later delta or message
	// whichever goroutine admits it (see send). The list is the one the
	// others last heard, so the pending notices bring the joiner where they
	// bring everyone.
	names, count := r.heardLocked(m.name)
	self := []handler.Conn{m.conn}
	h.send(self, mustJSON(historyMsg{Type: "history", Messages: hist}))
	h.send(self, mustJSON(membersMsg{Type: "members", Names: names, Count: count}))
}

// synced applies the other nodes' answers about r: for a room's first
// sync, its members and history, then the events held meanwhile, then the
// joiners who waited; for a repair, the members.
func (h *Hub) synced(r *room, gen uint64, states []RoomState) {
	var joined []*member
	var refused []*member
	r.mu.Lock()
	if gen != r.gen || (r.state != roomSyncing && !r.resyncing) {
		r.mu.Unlock() // an answer overtaken by a later Subscribe or Sync
		return
	}
	if r.state == roomSyncing {
		r.remote = map[string]map[string]struct{}{}
		r.incs = map[string]string{}
		r.refs = map[string]int{}
		r.names = r.names[:0]
		var best []StoredMessage
		for _, st := range states {
			if st.Node == h.cfg.Node || st.Room != r.name {
				continue
			}
			r.setRemoteLocked(st.Node, st.Inc, st.Members)
			if len(st.History) > len(best) {
				best = st.History
			}
		}
		// Every node that serves the room holds a suffix of the same
		// sequence; the longest is the best. This node's own history is
		// older than any of theirs (it stopped listening when its last
		// member left), so it only counts when nobody else has one.
		if len(best) > 0 {
			r.history = r.history[:0]
			for _, msg := range best {
				if msg.Room == r.name {
					r.appendLocked(msg, h.cfg.HistorySize)
				}
			}
		}
		r.state = roomLive
		for _, ev := range r.backlog {
			h.applyLocked(r, ev)
		}
		r.backlog = nil
		for _, m := range r.pending {
			if r.refs[m.name] > 0 { // taken on another node (OnOpen ruled out local clashes)
				refused = append(refused, m)
				continue
			}
			h.admitLocked(r, m)
			joined = append(joined, m)
		}
		r.pending = nil
	} else {
		var changes []nameChange
		seen := map[string]bool{h.cfg.Node: true}
		for _, st := range states {
			if st.Room != r.name || seen[st.Node] {
				continue
			}
			seen[st.Node] = true
			changes = append(changes, r.setRemoteLocked(st.Node, st.Inc, st.Members)...)
		}
		// A node that did not answer has no members here any more.
		for node := range r.remote {
			if !seen[node] {
				changes = append(changes, r.setRemoteLocked(node, "", nil)...)
			}
		}
		h.announceLocked(r, changes)
		r.resyncing = false
		for _, ev := range r.backlog {
			h.applyLocked(r, ev)
		}
		r.backlog = nil
	}
	idle := r.idleIfEmptyLocked()
	r.mu.Unlock()

	for _, m := range refused {
		h.refuseTaken(m)
	}
	for _, m := range joined {
		h.publish(&Event{Type: EvJoin, Node: h.cfg.Node, Room: r.name, Name: m.name})
	}
	if idle {
		h.cfg.Broker.Unsubscribe(r.name)
	}
}

// refuse tells the client why it cannot join and closes the connection.
func (h *Hub) refuse(c handler.Conn, why string, code uint16) {
	_ = c.WriteMessage(handler.Text, errorJSON(why))
	reason := why
	if code == CloseNameTaken {
		reason = "name taken"
	}
	_ = c.Close(code, reason)
}

func (h *Hub) refuseTaken(m *member) {
	h.refuse(m.conn, fmt.Sprintf("the name %q is already taken in room %q; pick another one", m.name, m.roomName), CloseNameTaken)
}

// OnMessage handles {"type":"message","text":"..."} from a client.
func (h *Hub) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	m, ok := c.Context().(*member)
	if !ok || m.room == nil {
		return
	}
	if !m.joined.Load() {
		_ = c.WriteMessage(handler.Text, errorJSON("still joining the room: wait for the history, then send"))
		return
	}
	if op != handler.Text {
		_ = c.WriteMessage(handler.Text, errorJSON("binary messages are not supported: send JSON text"))
		return
	}
	var in clientMsg
	if err := json.Unmarshal(data, &in); err != nil {
		_ = c.WriteMessage(handler.Text, errorJSON("invalid JSON: "+err.Error()))
		return
	}
	if in.Type != "message" {
		_ = c.WriteMessage(handler.Text, errorJSON(fmt.Sprintf("unknown message type %q", in.Type)))
		return
	}
	if len(in.Text) > h.cfg.MaxText {
		_ = c.WriteMessage(handler.Text, errorJSON(fmt.Sprintf("message too long: %d bytes, the limit is %d", len(in.Text), h.cfg.MaxText)))
		return
	}
	if strings.TrimSpace(in.Text) == "" {
		return
	}
	ev := &Event{Type: EvMessage, Node: h.cfg.Node, Room: m.roomName, Msg: &StoredMessage{
		ID: h.cfg.Node + "-" + strconv.FormatUint(h.seq.Add(1), 10),
		Message: Message{
			Type: "message", Room: m.roomName, From: m.name, Text: in.Text,
			TS: h.cfg.Now().UnixMilli(),
		},
	}}
	if err := h.cfg.Broker.Publish(ev); err != nil {
		h.log.Warn("publish failed", "err", err)
		_ = c.WriteMessage(handler.Text, errorJSON("server busy: message not sent, try again"))
	}
}

// OnClose removes the connection from its room and tells the others.
func (h *Hub) OnClose(c handler.Conn, err error) {
	m, ok := c.Context().(*member)
	if !ok || m.room == nil {
		return
	}
	r := m.room
	r.mu.Lock()
	if !m.joined.Load() {
		// Still waiting for the room's first sync: nobody knows it yet.
		if i := slices.Index(r.pending, m); i >= 0 {
			r.pending = slices.Delete(r.pending, i, i+1)
		}
		r.mu.Unlock()
		return
	}
	if r.local[m.name] != m {
		r.mu.Unlock()
		return
	}
	if r.removeLocalLocked(m) {
		h.changedLocked(r, m.name, true, r.conns)
	}
	idle := r.idleIfEmptyLocked()
	r.mu.Unlock()

	h.publish(&Event{Type: EvLeave, Node: h.cfg.Node, Room: m.roomName, Name: m.name})
	if idle {
		h.cfg.Broker.Unsubscribe(r.name)
	}
	h.log.Debug("leave", "room", m.roomName, "name", m.name, "err", err)
}

// deliver applies an event from the broker. It may run on an event loop
// (LocalBroker) or on a broker goroutine.
func (h *Hub) deliver(ev *Event) {
	self := ev.Node == h.cfg.Node
	if !self && ev.Node != "" {
		h.mu.Lock()
		_, known := h.nodes[ev.Node]
		h.nodes[ev.Node] = h.cfg.Now()
		h.mu.Unlock()
		if !known && ev.Type == EvPresence {
			// A node we did not know, or had given up on, is alive: it
			// may serve members in our rooms that we never heard of.
			h.resyncAll()
		}
	}
	switch ev.Type {
	case EvMessage:
		if ev.Msg != nil && validRoom(ev.Msg.Room) {
			h.roomEvent(ev.Msg.Room, ev)
		}
	case EvJoin, EvLeave:
		if !self && validRoom(ev.Room) {
			h.roomEvent(ev.Room, ev)
		}
	case EvHello:
		if !self {
			h.forgetNode(ev.Node, ev.Inc) // a restart: the old process's members are gone
		}
	case EvBye:
		if !self {
			h.mu.Lock()
			delete(h.nodes, ev.Node)
			h.mu.Unlock()
			h.forgetNode(ev.Node, "")
		}
	}
}

// roomEvent applies an event of one room, or holds it while the room
// syncs. Events of rooms this node does not follow are late ones from
// before an unsubscribe, and are dropped.
func (h *Hub) roomEvent(name string, ev *Event) {
	r := h.room(name, false)
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.state == roomIdle:
	case r.state == roomSyncing, r.resyncing && ev.Type != EvMessage:
		r.backlog = append(r.backlog, ev)
	default:
		h.applyLocked(r, ev)
	}
}

// applyLocked applies a room event to a live room.
func (h *Hub) applyLocked(r *room, ev *Event) {
	switch ev.Type {
	case EvMessage:
		if r.hasIDLocked(ev.Msg.ID) {
			return
		}
		raw := r.appendLocked(*ev.Msg, h.cfg.HistorySize)
		h.noticesLocked(r) // whoever joined before the message is listed before it
		h.send(r.conns, raw)
	case EvJoin:
		if inc, ok := r.incs[ev.Node]; ok && inc != ev.Inc {
			// The first join of a new process of ev.Node, before its
			// hello: what the old one had is gone.
			h.announceLocked(r, r.setRemoteLocked(ev.Node, "", nil))
		}
		r.incs[ev.Node] = ev.Inc
		set := r.remote[ev.Node]
		if set == nil {
			set = make(map[string]struct{})
			r.remote[ev.Node] = set
		}
		if _, ok := set[ev.Name]; ok {
			return
		}
		set[ev.Name] = struct{}{}
		if r.addNameLocked(ev.Name) {
			h.changedLocked(r, ev.Name, false, r.conns)
		}
	case EvLeave:
		set := r.remote[ev.Node]
		if _, ok := set[ev.Name]; !ok || r.incs[ev.Node] != ev.Inc {
			return
		}
		delete(set, ev.Name)
		if len(set) == 0 {
			delete(r.remote, ev.Node)
			delete(r.incs, ev.Node)
		}
		if r.removeNameLocked(ev.Name) {
			h.changedLocked(r, ev.Name, true, r.conns)
		}
	}
}

// forgetNode drops what the hub knows of node's members, except those
// that came from the process whose Inc is keep.
func (h *Hub) forgetNode(node, keep string) {
	for _, r := range h.allRooms() {
		r.mu.Lock()
		if inc, ok := r.incs[node]; r.state == roomLive && ok && (keep == "" || inc != keep) {
			h.announceLocked(r, r.setRemoteLocked(node, "", nil))
		}
		r.mu.Unlock()
	}
}

// resyncAll asks the other nodes again about every room this node serves.
func (h *Hub) resyncAll() {
	for _, r := range h.allRooms() {
		r.mu.Lock()
		if r.state != roomLive {
			r.mu.Unlock()
			continue
		}
		r.resyncing = true
		r.gen++
		gen := r.gen
		known := slices.Collect(maps.Keys(r.remote))
		r.mu.Unlock()
		h.cfg.Broker.Sync(r.name, known, func(states []RoomState) { h.synced(r, gen, states) })
	}
}

// roomState is this node's answer to another node's question about a room.
func (h *Hub) roomState(name string) RoomState {
	st := RoomState{Node: h.cfg.Node, Inc: h.inc, Room: name}
	r := h.room(name, false)
	if r == nil {
		return st
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != roomLive {
		return st
	}
	st.Members = slices.Sorted(maps.Keys(r.local))
	st.History = make([]StoredMessage, len(r.history))
	for i, e := range r.history {
		st.History[i] = e.msg
	}
	st.Nodes = append(slices.Collect(maps.Keys(r.remote)), h.cfg.Node)
	return st
}

// brokerLink is how the broker calls into the hub, without widening the
// hub's exported API.
type brokerLink struct{ h *Hub }

func (l brokerLink) Deliver(ev *Event)               { l.h.deliver(ev) }
func (l brokerLink) RoomState(room string) RoomState { return l.h.roomState(room) }
func (l brokerLink) Reconnected()                    { l.h.resyncAll() }

func (h *Hub) allRooms() []*room {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Collect(maps.Values(h.rooms))
}

// room returns the named room, creating it if create is set, the name is
// valid and the room cap allows; nil otherwise.
func (h *Hub) room(name string, create bool) *room {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[name]
	if r == nil && create && validRoom(name) && len(h.rooms) < h.cfg.MaxRooms {
		r = &room{name: name, local: map[string]*member{},
			remote: map[string]map[string]struct{}{}, incs: map[string]string{}, refs: map[string]int{}}
		h.rooms[name] = r
	}
	return r
}

// send writes payload as one text frame, encoded once, to conns.
//
// Callers hold the room's lock while they send a room's snapshots (history,
// members) and deltas (join, leave, messages): the frames are then queued
// on every connection in the order the room's state changed, so a member
// list computed before a join can never arrive after that join's notice and
// undo it. This is safe because wsloop's writes and Broadcast only queue:
// they never run a handler callback (which could take the lock) themselves.
func (h *Hub) send(conns []handler.Conn, payload []byte) {
	if len(conns) == 0 {
		return
	}
	if b := h.out.Load(); b != nil {
		(*b).Broadcast(conns, codec.NewPreparedFrame(codec.OpText, payload))
	}
}

func (h *Hub) publish(ev *Event) {
	ev.Inc = h.inc
	if err := h.cfg.Broker.Publish(ev); err != nil {
		h.log.Warn("broker publish failed", "type", ev.Type, "err", err)
	}
}
