package main

import (
	"slices"
	"time"

	"github.com/wsloop/wsloop/handler"
)

// The room's bookkeeping. Every method here needs the room's lock.

// nameChange is one name that entered or left a room's member list.
type nameChange struct {
	name string
	join bool
}

// takenLocked reports whether name is in use in the room: by a member on
// any node, or by a local joiner waiting for the room's first sync.
func (r *room) takenLocked(name string) bool {
	if r.refs[name] > 0 {
		return true
	}
	for _, m := range r.pending {
		if m.name == name {
			return true
		}
	}
	return false
}

// addNameLocked counts one more place for name and reports whether it is
// new to the member list.
func (r *room) addNameLocked(name string) bool {
	r.refs[name]++
	if r.refs[name] > 1 {
		return false
	}
	i, _ := slices.BinarySearch(r.names, name)
	r.names = slices.Insert(r.names, i, name)
	return true
}

// addLocalLocked makes m one of the room's local members and reports
// whether its name is new to the member list.
func (r *room) addLocalLocked(m *member) bool {
	m.idx = len(r.conns)
	r.conns = append(r.conns, m.conn)
	r.local[m.name] = m
	return r.addNameLocked(m.name)
}

// removeLocalLocked takes m out of the room's local members (m.idx moves
// the last connection into its place) and reports whether its name left
// the member list.
func (r *room) removeLocalLocked(m *member) bool {
	delete(r.local, m.name)
	last := len(r.conns) - 1
	if m.idx != last {
		moved := r.conns[last]
		r.conns[m.idx] = moved
		moved.Context().(*member).idx = m.idx
	}
	r.conns[last] = nil
	r.conns = r.conns[:last]
	return r.removeNameLocked(m.name)
}

// removeNameLocked counts one place less for name and reports whether it
// left the member list.
func (r *room) removeNameLocked(name string) bool {
	n, ok := r.refs[name]
	if !ok {
		return false
	}
	if n > 1 {
		r.refs[name] = n - 1
		return false
	}
	delete(r.refs, name)
	if i, found := slices.BinarySearch(r.names, name); found {
		r.names = slices.Delete(r.names, i, i+1)
	}
	return true
}

// listLocked is the member list a joiner gets: the first MaxListedMembers
// names in order, with self among them when it is a member.
func (r *room) listLocked(self string) []string {
	if len(r.names) <= MaxListedMembers {
		return slices.Clone(r.names)
	}
	list := slices.Clone(r.names[:MaxListedMembers])
	if self != "" && r.refs[self] > 0 {
		if _, found := slices.BinarySearch(list, self); !found {
			list[len(list)-1] = self // self sorts after every listed name
		}
	}
	return list
}

// heardLocked is the member list and count the room's members last heard
// of (the names, less the joins not yet announced, plus the leaves not yet
// announced), as a joiner's list: the first MaxListedMembers names, and
// self, a member who is always listed and counted.
func (r *room) heardLocked(self string) ([]string, int) {
	if len(r.pendOrder) == 0 {
		return r.listLocked(self), len(r.names)
	}
	count := len(r.names)
	var gone []string
	for n, was := range r.pend {
		switch now := r.refs[n] > 0; {
		case was && !now:
			gone = append(gone, n)
			count++
		case !was && now:
			count--
		}
	}
	slices.Sort(gone)
	list := make([]string, 0, min(count, MaxListedMembers)+1)
	for i, j := 0, 0; len(list) < MaxListedMembers && (i < len(r.names) || j < len(gone)); {
		var n string
		if j == len(gone) || (i < len(r.names) && r.names[i] < gone[j]) {
			n, i = r.names[i], i+1
		} else {
			n, j = gone[j], j+1
		}
		if was, ok := r.pend[n]; ok && !was && r.refs[n] > 0 {
			continue // joined since the last notices
		}
		list = append(list, n)
	}
	if was, ok := r.pend[self]; ok && !was {
		count++ // self's own join is among the pending ones
	}
	if i, found := slices.BinarySearch(list, self); !found {
		list = slices.Insert(list, i, self)
		if len(list) > MaxListedMembers {
			if i == len(list)-1 {
				list = slices.Delete(list, i-1, i)
			} else {
				list = list[:MaxListedMembers]
			}
		}
	}
	return list, count
}

// setRemoteLocked replaces what the room knows of node's members (nil:
// none) and returns the names that entered or left the member list.
func (r *room) setRemoteLocked(node, inc string, names []string) []nameChange {
	old := r.remote[node]
	next := make(map[string]struct{}, len(names))
	for _, n := range names {
		if validName(n) {
			next[n] = struct{}{}
		}
	}
	var changes []nameChange
	for n := range old {
		if _, keep := next[n]; !keep && r.removeNameLocked(n) {
			changes = append(changes, nameChange{n, false})
		}
	}
	for n := range next {
		if _, had := old[n]; !had && r.addNameLocked(n) {
			changes = append(changes, nameChange{n, true})
		}
	}
	if len(next) == 0 {
		delete(r.remote, node)
		delete(r.incs, node)
	} else {
		r.remote[node] = next
		r.incs[node] = inc
	}
	return changes
}

