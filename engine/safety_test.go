package engine_test

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// panicky panics in the callback its input names, and echoes otherwise.
type panicky struct{ *recorder }

func (p panicky) OnOpen(c handler.Conn) {
	p.recorder.OnOpen(c)
	if c.Path() == "/panic-open" {
		panic("boom in OnOpen")
	}
}

func (p panicky) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	if string(data) == "boom" {
		panic("boom in OnMessage")
	}
	p.recorder.OnMessage(c, op, data)
}

func (p panicky) OnPing(c handler.Conn, data []byte) {
	if string(data) == "boom" {
		panic("boom in OnPing")
	}
	p.recorder.OnPing(c, data)
}

func (p panicky) OnClose(c handler.Conn, err error) {
	p.recorder.OnClose(c, err)
	if c.Path() == "/panic-close" {
		panic("boom in OnClose")
	}
}

func (p panicky) OnUpgrade(r *handler.Request, res *handler.UpgradeResponse) error {
	if r.Path == "/panic-upgrade" {
		panic("boom in OnUpgrade")
	}
	return nil
}

// A panic in a callback is recovered as net/http recovers a handler's: only
// that connection is closed (1011, OnClose once), the loop and every other
// connection go on, and Stats counts it. A panicking upgrade hook gets its
// request a 500 and runs neither OnOpen nor OnClose.
func TestPanicRecovered(t *testing.T) {
	h := panicky{newRecorder()}
	srv, _ := startServer(t, h, engine.Options{EventLoops: 1})
	addr := srv.Addr().String()
	bystander := dialWS(t, addr, "/bystander")
	bystander.roundTrip(t, "hello")

	expect1011 := func(t *testing.T, c *wsClient) {
		t.Helper()
		f := c.expectClose(t, codec.CloseInternalError)
		if f.reason != "internal server error" {
			t.Errorf("reason %q", f.reason)
		}
		_ = c.sendClose(codec.CloseInternalError, "")
		c.expectEOF(t, readTimeout)
		c.conn.Close()
		ev := h.waitClose(t)
		var ce *handler.CloseError
		if !errors.As(ev.err, &ce) || ce.Code != codec.CloseInternalError || ce.Remote {
			t.Errorf("OnClose err = %v, want the server's 1011", ev.err)
		}
	}
	t.Run("OnMessage", func(t *testing.T) {
		c := dialWS(t, addr, "/m")
		if err := c.send(codec.OpText, []byte("boom")); err != nil {
			t.Fatal(err)
		}
		expect1011(t, c)
	})
	t.Run("OnPing", func(t *testing.T) {
		c := dialWS(t, addr, "/p")
		if err := c.send(codec.OpPing, []byte("boom")); err != nil {
			t.Fatal(err)
		}
		expect1011(t, c)
	})
	t.Run("OnOpen", func(t *testing.T) {
		c := dialWS(t, addr, "/panic-open")
		expect1011(t, c)
	})
	t.Run("OnUpgrade", func(t *testing.T) {
		c, err := dialRaw(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.conn.Close()
		if err := c.request(upgradeRequest(addr, "/panic-upgrade")); err != nil {
			t.Fatal(err)
		}
		if c.resp.StatusCode != http.StatusInternalServerError {
			t.Errorf("got %s, want 500", c.resp.Status)
		}
	})
	t.Run("OnClose", func(t *testing.T) {
		c := dialWS(t, addr, "/panic-close")
		c.closeCleanly(t)
		h.waitClose(t)
	})
	bystander.roundTrip(t, "still here")
	st := srv.Stats()
	if st.Panics != 5 || st.Rejected["500 panic"] != 1 || st.ClosesByCode[codec.CloseInternalError] != 3 {
		t.Errorf("Stats: Panics %d, Rejected %v, ClosesByCode %v; want 5 panics, one 500, three 1011", st.Panics, st.Rejected, st.ClosesByCode)
	}
	if st.Upgraded != 5 { // bystander, /m, /p, /panic-open, /panic-close
		t.Errorf("Upgraded %d, want 5: a request whose hook panicked is not upgraded", st.Upgraded)
	}
	h.check(t) // OnClose once for each OnOpen, never without one
}

// panickyAsync panics in OnUpgradeAsync on one path and accepts the rest.
type panickyAsync struct{ *recorder }

func (p panickyAsync) OnUpgradeAsync(r *handler.Request, decide func(*handler.UpgradeResponse, error)) {
	if r.Path == "/panic-async" {
		panic("boom in OnUpgradeAsync")
	}
	decide(nil, nil)
}

// A panic in the hooks that decide a request (CheckOrigin, Fallback,
// OnUpgradeAsync) gets that request a 500, counted once, and the server
// goes on answering the same hooks.
func TestPanicInRequestHooks(t *testing.T) {
	h := panickyAsync{newRecorder()}
	srv, _ := startServer(t, h, engine.Options{
		EventLoops: 1,
		CheckOrigin: func(r *handler.Request) bool {
			if r.Header.Get("Origin") == "http://boom" {
				panic("boom in CheckOrigin")
			}
			return true
		},
		Fallback: func(r *handler.Request) *engine.FallbackResponse {
			if r.Path == "/panic-fallback" {
				panic("boom in Fallback")
			}
			return &engine.FallbackResponse{Status: http.StatusOK, Body: []byte("page")}
		},
	})
	addr := srv.Addr().String()
	status := func(t *testing.T, req string) int {
		t.Helper()
		c, err := dialRaw(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.conn.Close()
		if err := c.request(req); err != nil {
			t.Fatal(err)
		}
		return c.resp.StatusCode
	}
	plainGET := func(path string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\n\r\n"
	}
	for _, tc := range []struct {
		name, req string
		want      int
	}{
		{"CheckOrigin", upgradeRequest(addr, "/", "Origin: http://boom"), http.StatusInternalServerError},
		{"CheckOrigin again, no panic", upgradeRequest(addr, "/", "Origin: http://fine"), http.StatusSwitchingProtocols},
		{"Fallback", plainGET("/panic-fallback"), http.StatusInternalServerError},
		{"Fallback again, no panic", plainGET("/page"), http.StatusOK},
		{"OnUpgradeAsync", upgradeRequest(addr, "/panic-async"), http.StatusInternalServerError},
		{"OnUpgradeAsync again, no panic", upgradeRequest(addr, "/fine"), http.StatusSwitchingProtocols},
	} {
		if got := status(t, tc.req); got != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
		}
	}
	if st := srv.Stats(); st.Panics != 3 {
		t.Errorf("Stats.Panics = %d, want 3", st.Panics)
	}
}

// crashChildEnv makes TestHelperCrashOnPanic run as a server process.
const crashChildEnv = "WSLOOP_TEST_CRASH_CHILD"

// TestHelperCrashOnPanic is not a test: TestCrashOnPanic runs it in a child
// process with a handler that panics on every message and CrashOnPanic set.
func TestHelperCrashOnPanic(t *testing.T) {
	if os.Getenv(crashChildEnv) == "" {
		t.Skip("helper process for TestCrashOnPanic")
	}
	srv := engine.New(panicky{newRecorder()}, engine.Options{Addr: "127.0.0.1:0", CrashOnPanic: true, Logger: discardLogger})
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("ADDR " + srv.Addr().String() + "\n")
	select {} // until the panic ends the process
}

// With CrashOnPanic, a panic ends the process, for those who prefer that.
func TestCrashOnPanic(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrashOnPanic$")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1")
	var out lockedBuffer
	cmd.Stderr = &out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	buf := make([]byte, 128)
	n, _ := stdout.Read(buf)
	addr, ok := strings.CutPrefix(strings.TrimSpace(string(buf[:n])), "ADDR ")
	if !ok {
		t.Fatalf("child printed %q", buf[:n])
	}
	c := dialWS(t, addr, "/")
	if err := c.send(codec.OpText, []byte("boom")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(out.String(), "boom in OnMessage") {
			t.Errorf("child exited with %v; stderr %q", err, out.String())
		}
	case <-time.After(readTimeout):
		t.Fatal("the child survived a panic with CrashOnPanic")
	}
}

