package handler_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"time"

	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// job is a message waiting for a worker, with the connection to answer.
type job struct {
	c    handler.Conn
	data []byte
}

// pool hands every message to a bounded queue that a worker drains off the
// event loop. When the queue is full it pauses reading the connection, so
// a client that sends faster than the worker finishes is pushed back by
// TCP instead of growing the queue; the worker resumes reading once the
// queue has room again.
type pool struct {
	handler.Base
	jobs chan job
}

func (p *pool) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	j := job{c: c, data: bytes.Clone(data)} // data dies when the callback returns
	select {
	case p.jobs <- j:
	default:
		// Full: stop reading this connection, queue the job on a
		// goroutine of its own (it waits for room), resume after.
		c.PauseReading()
		go func() { p.jobs <- j; c.ResumeReading() }()
	}
}

// work is the slow part, on the pool's own goroutine: a database query, a
// call to another service. It writes the result back from there.
func (p *pool) work() {
	for j := range p.jobs {
		_ = j.c.WriteMessage(handler.Text, append([]byte("done: "), j.data...))
	}
}

// inbox collects what a client receives.
type inbox struct {
	handler.Base
	msgs chan string
}

func (in *inbox) OnMessage(c handler.Conn, op handler.Op, data []byte) { in.msgs <- string(data) }

// next returns the next message, or says that none came within 5 s, so
// that a broken write fails the example instead of hanging it.
func (in *inbox) next() string {
	select {
	case m := <-in.msgs:
		return m
	case <-time.After(5 * time.Second):
		return "(nothing received)"
	}
}

// A handler that does blocking work on a bounded worker pool, with
// backpressure: PauseReading when the pool's queue is full, ResumeReading
// when it has room. One worker keeps the replies in order.
func ExampleConn_PauseReading() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	silent := slog.New(slog.NewTextHandler(io.Discard, nil))

	p := &pool{jobs: make(chan job, 2)}
	go p.work()
	srv := engine.New(p, engine.Options{Addr: "127.0.0.1:0", Logger: silent})
	if err := srv.Start(ctx); err != nil {
		log.Fatal(err)
	}

	in := &inbox{msgs: make(chan string, 16)}
	c, _, err := srv.Dial(ctx, "ws://"+srv.Addr().String()+"/", &engine.DialOptions{Handler: in})
	if err != nil {
		log.Fatal(err)
	}
	for i := range 6 {
		_ = c.WriteMessage(handler.Text, fmt.Appendf(nil, "job %d", i))
	}
	for range 6 {
		fmt.Println(in.next())
	}
	// Output:
	// done: job 0
	// done: job 1
	// done: job 2
	// done: job 3
	// done: job 4
	// done: job 5
}
