package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSBroker is a [Broker] over a NATS server, so several chat processes
// share rooms, members and history.
//
// Subjects (Prefix is "wsloop.chat" by default):
//
//	Prefix.room.ROOM   the room's messages, joins and leaves; subscribed by
//	                   the nodes with members in ROOM, so NATS gives them
//	                   all the same order
//	Prefix.sync.ROOM   questions about ROOM, request/reply; subscribed by
//	                   the same nodes once they serve the room
//	Prefix.nodes       hello, heartbeat and bye of every node (constant
//	                   size, no names)
//
// When a room gets its first local member, the node subscribes to
// Prefix.room.ROOM, then asks Prefix.sync.ROOM and gathers the answers: each
// answering node's members and its history of the room, and the nodes it
// knows to serve the room, whose answers it then waits for too (at most
// SyncWait). With nobody serving the room, NATS says at once that there are
// no responders.
//
// Publish never touches the network: it queues the encoded event for a
// goroutine that owns the NATS writes, and fails when that queue is full,
// so an event loop never waits on NATS.
type NATSBroker struct {
	url      string
	prefix   string
	log      *slog.Logger
	maxQueue int
	syncWait time.Duration

	node string
	h    BrokerHandler
	nc   *nats.Conn

	mu       sync.Mutex
	ops      []natsOp
	queued   int // publishes in ops
	closed   bool
	wake     chan struct{}
	finished chan struct{}
	once     sync.Once

	smu   sync.Mutex
	rooms map[string]*natsRoom
}

// natsOp is one queued NATS call: a publish, or fn.
type natsOp struct {
	subj string
	data []byte
	fn   func()
}

// natsRoom is a subscribed room: how many Subscribes are not yet matched by
// an Unsubscribe, and its two subscriptions.
type natsRoom struct {
	refs   int
	events *nats.Subscription
	sync   *nats.Subscription
}

// NATSOptions configures a [NATSBroker].
type NATSOptions struct {
	// Prefix starts every subject. Default "wsloop.chat".
	Prefix string
	// QueueSize is how many events may wait for the NATS connection before
	// Publish fails. Default 8192.
	QueueSize int
	// SyncWait bounds the wait for the answers about a room. Default 2 s.
	SyncWait time.Duration
	// Logger receives connection state changes. Default slog.Default().
	Logger *slog.Logger
}

// NewNATSBroker returns a broker for the NATS server at url
// (nats://host:port). It connects in Start.
func NewNATSBroker(url string, o NATSOptions) *NATSBroker {
	if o.Prefix == "" {
		o.Prefix = "wsloop.chat"
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 8192
	}
	if o.SyncWait <= 0 {
		o.SyncWait = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &NATSBroker{url: url, prefix: o.Prefix, log: o.Logger, maxQueue: o.QueueSize, syncWait: o.SyncWait,
		wake: make(chan struct{}, 1), finished: make(chan struct{}), rooms: map[string]*natsRoom{}}
}

// syncRequest is the question on Prefix.sync.ROOM.
type syncRequest struct {
	Node string `json:"node"`
	Room string `json:"room"`
}

// Start implements [Broker]: it connects, subscribes to the node events and
// returns once the server has registered the subscription.
func (b *NATSBroker) Start(node string, h BrokerHandler) error {
	b.node, b.h = node, h
	nc, err := nats.Connect(b.url,
		nats.Name("wsloop-chat "+node),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			// nats.go calls this on our own Close too, with a nil
			// error: only a lost connection is worth a warning.
			if err != nil {
				b.log.Warn("nats disconnected; reconnecting", "err", err)
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			b.log.Debug("nats connection closed") // after any disconnect callback
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			b.log.Info("nats reconnected; asking the other nodes about our rooms again", "url", c.ConnectedUrlRedacted())
			h.Reconnected()
		}),
	)
	if err != nil {
		return fmt.Errorf("chat: connect to nats %s: %w", b.url, err)
	}
	if _, err := nc.Subscribe(b.prefix+".nodes", b.onEvent); err != nil {
		nc.Close()
		return fmt.Errorf("chat: subscribe: %w", err)
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return fmt.Errorf("chat: nats flush: %w", err)
	}
	b.nc = nc
	b.log.Info("nats connected", "url", nc.ConnectedUrlRedacted(), "node", node)
	go b.writer()
	return nil
}

func (b *NATSBroker) onEvent(m *nats.Msg) {
	var ev Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		b.log.Warn("bad event from nats", "subject", m.Subject, "err", err)
		return
	}
	b.h.Deliver(&ev)
}

// writer performs the queued NATS calls in order.
func (b *NATSBroker) writer() {
	defer close(b.finished)
	for {
		b.mu.Lock()
		ops, closed := b.ops, b.closed
		b.ops, b.queued = nil, 0
		b.mu.Unlock()
		for _, op := range ops {
			if op.fn != nil {
				op.fn()
			} else if err := b.nc.Publish(op.subj, op.data); err != nil {
				b.log.Warn("nats publish failed", "subject", op.subj, "err", err)
			}
		}
		if len(ops) > 0 {
			continue
		}
		if closed {
			return
		}
		<-b.wake
	}
}

// enqueue adds an op; a publish fails when maxQueue are waiting.
func (b *NATSBroker) enqueue(op natsOp) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrBrokerClosed
	}
	if op.fn == nil {
		if b.queued >= b.maxQueue {
			b.mu.Unlock()
			return ErrBrokerBusy
		}
		b.queued++
	}
	b.ops = append(b.ops, op)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return nil
}

// ErrBrokerBusy is returned by Publish when the NATS connection cannot keep
// up and the queue is full.
var ErrBrokerBusy = errors.New("chat: nats publish queue full")

