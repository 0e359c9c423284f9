package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A worker is one client process: it holds a share of a room's members,
// one goroutine each (the way a real user's client reads: continuously),
// and talks to the orchestrator over stdin and stdout, one line each:
//
//	worker -> "opened OK FAILED SECONDS"      every member dialled
//	worker -> "joined N SECONDS"               N members got their member list
//	orch   -> "send"                           (the sender's worker only)
//	worker -> "sent SECONDS"                   the sender is done
//	orch   -> "finish GRACE"                   wait for the last deliveries
//	worker -> "result {JSON}"                  what it measured
type workerConfig struct {
	impl     string
	addrs    []string // member i connects to addrs[i % len]
	room     string
	first    int // ids first .. first+count-1
	count    int
	total    int // members in the room, all workers
	sources  []netip.Addr
	msgs     int
	rate     float64
	sender   bool // member 0 is here
	dialers  int
	settleTO time.Duration
}

// workerResult is what a worker reports.
type workerResult struct {
	Members    int      `json:"members"`
	Opened     int      `json:"opened"`
	Failed     int      `json:"failed"`
	Dropped    int      `json:"dropped"` // closed by the server after opening
	Received   int64    `json:"received"`
	Duplicates int64    `json:"duplicates"`
	Errors     int64    `json:"errors"` // "error" messages from the server
	Lat        histData `json:"lat"`
	FirstErr   string   `json:"first_err,omitempty"`
	SentSecs   float64  `json:"sent_secs,omitempty"`
	// Settled members saw the whole room (a member count equal to the
	// room's size), the last of them SettleSecs after the first dial.
	Settled    int     `json:"settled"`
	SettleSecs float64 `json:"settle_secs"`
}

type worker struct {
	cfg     workerConfig
	members []*wmember
	lat     latHist
	start   time.Time
	joined  atomic.Int64
	settled atomic.Int64
	settleT atomic.Int64 // ns after start when the last member settled
	recv    atomic.Int64
	dups    atomic.Int64
	errs    atomic.Int64
	dropped atomic.Int64
	done    atomic.Int64 // members that have every message
	firstMu sync.Mutex
	first   string
	change  chan struct{} // a member settled or completed
	ending  atomic.Bool
}

// wmember is one member. Its fields are owned by the client's loop.
type wmember struct {
	id      int
	ec      *econn
	got     []uint64 // seq bitmap
	n       int
	settled bool
	joined  bool
	msg     []byte // a fragmented message being assembled
}

func runWorker(cfg workerConfig) {
	w := &worker{cfg: cfg, change: make(chan struct{}, 1), start: time.Now()}
	in := bufio.NewScanner(os.Stdin)
	start := w.start
	ec, err := newEclient(w)
	if err != nil {
		fatal("%v", err)
	}
	w.dialAll(ec)
	opened := len(w.members)
	fmt.Printf("opened %d %d %.3f\n", opened, cfg.count-opened, time.Since(start).Seconds())
	w.waitJoined()
	fmt.Printf("joined %d %.3f\n", w.joined.Load(), time.Since(start).Seconds())

	var sentSecs float64
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "send":
			sentSecs = w.send()
			fmt.Printf("sent %.3f\n", sentSecs)
		case "finish":
			grace, _ := time.ParseDuration(f[1])
			w.waitComplete(grace)
			w.ending.Store(true)
			r := workerResult{Members: cfg.count, Opened: opened, Failed: cfg.count - opened,
				Dropped: int(w.dropped.Load()), Received: w.recv.Load(), Duplicates: w.dups.Load(),
				Errors: w.errs.Load(), Lat: w.lat.data(), SentSecs: sentSecs,
				Settled: int(w.settled.Load()), SettleSecs: float64(w.settleT.Load()) / 1e9}
			w.firstMu.Lock()
			r.FirstErr = w.first
			w.firstMu.Unlock()
			b, _ := json.Marshal(r)
			fmt.Printf("result %s\n", b)
			return
		}
	}
}

func (w *worker) noteErr(err error) {
	w.firstMu.Lock()
	if w.first == "" {
		w.first = err.Error()
	}
	w.firstMu.Unlock()
}

func (w *worker) signal() {
	select {
	case w.change <- struct{}{}:
	default:
	}
}

// dialAll opens every member's connection, dialers at a time.
func (w *worker) dialAll(ec *eclient) {
	var mu sync.Mutex
	ids := make(chan int)
	var wg sync.WaitGroup
	for range w.cfg.dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				m, err := w.dial(ec, id)
				if err != nil {
					w.noteErr(fmt.Errorf("member %d: %w", id, err))
					continue
				}
				mu.Lock()
				w.members = append(w.members, m)
				mu.Unlock()
			}
		}()
	}
	for id := w.cfg.first; id < w.cfg.first+w.cfg.count; id++ {
		ids <- id
	}
	close(ids)
	wg.Wait()
}

func memberName(id int) string { return fmt.Sprintf("m%05d", id) }

func (w *worker) dial(ec *eclient, id int) (*wmember, error) {
	addr := w.cfg.addrs[id%len(w.cfg.addrs)]
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	path := "/ws"
	if w.cfg.impl != "gorilla" {
		path += "?room=" + w.cfg.room + "&name=" + memberName(id)
	}
	m := &wmember{id: id, got: make([]uint64, (w.cfg.msgs+63)/64)}
	if err := ec.dial(m, ap, w.cfg.sources[id%len(w.cfg.sources)], path, addr); err != nil {
		return nil, err
	}
	return m, nil
}