// Rejections are counted under a fixed set of labels: 300 invented paths,
// each rejected by the application with a reason that contains the path,
// make one key, not 300.
func TestRejectedLabelsBounded(t *testing.T) {
	t.Parallel()
	h := &pathRejecter{newRecorder()}
	srv, _ := startServer(t, h, engine.Options{})
	addr := srv.Addr().String()
	for i := 0; i < 300; i++ {
		c, err := dialRaw(addr)
		if err != nil {
			t.Fatal(err)
		}
		path := "/invented/" + strconv.Itoa(i)
		if err := c.request(upgradeRequest(addr, path)); err != nil || c.resp.StatusCode != 404 || !strings.Contains(c.body, path) {
			t.Fatalf("%s: %v %v %q", path, err, c.resp, c.body)
		}
		c.conn.Close()
	}
	st := srv.Stats()
	if len(st.Rejected) != 1 || st.Rejected["404 application"] != 300 {
		t.Errorf("Rejected = %v, want only \"404 application\": 300", st.Rejected)
	}
}

type pathRejecter struct{ *recorder }

func (pathRejecter) OnUpgrade(r *handler.Request, _ *handler.UpgradeResponse) error {
	return handler.Reject(http.StatusNotFound, "no such path: "+r.Path)
}

// A fragmented message is failed with 1009 as soon as the header of the
// fragment that would take it past MaxMessageSize arrives, before any of
// that fragment's payload.
func TestFragmentedMessageLimit(t *testing.T) {
	t.Parallel()
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{MaxMessageSize: 1 << 20})
	c := dialWS(t, srv.Addr().String(), "/")
	part := bytes.Repeat([]byte{7}, 300<<10)
	if err := c.sendFrame(false, codec.OpBinary, part); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := c.sendFrame(false, codec.OpContinuation, part); err != nil {
			t.Fatal(err)
		}
	}
	// 900 KiB so far; the next fragment announces 300 KiB more. Only its
	// header is sent: 2 bytes, a 64-bit length and the mask.
	hdr := codec.AppendMaskedFrame(nil, true, codec.OpContinuation, 0, randomMask(), part)[:14]
	if _, err := c.conn.Write(hdr); err != nil {
		t.Fatal(err)
	}
	c.expectClose(t, codec.CloseMessageTooBig)
	c.conn.Close() // or the server waits CloseTimeout for our side to close
	ev := h.waitClose(t)
	var ce *handler.CloseError
	if !errors.As(ev.err, &ce) || ce.Code != codec.CloseMessageTooBig {
		t.Errorf("OnClose err = %v, want 1009", ev.err)
	}
	if st := srv.Stats(); st.InboundBytes != 0 {
		t.Errorf("InboundBytes %d after the connection failed, want 0", st.InboundBytes)
	}
}

