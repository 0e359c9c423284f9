//go:build linux

package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/handler"
)

// dflMover echoes and moves with no state of its own.
type dflMover struct{ handler.Base }

func (dflMover) OnMessage(c handler.Conn, op handler.Op, data []byte) { _ = c.WriteMessage(op, data) }
func (dflMover) OnMove(handler.Conn) ([]byte, error)                  { return nil, nil }
func (dflMover) OnMoved(handler.Conn)                                 {}
func (dflMover) OnRestore(handler.Conn, []byte) (handler.Handler, any, error) {
	return nil, nil, nil
}

// handOffTo moves old's listener and connections to a new server of h with
// opts, and returns it once old's HandOff returned.
func handOffTo(t *testing.T, old *Server, h handler.Handler, opts Options) (*Server, *RestoreResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "ho")
	errc := make(chan error, 1)
	go func() {
		_, err := old.HandOff(ctx, dir, nil)
		errc <- err
	}()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	tk, err := TakeOver(ctx, dir, &TakeOverOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger = quiet
	if opts.EventLoops == 0 {
		opts.EventLoops = 2
	}
	opts.Listener = tk.Listener("")
	srv := New(h, opts)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Wait() }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-served
	})
	res, err := tk.Restore(ctx, srv)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return srv, res
}

// A connection that keeps its compression context in both directions
// moves with both windows: after the move the client's compressed messages
// (which refer back to what it sent before) still decompress, and the new
// server's replies decompress against what the client received before. The
// windows are reserved against the new server's budget and given back by
// the old one; without room in the new budget the connection is closed
// with 1012.
func TestHandOffDeflateContexts(t *testing.T) {
	for _, budget := range []int64{1 << 20, 0} {
		t.Run(fmt.Sprintf("budget=%d", budget), func(t *testing.T) {
			dopts := Deflate{Enabled: true, ContextTakeoverBudget: 1 << 20, Threshold: -1}
			old := dflStart(t, dflMover{}, Options{Deflate: dopts})
			c := dflDial(t, old.Addr().String(), "permessage-deflate")
			if !c.srvCtx || bytes.Contains([]byte(c.ext), []byte("client_no_context_takeover")) {
				t.Fatalf("negotiated %q, want context takeover both ways", c.ext)
			}
			// The same 300 bytes of noise in every message: alone they
			// barely compress; against the window of an earlier message
			// they cost a back-reference. (The run of x makes the first
			// message compress at all: a message with no match is sent
			// Huffman-coded and restarts the sender's context.)
			noise := make([]byte, 300)
			rng := rand.New(rand.NewSource(1))
			for i := range noise {
				noise[i] = 'a' + byte(rng.Intn(26))
			}
			msg := func(i int) []byte {
				return []byte(fmt.Sprintf(`{"type":"message","n":%d,"pad":"%s","text":"%s"}`, i, bytes.Repeat([]byte("x"), 40), noise))
			}
			compressed := 0
			roundTrip := func(i int) {
				t.Helper()
				if err := c.send(codec.OpText, msg(i), true, true); err != nil {
					t.Fatal(err)
				}
				op, got, comp, err := c.read(5 * time.Second)
				if err != nil || op != codec.OpText || !bytes.Equal(got, msg(i)) {
					t.Fatalf("message %d: %v %q %v", i, op, got, err)
				}
				if comp {
					compressed++
				}
			}
			for i := 0; i < 20; i++ {
				roundTrip(i)
			}
			if old.defl.used.Load() == 0 {
				t.Fatal("the old server reserved nothing for the connection's windows")
			}
			nopts := Options{Deflate: dopts}
			nopts.Deflate.ContextTakeoverBudget = budget
			srv, res := handOffTo(t, old, dflMover{}, nopts)
			if got := old.defl.used.Load(); got != 0 {
				t.Errorf("the old server still holds %d bytes of deflate budget", got)
			}
			if budget == 0 {
				if res.Refused != 1 {
					t.Fatalf("Restore without budget: %+v", res)
				}
				op, p, _, err := c.read(5 * time.Second)
				if err != nil || op != codec.OpClose || len(p) < 2 || binary.BigEndian.Uint16(p) != codec.CloseServiceRestart {
					t.Fatalf("want close 1012, got %v %q %v", op, p, err)
				}
				c.conn.Close()
				return
			}
			if res.Restored != 1 || srv.defl.used.Load() == 0 {
				t.Fatalf("Restore: %+v, budget used %d", res, srv.defl.used.Load())
			}
			compressed = 0
			roundTrip(20)
			if n := len(c.lastRaw); n > 120 {
				t.Errorf("the first reply after the move is %d bytes on the wire: it was not compressed against the window the client holds", n)
			}
			for i := 21; i < 40; i++ {
				roundTrip(i)
			}
			if compressed < 20 {
				t.Errorf("%d of 20 replies after the move were compressed: the sent window is not being used", compressed)
			}
			c.conn.Close()
		})
	}
}
