package main

import (
	"slices"
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

// setRemoteLocked replaces what the room knows of node's members (nil:
// none) and returns the names that entered or left the member list.
func (r *room) setRemoteLocked(node string, names []string) []nameChange {
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
	} else {
		r.remote[node] = next
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
	r.refs = map[string]int{}
	r.names = nil
	r.conns = nil
	return true
}

// announceLocked tells the room's local members about a change to the
// member list made by other nodes: as join and leave deltas when it is
// small, as one member list when it is not.
func (h *Hub) announceLocked(r *room, changes []nameChange) {
	if len(changes) == 0 || len(r.conns) == 0 {
		return
	}
	if len(changes) > bulkDeltas {
		h.send(r.conns, mustJSON(membersMsg{Type: "members", Names: r.listLocked(""), Count: len(r.names)}))
		return
	}
	count := len(r.names)
	for _, c := range changes {
		if c.join {
			count--
		} else {
			count++
		}
	}
	for _, c := range changes {
		typ := "leave"
		if c.join {
			typ, count = "join", count+1
		} else {
			count--
		}
		h.send(r.conns, mustJSON(presenceMsg{Type: typ, Name: c.name, Count: count}))
	}
}
