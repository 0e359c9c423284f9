package main

import (
	"errors"
	"sync"
)

// Event is what chat nodes tell each other through a [Broker]. A single
// process with the in-process broker only ever sees its own events.
type Event struct {
	// Type is one of the Ev* constants.
	Type string `json:"type"`
	// Node is the id of the node that published the event.
	Node string `json:"node"`
	// To, when set, addresses the event to one node only.
	To string `json:"to,omitempty"`
	// Room and Name say who joined or left (EvJoin, EvLeave).
	Room string `json:"room,omitempty"`
	Name string `json:"name,omitempty"`
	// Msg is the chat message of an EvMessage.
	Msg *StoredMessage `json:"msg,omitempty"`
	// Presence maps each room to the names connected to Node (EvPresence,
	// EvSnapshot).
	Presence map[string][]string `json:"presence,omitempty"`
	// History maps each room to its recent messages, oldest first
	// (EvSnapshot).
	History map[string][]StoredMessage `json:"history,omitempty"`
}

// Event types.
const (
	EvMessage  = "message"  // a chat message, to be stored and fanned out
	EvJoin     = "join"     // Name joined Room on Node
	EvLeave    = "leave"    // Name left Room on Node
	EvHello    = "hello"    // Node started and asks the others for a snapshot
	EvSnapshot = "snapshot" // presence of Node and history of all rooms, To a new node
	EvPresence = "presence" // heartbeat: the complete presence of Node
	EvBye      = "bye"      // Node is shutting down: forget its members
)

// StoredMessage is a chat message with the id that lets nodes drop
// duplicates when histories are merged.
type StoredMessage struct {
	ID string `json:"id"`
	Message
}

// Broker carries events between the chat nodes that share rooms. The room
// logic ([Hub]) publishes every chat message through it and applies the
// messages when the broker delivers them, so all nodes store and show the
// messages of a room in the same order.
type Broker interface {
	// Start begins delivering the events of every node (this one
	// included) to deliver. Events with a To field are delivered only to
	// that node. deliver may be called from any goroutine and must not
	// block; events published by one node are delivered in order.
	Start(node string, deliver func(*Event)) error
	// Publish hands ev to the broker. It is called on event loops, so it
	// must never wait on network I/O: a broker that cannot take the event
	// at once returns an error.
	Publish(ev *Event) error
	// Close stops delivery and releases the broker's resources.
	Close() error
}

// ErrBrokerClosed is returned by Publish after Close.
var ErrBrokerClosed = errors.New("chat: broker closed")

// LocalBroker is the in-process [Broker]: Publish delivers synchronously
// on the caller's goroutine. It is the default when a single chat process
// serves all rooms.
type LocalBroker struct {
	mu      sync.RWMutex
	node    string
	deliver func(*Event)
	closed  bool
}

// NewLocalBroker returns an in-process broker.
func NewLocalBroker() *LocalBroker { return &LocalBroker{} }

// Start implements [Broker].
func (b *LocalBroker) Start(node string, deliver func(*Event)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.node, b.deliver = node, deliver
	return nil
}

// Publish implements [Broker].
func (b *LocalBroker) Publish(ev *Event) error {
	b.mu.RLock()
	deliver, closed, node := b.deliver, b.closed, b.node
	b.mu.RUnlock()
	if closed {
		return ErrBrokerClosed
	}
	if deliver == nil || (ev.To != "" && ev.To != node) {
		return nil
	}
	deliver(ev)
	return nil
}

// Close implements [Broker].
func (b *LocalBroker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}
