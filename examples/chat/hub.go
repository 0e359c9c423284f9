package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
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
	// Logger receives the hub's log lines. Default slog.Default().
	Logger *slog.Logger
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Hub is the chat room logic: a [handler.Handler] (and [handler.Upgrader])
// that keeps the rooms, their members and their history, and fans messages
// out with one encoded frame per message.
//
// Every callback runs on an event loop, so the hub never blocks: room state
// is guarded by a per-room mutex held only briefly, while the state is read
// or changed and its frames are queued (queuing never blocks and never runs
// a callback; see send), never while publishing to the broker.
type Hub struct {
	handler.Base

	cfg HubConfig
	log *slog.Logger
	out atomic.Pointer[Broadcaster]
	seq atomic.Uint64

	mu    sync.Mutex
	rooms map[string]*room
	nodes map[string]time.Time // other nodes, last heard from
}

// room is one chat room. Its fields are guarded by mu.
type room struct {
	name string

	mu      sync.Mutex
	local   map[string]handler.Conn        // name -> connection on this node
	conns   []handler.Conn                 // the values of local; replaced, never modified, on change
	remote  map[string]map[string]struct{} // node -> names connected there
	history []histEntry                    // oldest first, at most HistorySize
}

type histEntry struct {
	msg StoredMessage
	raw []byte // msg.Message as the JSON clients get
}

// member is the Context of each connection: who it is and where.
type member struct {
	roomName string
	name     string
	room     *room // set once joined
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Hub{
		cfg:   cfg,
		log:   cfg.Logger.With("node", cfg.Node),
		rooms: make(map[string]*room),
		nodes: make(map[string]time.Time),
	}
}

// SetBroadcaster sets what the hub fans messages out with, normally the
// *engine.Server that serves the hub.
func (h *Hub) SetBroadcaster(b Broadcaster) { h.out.Store(&b) }

// Start connects the hub to its broker and asks the other nodes, if any,
// for their members and the rooms' history.
func (h *Hub) Start() error {
	if err := h.cfg.Broker.Start(h.cfg.Node, h.deliver); err != nil {
		return err
	}
	return h.cfg.Broker.Publish(&Event{Type: EvHello, Node: h.cfg.Node})
}