func (w *worker) closed(m *wmember, err error) {
	if w.ending.Load() {
		return
	}
	w.dropped.Add(1)
	w.noteErr(fmt.Errorf("member %d: %w", m.id, err))
	w.signal()
}

var (
	msgPrefix     = []byte(`{"type":"message"`)
	textKey       = []byte(`"text":"`)
	countKey      = []byte(`"count":`)
	errorPrefix   = []byte(`{"type":"error"`)
	membersPrefix = []byte(`{"type":"members"`)
)

// message handles one complete message: a load message (its latency), or
// for wsloop's chat a member count.
func (w *worker) message(m *wmember, p []byte, now int64) {
	if w.cfg.impl == "gorilla" {
		// gorilla's chat joins queued messages with newlines in one frame.
		for len(p) > 0 {
			line := p
			if i := bytes.IndexByte(p, '\n'); i >= 0 {
				line, p = p[:i], p[i+1:]
			} else {
				p = nil
			}
			w.delivery(m, line, now)
		}
		return
	}
	switch {
	case bytes.HasPrefix(p, msgPrefix):
		i := bytes.Index(p, textKey)
		if i < 0 {
			return
		}
		t := p[i+len(textKey):]
		if j := bytes.IndexByte(t, '"'); j >= 0 {
			w.delivery(m, t[:j], now)
		}
	case bytes.HasPrefix(p, errorPrefix):
		w.errs.Add(1)
		w.noteErr(fmt.Errorf("member %d got %s", m.id, p))
	default: // members, join, leave: the count is the last field
		n := -1
		if i := bytes.LastIndex(p, countKey); i >= 0 {
			n, _ = strconv.Atoi(string(bytes.TrimRight(p[i+len(countKey):], "}")))
		} else if bytes.HasPrefix(p, membersPrefix) {
			// The protocol before counts: the whole list, every time.
			n = bytes.Count(p, []byte(`","`)) + 1
		}
		if !m.joined && bytes.HasPrefix(p, membersPrefix) {
			m.joined = true
			w.joined.Add(1)
			w.signal()
		}
		if n == w.cfg.total && !m.settled {
			m.settled = true
			if w.settled.Add(1) == int64(len(w.members)) {
				w.settleT.Store(int64(time.Since(w.start)))
			}
		}
	}
}

// delivery records one load message "SEQ SENDNS".
func (w *worker) delivery(m *wmember, text []byte, now int64) {
	seqS, sentS, ok := bytes.Cut(text, []byte{' '})
	if !ok {
		return
	}
	seq, err1 := strconv.Atoi(string(seqS))
	sent, err2 := strconv.ParseInt(string(sentS), 10, 64)
	if err1 != nil || err2 != nil || seq < 0 || seq >= w.cfg.msgs {
		return
	}
	if m.got[seq/64]&(1<<(seq%64)) != 0 {
		w.dups.Add(1)
		return
	}
	m.got[seq/64] |= 1 << (seq % 64)
	m.n++
	w.recv.Add(1)
	w.lat.record(time.Duration(now - sent))
	if m.n == w.cfg.msgs {
		w.done.Add(1)
		w.signal()
	}
}

// waitJoined waits until every member has joined: got its member list
// (gorilla's chat has none, so an open connection is a member), or until
// settleTO. The join notices of the others may still be on their way.
func (w *worker) waitJoined() {
	if w.cfg.impl == "gorilla" {
		w.joined.Store(int64(len(w.members)))
		w.settled.Store(int64(len(w.members)))
		return
	}
	deadline := time.After(w.cfg.settleTO)
	for w.joined.Load()+w.dropped.Load() < int64(len(w.members)) {
		select {
		case <-w.change:
		case <-deadline:
			return
		}
	}
}

// send is the sender's job: msgs messages at rate per second, each
// carrying its sequence number and the wall-clock time it was sent (the
// processes share the clock).
func (w *worker) send() float64 {
	var m *wmember
	for _, x := range w.members {
		if x.id == 0 {
			m = x
		}
	}
	if m == nil {
		return 0
	}
	start := time.Now()
	interval := time.Duration(float64(time.Second) / w.cfg.rate)
	for i := range w.cfg.msgs {
		// Paced against the start, so a late tick does not delay the rest.
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		text := strconv.Itoa(i) + " " + strconv.FormatInt(time.Now().UnixNano(), 10)
		payload := []byte(text)
		if w.cfg.impl != "gorilla" {
			payload = []byte(`{"type":"message","text":"` + text + `"}`)
		}
		if err := m.ec.send(0x1, payload); err != nil {
			w.noteErr(fmt.Errorf("sender: %w", err))
			break
		}
	}
	return time.Since(start).Seconds()
}

// waitComplete waits until every open member has every message, or grace.
func (w *worker) waitComplete(grace time.Duration) {
	deadline := time.After(grace)
	for w.done.Load()+w.dropped.Load() < int64(len(w.members)) {
		select {
		case <-w.change:
		case <-deadline:
			return
		}
	}
}