// Publish implements [Broker]. It does not block.
func (b *NATSBroker) Publish(ev *Event) error {
	subj := b.prefix + ".nodes"
	switch ev.Type {
	case EvMessage, EvJoin, EvLeave:
		subj = b.prefix + ".room." + ev.Room
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	return b.enqueue(natsOp{subj: subj, data: data})
}

// Subscribe implements [Broker].
func (b *NATSBroker) Subscribe(room string, done func([]RoomState)) {
	err := b.enqueue(natsOp{fn: func() {
		b.smu.Lock()
		nr := b.rooms[room]
		if nr == nil {
			nr = &natsRoom{}
			b.rooms[room] = nr
		}
		nr.refs++
		if nr.events == nil {
			sub, err := b.nc.Subscribe(b.prefix+".room."+room, b.onEvent)
			if err != nil {
				b.log.Warn("nats subscribe failed", "room", room, "err", err)
			}
			nr.events = sub
		}
		b.smu.Unlock()
		b.gather(room, nil, func(states []RoomState) {
			// Answer the others' questions only now: before, this node
			// would have been a responder to its own question.
			b.smu.Lock()
			if nr := b.rooms[room]; nr != nil && nr.refs > 0 && nr.sync == nil {
				sub, err := b.nc.Subscribe(b.prefix+".sync."+room, b.onSync)
				if err != nil {
					b.log.Warn("nats subscribe failed", "room", room, "err", err)
				}
				nr.sync = sub
			}
			b.smu.Unlock()
			// Subscribe only buffers the SUB. Wait until the server has
			// it before the room's members are announced: a node that
			// hears of them from a member (not from this room's events,
			// which it may have subscribed to too late) must find this
			// node among the responders of its own sync, or it will
			// never list this node as serving the room.
			if err := b.nc.FlushTimeout(b.syncWait); err != nil {
				b.log.Warn("nats flush failed", "room", room, "err", err)
			}
			done(states)
		})
	}})
	if err != nil {
		done(nil) // closing: the members are about to be dropped anyway
	}
}

// Sync implements [Broker].
func (b *NATSBroker) Sync(room string, known []string, done func([]RoomState)) {
	if err := b.enqueue(natsOp{fn: func() { b.gather(room, known, done) }}); err != nil {
		done(nil)
	}
}

// Unsubscribe implements [Broker].
func (b *NATSBroker) Unsubscribe(room string) {
	_ = b.enqueue(natsOp{fn: func() {
		b.smu.Lock()
		defer b.smu.Unlock()
		nr := b.rooms[room]
		if nr == nil {
			return
		}
		if nr.refs--; nr.refs > 0 {
			return
		}
		for _, sub := range []*nats.Subscription{nr.events, nr.sync} {
			if sub != nil {
				_ = sub.Unsubscribe()
			}
		}
		delete(b.rooms, room)
	}})
}

// onSync answers another node's question about a room.
func (b *NATSBroker) onSync(m *nats.Msg) {
	var req syncRequest
	if err := json.Unmarshal(m.Data, &req); err != nil || req.Node == b.node || m.Reply == "" {
		return
	}
	data, err := json.Marshal(b.h.RoomState(req.Room))
	if err == nil {
		err = m.Respond(data)
	}
	if err != nil {
		b.log.Warn("answering a room sync failed", "room", req.Room, "to", req.Node, "err", err)
	}
}

// gather asks the nodes serving room for their state and calls done once
// with the answers: when every node in known and every node named in an
// answer has answered, when NATS reports that nobody serves the room, or
// after syncWait.
func (b *NATSBroker) gather(room string, known []string, done func([]RoomState)) {
	var (
		mu     sync.Mutex
		states = map[string]RoomState{}
		want   = map[string]bool{}
		ended  bool
		sub    *nats.Subscription
		timer  *time.Timer
	)
	finish := func() {
		mu.Lock()
		if ended {
			mu.Unlock()
			return
		}
		ended = true
		if timer != nil {
			timer.Stop()
		}
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		list := make([]RoomState, 0, len(states))
		for _, st := range states {
			list = append(list, st)
		}
		mu.Unlock()
		done(list)
	}
	for _, n := range known {
		if n != b.node {
			want[n] = true
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var err error
	sub, err = b.nc.Subscribe(nats.NewInbox(), func(m *nats.Msg) {
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			finish() // no responders: nobody else serves the room
			return
		}
		var st RoomState
		if json.Unmarshal(m.Data, &st) != nil || st.Room != room || st.Node == b.node {
			return
		}
		mu.Lock()
		states[st.Node] = st
		want[st.Node] = true
		for _, n := range st.Nodes {
			if n != b.node {
				want[n] = true
			}
		}
		complete := true
		for n := range want {
			if _, ok := states[n]; !ok {
				complete = false
			}
		}
		mu.Unlock()
		if complete {
			finish()
		}
	})
	if err == nil {
		req, _ := json.Marshal(syncRequest{Node: b.node, Room: room})
		err = b.nc.PublishRequest(b.prefix+".sync."+room, sub.Subject, req)
	}
	if err != nil {
		b.log.Warn("room sync failed", "room", room, "err", err)
		ended = true
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		go done(nil)
		return
	}
	timer = time.AfterFunc(b.syncWait, finish)
}

// Close implements [Broker]: it sends what is queued, flushes and
// disconnects.
func (b *NATSBroker) Close() error {
	var err error
	b.once.Do(func() {
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
		select {
		case b.wake <- struct{}{}:
		default:
		}
		if b.nc == nil {
			return
		}
		<-b.finished
		err = b.nc.FlushTimeout(2 * time.Second)
		b.nc.Close()
	})
	return err
}