// Run announces this node's members every heartbeat and forgets nodes that
// went silent, until ctx is done. Only useful with a shared broker.
func (h *Hub) Run(ctx context.Context) {
	t := time.NewTicker(h.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.publish(&Event{Type: EvPresence, Node: h.cfg.Node, Presence: h.localPresence()})
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
			h.setPresence(n, nil)
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
// replays the history and tells everyone else.
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
	r.mu.Lock()
	if r.hasNameLocked(m.name) {
		r.mu.Unlock()
		h.refuse(c, fmt.Sprintf("the name %q is already taken in room %q; pick another one", m.name, m.roomName), CloseNameTaken)
		return
	}
	others := r.conns
	r.local[m.name] = c
	r.conns = append(slices.Clip(others), c)
	hist := make([]json.RawMessage, len(r.history))
	for i, e := range r.history {
		hist[i] = e.raw
	}
	names := r.namesLocked()
	all := r.conns
	// Queue the snapshots before releasing the lock (see send).
	_ = c.WriteMessage(handler.Text, mustJSON(historyMsg{Type: "history", Messages: hist}))
	h.send(others, mustJSON(presenceMsg{Type: "join", Name: m.name}))
	h.send(all, mustJSON(membersMsg{Type: "members", Names: names}))
	r.mu.Unlock()
	m.room = r

	h.publish(&Event{Type: EvJoin, Node: h.cfg.Node, Room: m.roomName, Name: m.name})
	h.log.Debug("join", "room", m.roomName, "name", m.name, "remote", c.RemoteAddr())
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

// OnMessage handles {"type":"message","text":"..."} from a client.
func (h *Hub) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	m, ok := c.Context().(*member)
	if !ok || m.room == nil {
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
	ev := &Event{Type: EvMessage, Node: h.cfg.Node, Msg: &StoredMessage{
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
	if r.local[m.name] != c {
		r.mu.Unlock()
		return
	}
	delete(r.local, m.name)
	r.conns = slices.DeleteFunc(slices.Clone(r.conns), func(x handler.Conn) bool { return x == c })
	names := r.namesLocked()
	conns := r.conns
	h.send(conns, mustJSON(presenceMsg{Type: "leave", Name: m.name}))
	h.send(conns, mustJSON(membersMsg{Type: "members", Names: names}))
	r.mu.Unlock()

	h.publish(&Event{Type: EvLeave, Node: h.cfg.Node, Room: m.roomName, Name: m.name})
	h.log.Debug("leave", "room", m.roomName, "name", m.name, "err", err)
}

// deliver applies an event from the broker. It may run on an event loop
// (LocalBroker) or on the broker's goroutine.
func (h *Hub) deliver(ev *Event) {
	self := ev.Node == h.cfg.Node
	if !self && ev.Node != "" {
		h.mu.Lock()
		h.nodes[ev.Node] = h.cfg.Now()
		h.mu.Unlock()
	}
	switch ev.Type {
	case EvMessage:
		if ev.Msg != nil && validRoom(ev.Msg.Room) {
			h.store(*ev.Msg)
		}
	case EvJoin, EvLeave:
		if !self && validRoom(ev.Room) {
			h.remoteMember(ev)
		}
	case EvHello:
		if !self {
			h.publish(h.snapshot(ev.Node))
		}
	case EvSnapshot:
		if !self && ev.To == h.cfg.Node {
			h.setPresence(ev.Node, ev.Presence)
			for name, msgs := range ev.History {
				if r := h.room(name, true); r != nil && validRoom(name) {
					r.merge(msgs, h.cfg.HistorySize)
				}
			}
		}
	case EvPresence:
		if !self {
			h.setPresence(ev.Node, ev.Presence)
		}
	case EvBye:
		if !self {
			h.mu.Lock()
			delete(h.nodes, ev.Node)
			h.mu.Unlock()
			h.setPresence(ev.Node, nil)
		}
	}
}

// store appends a message to its room's history and fans it out to the
// room's members on this node with one encoded frame.
func (h *Hub) store(msg StoredMessage) {
	r := h.room(msg.Room, true)
	if r == nil {
		h.log.Warn("message for a new room dropped: too many rooms", "room", msg.Room)
		return
	}
	raw := mustJSON(msg.Message)
	r.mu.Lock()
	if r.hasIDLocked(msg.ID) {
		r.mu.Unlock()
		return
	}
	r.history = append(r.history, histEntry{msg: msg, raw: raw})
	if n := len(r.history) - h.cfg.HistorySize; n > 0 {
		r.history = slices.Delete(r.history, 0, n)
	}
	h.send(r.conns, raw)
	r.mu.Unlock()
}

// remoteMember applies a join or leave that happened on another node.
func (h *Hub) remoteMember(ev *Event) {
	r := h.room(ev.Room, true)
	if r == nil {
		return
	}
	r.mu.Lock()
	set := r.remote[ev.Node]
	if ev.Type == EvJoin {
		if set == nil {
			set = make(map[string]struct{})
			r.remote[ev.Node] = set
		}
		set[ev.Name] = struct{}{}
	} else {
		delete(set, ev.Name)
		if len(set) == 0 {
			delete(r.remote, ev.Node)
		}
	}
	names := r.namesLocked()
	h.send(r.conns, mustJSON(presenceMsg{Type: ev.Type, Name: ev.Name}))
	h.send(r.conns, mustJSON(membersMsg{Type: "members", Names: names}))
	r.mu.Unlock()
}

// setPresence replaces what the hub knows of node's members (nil: none)
// and sends the new member list to the rooms where it changed.
func (h *Hub) setPresence(node string, presence map[string][]string) {
	rooms := make(map[*room]struct{})
	for _, r := range h.allRooms() {
		rooms[r] = struct{}{}
	}
	for name := range presence {
		if validRoom(name) {
			if r := h.room(name, true); r != nil {
				rooms[r] = struct{}{}
			}
		}
	}
	for r := range rooms {
		names := presence[r.name]
		r.mu.Lock()
		old := r.remote[node]
		changed := len(old) != len(names)
		for _, n := range names {
			if _, ok := old[n]; !ok {
				changed = true
			}
		}
		if !changed {
			r.mu.Unlock()
			continue
		}
		if len(names) == 0 {
			delete(r.remote, node)
		} else {
			set := make(map[string]struct{}, len(names))
			for _, n := range names {
				set[n] = struct{}{}
			}
			r.remote[node] = set
		}
		h.send(r.conns, mustJSON(membersMsg{Type: "members", Names: r.namesLocked()}))
		r.mu.Unlock()
	}
}

// snapshot is this node's presence and history, for a node that just
// started.
func (h *Hub) snapshot(to string) *Event {
	ev := &Event{Type: EvSnapshot, Node: h.cfg.Node, To: to,
		Presence: map[string][]string{}, History: map[string][]StoredMessage{}}
	for _, r := range h.allRooms() {
		r.mu.Lock()
		if len(r.local) > 0 {
			ev.Presence[r.name] = slices.Sorted(maps.Keys(r.local))
		}
		if len(r.history) > 0 {
			msgs := make([]StoredMessage, len(r.history))
			for i, e := range r.history {
				msgs[i] = e.msg
			}
			ev.History[r.name] = msgs
		}
		r.mu.Unlock()
	}
	return ev
}

// localPresence maps each room to the names connected to this node.
func (h *Hub) localPresence() map[string][]string {
	p := map[string][]string{}
	for _, r := range h.allRooms() {
		r.mu.Lock()
		if len(r.local) > 0 {
			p[r.name] = slices.Sorted(maps.Keys(r.local))
		}
		r.mu.Unlock()
	}
	return p
}

func (h *Hub) allRooms() []*room {
	h.mu.Lock()
	defer h.mu.Unlock()
	rooms := make([]*room, 0, len(h.rooms))
	for _, r := range h.rooms {
		rooms = append(rooms, r)
	}
	return rooms
}

// room returns the named room, creating it if create is set and the room
// cap allows; nil otherwise.
func (h *Hub) room(name string, create bool) *room {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[name]
	if r == nil && create && len(h.rooms) < h.cfg.MaxRooms {
		r = &room{name: name, local: map[string]handler.Conn{}, remote: map[string]map[string]struct{}{}}
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
	if err := h.cfg.Broker.Publish(ev); err != nil {
		h.log.Warn("broker publish failed", "type", ev.Type, "err", err)
	}
}

func (r *room) hasNameLocked(name string) bool {
	if _, ok := r.local[name]; ok {
		return true
	}
	for _, set := range r.remote {
		if _, ok := set[name]; ok {
			return true
		}
	}
	return false
}

func (r *room) hasIDLocked(id string) bool {
	for i := len(r.history) - 1; i >= 0; i-- {
		if r.history[i].msg.ID == id {
			return true
		}
	}
	return false
}

// namesLocked is the sorted list of everyone in the room, on every node.
func (r *room) namesLocked() []string {
	names := make([]string, 0, len(r.local))
	for n := range r.local {
		names = append(names, n)
	}
	for _, set := range r.remote {
		for n := range set {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// merge puts older messages received in a snapshot before the ones this
// node has seen live, dropping duplicates and keeping the newest max.
func (r *room) merge(msgs []StoredMessage, max int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := make(map[string]bool, len(msgs)+len(r.history))
	merged := make([]histEntry, 0, len(msgs)+len(r.history))
	for _, m := range msgs {
		if !seen[m.ID] && m.Room == r.name {
			seen[m.ID] = true
			merged = append(merged, histEntry{msg: m, raw: mustJSON(m.Message)})
		}
	}
	for _, e := range r.history {
		if !seen[e.msg.ID] {
			seen[e.msg.ID] = true
			merged = append(merged, e)
		}
	}
	if n := len(merged) - max; n > 0 {
		merged = merged[n:]
	}
	r.history = merged
}
