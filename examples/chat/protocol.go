package main

import (
	"encoding/json"
	"regexp"
	"unicode"
	"unicode/utf8"
)

// Wire protocol between the page (or any WebSocket client) and the server.
// Every frame is a text frame holding one JSON object with a "type" field;
// README.md documents it.

// Message is a chat message as clients see it, in live traffic and in the
// history replayed on join.
type Message struct {
	Type string `json:"type"` // always "message"
	Room string `json:"room"`
	From string `json:"from"`
	Text string `json:"text"`
	TS   int64  `json:"ts"` // Unix milliseconds, set by the server
}

// clientMsg is what a client sends.
type clientMsg struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type historyMsg struct {
	Type     string            `json:"type"` // "history"
	Messages []json.RawMessage `json:"messages"`
}

// membersMsg is the member list a joiner gets (and everyone, after a change
// too large to send as deltas): at most MaxListedMembers names, sorted, and
// the total count.
type membersMsg struct {
	Type  string   `json:"type"` // "members"
	Names []string `json:"names"`
	Count int      `json:"count"`
}

// presenceMsg is the delta the others get when someone joins or leaves,
// with the room's new member count.
type presenceMsg struct {
	Type  string `json:"type"` // "join" or "leave"
	Name  string `json:"name"`
	Count int    `json:"count"`
}

// batchMsg gathers the join and leave notices of one PresenceInterval:
// the names that joined and those that left since the members last heard,
// and the room's count.
type batchMsg struct {
	Type   string   `json:"type"` // "presence"
	Joined []string `json:"joined"`
	Left   []string `json:"left"`
	Count  int      `json:"count"`
}

// MaxListedMembers caps the names in a "members" message: a joiner of a
// room of 10,000 gets the first 1,000 (its own name always among them) and
// the count, so joining costs O(1,000) bytes whatever the room size.
const MaxListedMembers = 1000

type errorMsg struct {
	Type string `json:"type"` // "error"
	Text string `json:"text"`
}

// Close codes the server uses besides the RFC 6455 ones. 4000-4999 are for
// private use (RFC 6455 §7.4.2); the page does not reconnect after them.
const (
	CloseNameTaken = 4409 // the name is in use in the room
)

var roomRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Limits on names.
const maxNameRunes = 24

// validRoom reports whether room is a legal room name: 1 to 32 ASCII
// letters, digits, '-' or '_' (so it is also a legal NATS subject token).
func validRoom(room string) bool { return roomRE.MatchString(room) }

// validName reports whether name is a legal display name: 1 to 24
// characters of valid UTF-8 without control characters, not only spaces.
func validName(name string) bool {
	if name == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > maxNameRunes {
		return false
	}
	blank := true
	for _, r := range name {
		if unicode.IsControl(r) {
			return false
		}
		if !unicode.IsSpace(r) {
			blank = false
		}
	}
	return !blank
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own fixed types are marshalled
	}
	return b
}

func errorJSON(text string) []byte { return mustJSON(errorMsg{Type: "error", Text: text}) }
