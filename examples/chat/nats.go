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
// share rooms, members and history. Every node publishes to and subscribes
// to one subject, Prefix+".events", so all nodes see the events of all
// rooms in the same order; events for a single node go to
// Prefix+".node."+id.
//
// Publish never touches the network: it queues the encoded event for a
// goroutine that owns the NATS writes, and fails when that queue is full,
// so an event loop never waits on NATS.
type NATSBroker struct {
	url    string
	prefix string
	log    *slog.Logger

	nc    *nats.Conn
	queue chan []byte
	done  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

// NATSOptions configures a [NATSBroker].
type NATSOptions struct {
	// Prefix starts every subject. Default "wsloop.chat".
	Prefix string
	// QueueSize is how many events may wait for the NATS connection before
	// Publish fails. Default 8192.
	QueueSize int
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
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &NATSBroker{url: url, prefix: o.Prefix, log: o.Logger,
		queue: make(chan []byte, o.QueueSize), done: make(chan struct{})}
}

// Start implements [Broker]: it connects, subscribes, and returns once the
// server has registered the subscriptions.
func (b *NATSBroker) Start(node string, deliver func(*Event)) error {
	nc, err := nats.Connect(b.url,
		nats.Name("wsloop-chat "+node),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			b.log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			b.log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
		}),
	)
	if err != nil {
		return fmt.Errorf("chat: connect to nats %s: %w", b.url, err)
	}
	handle := func(m *nats.Msg) {
		var ev Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			b.log.Warn("bad event from nats", "subject", m.Subject, "err", err)
			return
		}
		deliver(&ev)
	}
	for _, subj := range []string{b.prefix + ".events", b.prefix + ".node." + node} {
		if _, err := nc.Subscribe(subj, handle); err != nil {
			nc.Close()
			return fmt.Errorf("chat: subscribe %s: %w", subj, err)
		}
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return fmt.Errorf("chat: nats flush: %w", err)
	}
	b.nc = nc
	b.wg.Add(1)
	go b.writer()
	return nil
}

// writer performs the NATS publishes in the order Publish queued them.
func (b *NATSBroker) writer() {
	defer b.wg.Done()
	for {
		select {
		case data := <-b.queue:
			b.send(data)
		case <-b.done:
			for {
				select {
				case data := <-b.queue:
					b.send(data)
				default:
					return
				}
			}
		}
	}
}

func (b *NATSBroker) send(data []byte) {
	// The subject travels in front of the payload, separated by a NUL.
	for i, c := range data {
		if c == 0 {
			if err := b.nc.Publish(string(data[:i]), data[i+1:]); err != nil {
				b.log.Warn("nats publish failed", "err", err)
			}
			return
		}
	}
}

// ErrBrokerBusy is returned by Publish when the NATS connection cannot keep
// up and the queue is full.
var ErrBrokerBusy = errors.New("chat: nats publish queue full")

// Publish implements [Broker]. It does not block.
func (b *NATSBroker) Publish(ev *Event) error {
	subj := b.prefix + ".events"
	if ev.To != "" {
		subj = b.prefix + ".node." + ev.To
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	data := make([]byte, 0, len(subj)+1+len(payload))
	data = append(append(append(data, subj...), 0), payload...)
	select {
	case <-b.done:
		return ErrBrokerClosed
	default:
	}
	select {
	case b.queue <- data:
		return nil
	default:
		return ErrBrokerBusy
	}
}

// Close implements [Broker]: it sends what is queued, flushes and
// disconnects.
func (b *NATSBroker) Close() error {
	var err error
	b.once.Do(func() {
		close(b.done)
		b.wg.Wait()
		if b.nc != nil {
			err = b.nc.FlushTimeout(2 * time.Second)
			b.nc.Close()
		}
	})
	return err
}