// The server-wide inbound budget: a connection whose message would take the
// memory held for inbound messages past MaxInboundMemory is failed with 1013;
// the one holding the memory, and everyone else, go on, and every byte is
// given back.
func TestInboundBudget(t *testing.T) {
	t.Parallel()
	const budget = 3 << 20
	h := newRecorder()
	srv, _ := startServer(t, h, engine.Options{MaxInboundMemory: budget})
	addr := srv.Addr().String()
	a := dialWS(t, addr, "/a")
	b := dialWS(t, addr, "/b")
	other := dialWS(t, addr, "/other")
	half := bytes.Repeat([]byte{1}, 1<<20+1<<19) // 1.5 MiB: a 2 MiB buffer

	// a holds 2 MiB: the ping after its fragment says the server read both.
	if err := a.sendFrame(false, codec.OpBinary, half); err != nil {
		t.Fatal(err)
	}
	if err := a.send(codec.OpPing, []byte("sync")); err != nil {
		t.Fatal(err)
	}
	a.expect(t, codec.OpPong, "sync")
	if st := srv.Stats(); st.InboundBytes != 2<<20 {
		t.Fatalf("InboundBytes %d while a holds its fragment, want %d", st.InboundBytes, 2<<20)
	}
	// b needs 2 MiB more: over the budget.
	if err := b.sendFrame(false, codec.OpBinary, half); err != nil {
		t.Fatal(err)
	}
	f := b.expectClose(t, codec.CloseTryAgainLater)
	if !strings.Contains(f.reason, "busy") {
		t.Errorf("1013 reason %q", f.reason)
	}
	// Whole messages are delivered from the read buffer: not charged.
	other.roundTrip(t, "small messages go on")
	// a finishes its message and gets it back whole.
	if err := a.sendFrame(true, codec.OpContinuation, half); err != nil {
		t.Fatal(err)
	}
	got, err := a.read(readTimeout)
	if err != nil || len(got.data) != 2*len(half) {
		t.Fatalf("a's echo: %d bytes, %v", len(got.data), err)
	}
	st := srv.Stats()
	if st.InboundBytes != 0 || st.InboundRefused != 1 || st.ClosesByCode[codec.CloseTryAgainLater] != 1 {
		t.Errorf("Stats: InboundBytes %d, InboundRefused %d, ClosesByCode %v; want 0, 1, one 1013", st.InboundBytes, st.InboundRefused, st.ClosesByCode)
	}
	// The memory is back: b's message fits now.
	b2 := dialWS(t, addr, "/b2")
	if err := b2.sendFrame(false, codec.OpBinary, half); err != nil {
		t.Fatal(err)
	}
	if err := b2.sendFrame(true, codec.OpContinuation, []byte("end")); err != nil {
		t.Fatal(err)
	}
	if got, err := b2.read(readTimeout); err != nil || len(got.data) != len(half)+3 {
		t.Fatalf("b2's echo: %d bytes, %v", len(got.data), err)
	}
}

