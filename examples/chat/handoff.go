package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/wsloop/wsloop/handler"
)

// Deploying without disconnecting (engine.Server.HandOff): the rooms, their
// members, their history and every connection move to the next chat
// process, and nobody in a room notices: no leave, no join, no replayed
// history, no reconnect.
//
// What moves, and where it is rebuilt:
//   - the rooms' history and the join/leave notices not yet sent: the
//     hub's global state (ExportState, ImportState), which the new process
//     gets before any connection;
//   - each member (its room and name): the connection's own state
//     (OnMove), from which OnRestore puts the member back in its room
//     without telling anyone;
//   - the connections themselves, with what each was sent and had not
//     read: the engine.
//
// With a shared broker (-nats) other nodes would see a new node take over
// this one's members; that is not handled, and main does not hand off then.

// memberState is what moves with each connection.
type memberState struct {
	Room string `json:"room"`
	Name string `json:"name"`
}

// hubState is the hub's global state in transit.
type hubState struct {
	Rooms []roomState `json:"rooms"`
}

type roomState struct {
	Name    string          `json:"name"`
	History []StoredMessage `json:"history,omitempty"`
	// Pending are the join and leave notices gathered and not sent yet
	// (HubConfig.PresenceInterval): each name and whether the members
	// last heard of it as present.
	Pending []pendingNotice `json:"pending,omitempty"`
}

type pendingNotice struct {
	Name string `json:"name"`
	Was  bool   `json:"was"`
}

var _ handler.Mover = (*Hub)(nil)
var _ handler.Restorer = (*Hub)(nil)

// OnMove returns the member a connection is, for the next process. It
// changes nothing: the connection may yet stay.
func (h *Hub) OnMove(c handler.Conn) ([]byte, error) {
	m, ok := c.Context().(*member)
	if !ok || m.room == nil || !m.joined.Load() {
		return nil, errors.New("not a member of a room yet") // it stays, and is drained
	}
	return json.Marshal(memberState{Room: m.roomName, Name: m.name})
}

// OnMoved forgets a member that the next process serves now, without
// telling the room: for the others it never left.
func (h *Hub) OnMoved(c handler.Conn) {
	m, ok := c.Context().(*member)
	if !ok || m.room == nil {
		return
	}
	r := m.room
	r.mu.Lock()
	if r.local[m.name] == m {
		r.removeLocalLocked(m) // no notice: for the others it never left
	}
	idle := r.idleIfEmptyLocked()
	r.mu.Unlock()
	if idle {
		h.cfg.Broker.Unsubscribe(r.name)
	}
}

// OnRestore puts a member that moved here back in its room, without
// telling anyone: the room's history and notices came first
// (ImportState), and the client has them already.
func (h *Hub) OnRestore(c handler.Conn, state []byte) (handler.Handler, any, error) {
	var ms memberState
	if err := json.Unmarshal(state, &ms); err != nil {
		return nil, nil, err
	}
	if !validRoom(ms.Room) || !validName(ms.Name) {
		return nil, nil, fmt.Errorf("chat: a moved member %q of room %q", ms.Name, ms.Room)
	}
	r := h.room(ms.Room, true)
	if r == nil {
		return nil, nil, errors.New("chat: too many rooms")
	}
	m := &member{roomName: ms.Room, name: ms.Name, conn: c, room: r}
	r.mu.Lock()
	if r.local[ms.Name] != nil {
		r.mu.Unlock()
		return nil, nil, fmt.Errorf("chat: the name %q is taken in room %q", ms.Name, ms.Room)
	}
	subscribe := r.state == roomIdle
	r.state = roomLive
	r.addLocalLocked(m) // no notice: for the others it never left
	m.joined.Store(true)
	h.schedulePendingLocked(r)
	r.mu.Unlock()
	if subscribe {
		// Pairs with the Unsubscribe when the room empties; a local
		// broker has nobody to ask, and a room that was live in the
		// old process has nothing to learn.
		h.cfg.Broker.Subscribe(r.name, func([]RoomState) {})
	}
	return nil, m, nil
}

// ExportState returns the hub's rooms, for the next process.
func (h *Hub) ExportState() ([]byte, error) {
	var st hubState
	for _, r := range h.allRooms() {
		r.mu.Lock()
		rs := roomState{Name: r.name}
		for _, e := range r.history {
			rs.History = append(rs.History, e.msg)
		}
		for _, n := range r.pendOrder {
			rs.Pending = append(rs.Pending, pendingNotice{Name: n, Was: r.pend[n]})
		}
		r.mu.Unlock()
		st.Rooms = append(st.Rooms, rs)
	}
	slices.SortFunc(st.Rooms, func(a, b roomState) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return json.Marshal(st)
}

// ImportState takes the rooms of the process this one replaces, before
// any of their members arrive. ok is false when none came (that process
// died before sending them): the rooms start empty then.
func (h *Hub) ImportState(b []byte, ok bool) error {
	if !ok {
		return nil
	}
	var st hubState
	if err := json.Unmarshal(b, &st); err != nil {
		return err
	}
	for _, rs := range st.Rooms {
		r := h.room(rs.Name, true)
		if r == nil {
			continue
		}
		r.mu.Lock()
		r.history = r.history[:0]
		for _, msg := range rs.History {
			r.appendLocked(msg, h.cfg.HistorySize)
		}
		for _, p := range rs.Pending {
			r.pendLocked(p.Name, p.Was)
		}
		r.mu.Unlock()
	}
	return nil
}

// schedulePendingLocked sends the notices that came from the old process
// once its members are back (the next PresenceInterval from now).
func (h *Hub) schedulePendingLocked(r *room) {
	if len(r.pendOrder) == 0 || r.noticeTimer != nil {
		return
	}
	r.lastNotice = h.cfg.Now()
	h.noticeAfterLocked(r, max(h.cfg.PresenceInterval, 0))
}

// freezeNotices holds (or releases) the join and leave notices waiting for
// their PresenceInterval: during a handoff they move with the rooms
// instead of going out to connections that may have left already.
func (h *Hub) freezeNotices(on bool) { h.frozen.Store(on) }