// appendLocked adds a message to the history, keeping the newest max, and
// returns its JSON as clients get it.
func (r *room) appendLocked(msg StoredMessage, max int) []byte {
	raw := mustJSON(msg.Message)
	r.history = append(r.history, histEntry{msg: msg, raw: raw})
	if n := len(r.history) - max; n > 0 {
		r.history = slices.Delete(r.history, 0, n)
	}
	return raw
}

func (r *room) hasIDLocked(id string) bool {
	for i := len(r.history) - 1; i >= 0; i-- {
		if r.history[i].msg.ID == id {
			return true
		}
	}
	return false
}

// idleIfEmptyLocked stops following a room that has no local member left
// and none waiting: it forgets the other nodes' members (no longer
// followed) and keeps the history. It reports whether the caller must
// unsubscribe from the room.
func (r *room) idleIfEmptyLocked() bool {
	if r.state == roomIdle || len(r.local) > 0 || len(r.pending) > 0 {
		return false
	}
	r.state = roomIdle
	r.gen++ // answers still on their way are for the old subscription
	r.resyncing = false
	r.backlog = nil
	r.remote = map[string]map[string]struct{}{}
	r.incs = map[string]string{}
	r.refs = map[string]int{}
	r.names = nil
	r.conns = nil
	clear(r.pend)
	r.pendOrder = r.pendOrder[:0]
	if r.noticeTimer != nil {
		r.noticeTimer.Stop()
		r.noticeTimer = nil
	}
	return true
}

// announceLocked tells the room's local members about a change to the
// member list made by other nodes, at once.
func (h *Hub) announceLocked(r *room, changes []nameChange) {
	for _, c := range changes {
		r.pendLocked(c.name, !c.join)
	}
	h.noticesLocked(r)
}

// changedLocked tells the room's members that name joined (was false) or
// left (was true): at once, to conns, after a quiet spell; otherwise in the
// "presence" message that ends the current PresenceInterval.
func (h *Hub) changedLocked(r *room, name string, was bool, conns []handler.Conn) {
	if len(conns) == 0 && len(r.pendOrder) == 0 {
		return // nobody to tell, and nothing pending that could overtake
	}
	now := h.cfg.Now()
	if h.cfg.PresenceInterval < 0 || (len(r.pendOrder) == 0 && r.noticeTimer == nil &&
		now.Sub(r.lastNotice) >= h.cfg.PresenceInterval) {
		typ := "join"
		if was {
			typ = "leave"
		}
		h.send(conns, mustJSON(presenceMsg{Type: typ, Name: name, Count: len(r.names)}))
		r.lastNotice = now
		return
	}
	r.pendLocked(name, was)
	if r.noticeTimer == nil {
		h.noticeAfterLocked(r, r.lastNotice.Add(h.cfg.PresenceInterval).Sub(now))
	}
}

// noticeAfterLocked sends the room's pending notices after d. While a
// handoff is on (Hub.freezeNotices) they wait, to move with the rooms.
func (h *Hub) noticeAfterLocked(r *room, d time.Duration) {
	r.noticeTimer = time.AfterFunc(d, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.noticeTimer = nil
		if h.frozen.Load() {
			h.noticeAfterLocked(r, max(h.cfg.PresenceInterval, 10*time.Millisecond))
			return
		}
		h.noticesLocked(r)
	})
}

// pendLocked records a change of name for the next notices, remembering
// whether the members last heard of the name as present.
func (r *room) pendLocked(name string, was bool) {
	if _, ok := r.pend[name]; ok {
		return
	}
	if r.pend == nil {
		r.pend = map[string]bool{}
	}
	r.pend[name] = was
	r.pendOrder = append(r.pendOrder, name)
}

// noticesLocked sends the pending changes: each name whose presence
// differs from what the members last heard, as one join or leave when
// there is one, as a "presence" message when there are several, and as
// the member list when there are more than a list holds.
func (h *Hub) noticesLocked(r *room) {
	if len(r.pendOrder) == 0 {
		return
	}
	joined, left := []string{}, []string{} // [] rather than null on the wire
	for _, n := range r.pendOrder {
		switch now, was := r.refs[n] > 0, r.pend[n]; {
		case now && !was:
			joined = append(joined, n)
		case !now && was:
			left = append(left, n)
		}
	}
	clear(r.pend)
	r.pendOrder = r.pendOrder[:0]
	r.lastNotice = h.cfg.Now()
	count := len(r.names)
	switch {
	case len(joined)+len(left) == 0:
	case len(joined)+len(left) > MaxListedMembers:
		h.send(r.conns, mustJSON(membersMsg{Type: "members", Names: r.listLocked(""), Count: count}))
	case len(joined) == 1 && len(left) == 0:
		h.send(r.conns, mustJSON(presenceMsg{Type: "join", Name: joined[0], Count: count}))
	case len(joined) == 0 && len(left) == 1:
		h.send(r.conns, mustJSON(presenceMsg{Type: "leave", Name: left[0], Count: count}))
	default:
		h.send(r.conns, mustJSON(batchMsg{Type: "presence", Joined: joined, Left: left, Count: count}))
	}
}