// A StreamHandler is not charged for chunks it is handed straight from the
// read buffer, whatever the message's size.
func TestInboundBudgetStream(t *testing.T) {
	t.Parallel()
	s := &streamer{recorder: newRecorder(), done: make(chan []chunk, 1)}
	srv, _ := startServer(t, s, engine.Options{MaxInboundMemory: 1 << 20})
	c := dialWS(t, srv.Addr().String(), "/")
	part := bytes.Repeat([]byte{3}, 512<<10)
	for i := 0; i < 4; i++ { // 2 MiB through a 1 MiB budget
		if err := c.sendFrame(i == 3, map[bool]codec.OpCode{true: codec.OpBinary, false: codec.OpContinuation}[i == 0], part); err != nil {
			t.Fatal(err)
		}
	}
	msg := waitN(t, s.done, 1, readTimeout)[0]
	total := 0
	for _, ch := range msg {
		total += len(ch.data)
	}
	if total != 4*len(part) {
		t.Errorf("streamed %d bytes, want %d", total, 4*len(part))
	}
	if st := srv.Stats(); st.InboundRefused != 0 || st.InboundBytes != 0 {
		t.Errorf("Stats: InboundBytes %d, InboundRefused %d; want 0, 0", st.InboundBytes, st.InboundRefused)
	}
}

// An upgrade request that arrives in pieces is charged while it waits for
// the rest: a budget too small for it answers 503.
func TestInboundBudgetHeader(t *testing.T) {
	t.Parallel()
	srv, _ := startServer(t, newRecorder(), engine.Options{MaxInboundMemory: 1024})
	addr := srv.Addr().String()
	c, err := dialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	partial := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nX-Pad: " + strings.Repeat("a", 2000)
	if _, err := c.conn.Write([]byte(partial)); err != nil {
		t.Fatal(err)
	}
	if err := c.readResponse(); err != nil {
		t.Fatal(err)
	}
	if c.resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(c.body, "busy") {
		t.Errorf("got %s %q, want 503 busy", c.resp.Status, c.body)
	}
	// A request that arrives whole is never charged.
	dialWS(t, addr, "/").roundTrip(t, "whole requests pass")
	if st := srv.Stats(); st.Rejected["503 inbound memory"] != 1 || st.InboundBytes != 0 {
		t.Errorf("Stats: Rejected %v, InboundBytes %d", st.Rejected, st.InboundBytes)
	}
}
