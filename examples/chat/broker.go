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
	// Inc tells this process of Node from an earlier or later one of the
	// same name (see [EvHello]).
	Inc string `json:"inc,omitempty"`
	// Room and Name say who joined or left (EvJoin, EvLeave).
	Room string `json:"room,omitempty"`
	Name string `json:"name,omitempty"`
	// Msg is the chat message of an EvMessage.
	Msg *StoredMessage `json:"msg,omitempty"`
}

// Event types. The first three belong to one room and travel on that
// room's channel, which only the nodes with members in the room listen
// to; the others are about nodes and reach every node. None of them grows
// with the number of members: a node's members of a room are only ever
// sent whole in a [RoomState], to the one node that asked.
const (
	EvMessage  = "message"  // a chat message, to be stored and fanned out
	EvJoin     = "join"     // Name joined Room on Node
	EvLeave    = "leave"    // Name left Room on Node
	EvHello    = "hello"    // Node started: forget what a process of that name with another Inc had
	EvPresence = "presence" // heartbeat: Node is alive (constant size)
	EvBye      = "bye"      // Node is shutting down: forget its members
)

// RoomState is one node's answer when another node asks about a room it
// is about to serve: the members the answering node serves there, the
// room's recent history as that node holds it, and the nodes it knows to
// have members in the room (so the asker knows whose answers to wait for).
type RoomState struct {
	Node    string          `json:"node"`
	Inc     string          `json:"inc,omitempty"` // as in [Event]
	Room    string          `json:"room"`
	Members []string        `json:"members,omitempty"`
	History []StoredMessage `json:"history,omitempty"`
	Nodes   []string        `json:"nodes,omitempty"`
}

// StoredMessage is a chat message with the id that lets nodes drop
// duplicates.
type StoredMessage struct {
	ID string `json:"id"`
	Message
}

// BrokerHandler is what a [Broker] calls into; the [Hub] implements it
// (through an unexported adapter).
type BrokerHandler interface {
	// Deliver applies an event: those of the rooms the node subscribed to
	// and those about nodes. It may run on any goroutine and must not
	// block; the events of one room arrive in the order the broker
	// ordered them.
	Deliver(ev *Event)
	// RoomState is this node's answer to another node's question about
	// room.
	RoomState(room string) RoomState
	// Reconnected reports that the broker lost its connection and has it
	// back: events may have been missed meanwhile.
	Reconnected()
}

// Broker carries events between the chat nodes that share rooms. The room
// logic ([Hub]) publishes every chat message through it and applies the
// messages when the broker delivers them, so all nodes store and show the
// messages of a room in the same order.
//
// A node listens only to the rooms it has members in: [Broker.Subscribe]
// when a room gets its first local member, [Broker.Unsubscribe] when it
// loses its last. The two pair up, and a room stays subscribed while its
// Subscribes outnumber its Unsubscribes, so a leave and a join that race
// may reach the broker in either order.
type Broker interface {
	// Start connects the node and begins delivering node events to h.
	Start(node string, h BrokerHandler) error
	// Publish hands ev to the broker. It is called on event loops, so it
	// must never wait on network I/O: a broker that cannot take the event
	// at once returns an error.
	Publish(ev *Event) error
	// Subscribe begins delivering room's events, then asks the other nodes
	// with members in the room for their [RoomState] and calls done with
	// the answers (none when no other node serves the room). done runs
	// once, on any goroutine, possibly before Subscribe returns; events
	// delivered before it are ones the answers may already include.
	// Subscribe does not block.
	Subscribe(room string, done func([]RoomState))
	// Sync asks the other nodes about a room already subscribed to, as
	// Subscribe does, to repair what a lost connection may have missed.
	// It waits for the answers of the nodes in known too (those the
	// asker already knows to serve the room), so that an early answer
	// naming fewer nodes cannot end the wait before them.
	Sync(room string, known []string, done func([]RoomState))
	// Unsubscribe stops delivering room's events. It does not block.
	Unsubscribe(room string)
	// Close stops delivery and releases the broker's resources.
	Close() error
}

// ErrBrokerClosed is returned by Publish after Close.
var ErrBrokerClosed = errors.New("chat: broker closed")

// LocalBroker is the in-process [Broker]: Publish delivers synchronously
// on the caller's goroutine, and there are no other nodes to ask. It is the
// default when a single chat process serves all rooms.
type LocalBroker struct {
	mu     sync.RWMutex
	h      BrokerHandler
	closed bool
}

// NewLocalBroker returns an in-process broker.
func NewLocalBroker() *LocalBroker { return &LocalBroker{} }

// Start implements [Broker].
func (b *LocalBroker) Start(_ string, h BrokerHandler) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.h = h
	return nil
}

// Publish implements [Broker].
func (b *LocalBroker) Publish(ev *Event) error {
	b.mu.RLock()
	h, closed := b.h, b.closed
	b.mu.RUnlock()
	if closed {
		return ErrBrokerClosed
	}
	if h != nil {
		h.Deliver(ev)
	}
	return nil
}

// Subscribe implements [Broker]: there is nobody to ask, so done runs at
// once with no answers.
func (b *LocalBroker) Subscribe(_ string, done func([]RoomState)) { done(nil) }

// Sync implements [Broker]; see Subscribe.
func (b *LocalBroker) Sync(_ string, _ []string, done func([]RoomState)) { done(nil) }

// Unsubscribe implements [Broker]; there is nothing to stop.
func (b *LocalBroker) Unsubscribe(string) {}

// Close implements [Broker].
func (b *LocalBroker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}
