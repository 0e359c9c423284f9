//go:build linux

package handoff

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests run two processes: the test binary re-executes itself as the
// peer (TestMain sees HANDOFF_TEST_ROLE), so that descriptors really cross a
// process boundary and each process's descriptor count can be checked.
// What moves are loopback TCP connections: the process that keeps the
// other ends checks that each one still carries bytes, and to whom.

func TestMain(m *testing.M) {
	if role := os.Getenv("HANDOFF_TEST_ROLE"); role != "" {
		os.Exit(runRole(role))
	}
	os.Exit(m.Run())
}

const testVersion = 7

// fdCount returns the number of open descriptors of this process.
func fdCount() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents) - 1 // the directory being read
}

// pairs holds n loopback TCP connections: both ends, in this process.
type pairs struct {
	clients, servers []*net.TCPConn
}

func newPairs(t *testing.T, n int) *pairs {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := &pairs{}
	for i := 0; i < n; i++ {
		c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.AcceptTCP()
		if err != nil {
			t.Fatal(err)
		}
		p.clients = append(p.clients, c)
		p.servers = append(p.servers, s)
	}
	t.Cleanup(func() {
		for i := range p.clients {
			p.clients[i].Close()
			p.servers[i].Close()
		}
	})
	return p
}

// clientFDs returns the descriptors of the pairs' client ends, which the
// pairs still own.
func (p *pairs) clientFDs(t *testing.T) []int {
	t.Helper()
	fds := make([]int, len(p.clients))
	for i, c := range p.clients {
		fds[i] = rawFD(t, c)
	}
	return fds
}

// giveTakenBack offers n new pairs to a taker spawned as role, gives them
// (the first doubling as the listener) and takes them back, as the engine
// does when a transfer fails; it checks that the giver then holds the
// descriptors it held before the offer, and returns the transfer's error.
func giveTakenBack(t *testing.T, n int, role string, cfg Config) (p *pairs, ch *child, err error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ho")
	p = newPairs(t, n)
	fds := p.clientFDs(t)
	ch = spawn(t, role, "HANDOFF_DIR="+dir)
	ctx := testCtx(t)
	before := fdCount()
	cfg.Version, cfg.Logger = testVersion, quietLogger(nil)
	g, oerr := Offer(ctx, dir, cfg)
	if oerr != nil {
		t.Fatal(oerr)
	}
	err = give(ctx, g, p, fds, fds[0])
	g.TakeBack()
	if got := fdCount(); got != before {
		t.Errorf("giver holds %d descriptors after taking back, had %d", got, before)
	}
	return p, ch, err
}

// rawFD returns the descriptor of a Go connection, which stays its owner.
func rawFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	_ = rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// indices encodes the payload of a test batch: the index of each
// connection in it.
func indices(from, n int) []byte {
	b := make([]byte, 0, 4*n)
	for i := from; i < from+n; i++ {
		b = binary.BigEndian.AppendUint32(b, uint32(i))
	}
	return b
}

// child is a peer process. Its output goes to a file, not a pipe: exec
// would close a pipe's end in this process when the child exits, which
// would move this process's descriptor count under the test's feet.
type child struct {
	cmd *exec.Cmd
	out *os.File
}

func spawn(t *testing.T, role string, env ...string) *child {
	t.Helper()
	return spawnIn(t, role, nil, env...)
}

// spawnIn starts a child with stdin (nil: none).
func spawnIn(t *testing.T, role string, stdin *os.File, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{"HANDOFF_TEST_ROLE=" + role}, env...)...)
	out, err := os.CreateTemp(t.TempDir(), "child")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	cmd.Stdout = out
	cmd.Stderr = os.Stderr
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := &child{cmd: cmd, out: out}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return ch
}

// wait waits for the child and returns the "key value" lines it printed.
func (c *child) wait(t *testing.T) (map[string]string, int) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
		t.Fatal("child did not finish")
	}
	b, err := os.ReadFile(c.out.Name())
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		kv[k] = v
	}
	return kv, c.cmd.ProcessState.ExitCode()
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func quietLogger(w io.Writer) *slog.Logger {
	if w == nil {
		w = io.Discard
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// give runs the giver's side of a transfer of p's client ends in batches of
// MaxFDs, with ln as the one listener, then a state and a commit. It
// returns the first error.
func give(ctx context.Context, g *Giver, p *pairs, fds []int, ln int) error {
	if err := g.SendListeners(ctx, []byte("L"), []int{ln}); err != nil {
		return err
	}
	for i := 0; i < len(fds); i += MaxFDs {
		n := min(MaxFDs, len(fds)-i)
		if err := g.SendBatch(ctx, indices(i, n), fds[i:i+n]); err != nil {
			return err
		}
	}
	if err := g.SendState(ctx, []byte("global state")); err != nil {
		return err
	}
	return g.Commit(ctx)
}

// checkAlive checks that bytes written on each client end arrive on its
// server end: the connections are intact and still this process's.
func checkAlive(t *testing.T, p *pairs) {
	t.Helper()
	for i, c := range p.clients {
		msg := []byte(fmt.Sprintf("%d\n", i))
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("connection %d: write after take-back: %v", i, err)
		}
		got := make([]byte, len(msg))
		_ = p.servers[i].SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(p.servers[i], got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("connection %d: read %q, %v; want %q", i, got, err, msg)
		}
	}
}

// The whole path: a listener and 600 connections (three batches) move to
// another process, which serves them after the commit. The giver keeps
// its copies until the commit and holds none after; the taker holds every
// descriptor it was given and no other.
func TestTransferCommit(t *testing.T) {
	const n = 600
	dir := filepath.Join(t.TempDir(), "ho")
	p := newPairs(t, n)
	lsn, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer lsn.Close()
	fds := p.clientFDs(t)
	ch := spawn(t, "taker", "HANDOFF_DIR="+dir)
	ctx := testCtx(t)
	before := fdCount()
	g, err := Offer(ctx, dir, Config{Version: testVersion, Logger: quietLogger(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Peer(); got.PID != ch.cmd.Process.Pid || got.UID != os.Geteuid() {
		t.Errorf("Peer() = %+v, want pid %d uid %d", got, ch.cmd.Process.Pid, os.Geteuid())
	}
	if err := give(ctx, g, p, fds, rawFD(t, lsn)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, SocketName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the handoff socket is still there after the successor connected: %v", err)
	}
	// The giver's copies were all open until now; release them as the
	// engine does after a commit.
	if got := fdCount(); got != before+1 {
		t.Errorf("giver holds %d descriptors before releasing, want %d (its own, and the handoff socket)", got, before+1)
	}
	g.Close()
	for _, c := range p.clients {
		c.Close()
	}
	lsn.Close()
	if got := fdCount(); got != before-n-1 {
		t.Errorf("giver holds %d descriptors after releasing, want %d", got, before-n-1)
	}
	// The taker serves the connections now: each writes its index.
	for i, s := range p.servers {
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(s)
		if err != nil || string(b) != fmt.Sprintf("%d\n", i) {
			t.Fatalf("connection %d: the taker wrote %q, %v", i, b, err)
		}
	}
	// And accepts on the listener it was given.
	c, err := net.Dial("tcp", lsn.Addr().String())
	if err != nil {
		t.Fatalf("dialing the moved listener: %v", err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "L\n" {
		t.Errorf("the moved listener answered %q", b)
	}
	kv, code := ch.wait(t)
	if code != 0 {
		t.Fatalf("taker exited %d: %v", code, kv)
	}
	if kv["state"] != "global state" {
		t.Errorf("taker got state %q", kv["state"])
	}
	if got, want := kv["held"], strconv.Itoa(n+1); got != want {
		t.Errorf("taker held %s received descriptors at the commit, want %s", got, want)
	}
	if kv["leak"] != "0" {
		t.Errorf("taker holds %s descriptors more than before the transfer, after closing what it got", kv["leak"])
	}
}

// runTaker is the child taker. Modes: "" (commit, then serve), "die" (exit
// after acknowledging two batches), "lowlimit" (RLIMIT_NOFILE just above
// what it holds, so a batch is cut short), "version" (another state
// version).
func runTaker(mode string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := os.Getenv("HANDOFF_DIR")
	cfg := Config{Version: testVersion, Logger: quietLogger(os.Stderr)}
	if mode == "version" {
		cfg.Version = testVersion + 1
	}
	base := fdCount()
	if mode == "lowlimit" {
		lim := uint64(base + 40)
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: lim, Max: lim}); err != nil {
			fmt.Println("err setrlimit", err)
			return 2
		}
	}
	t, err := Connect(ctx, dir, cfg)
	if err != nil {
		var ve *VersionError
		if errors.As(err, &ve) {
			fmt.Println("err version")
		} else {
			fmt.Println("err", err)
		}
		fmt.Println("leak", fdCount()-base)
		return 1
	}
	base++ // the handoff socket, until the end
	var all []int
	var conns []int
	var idx []uint32
	var lfd = -1
	batches := 0
	closeAll := func() {
		for _, fd := range all {
			unix.Close(fd)
		}
	}
	for {
		m, err := t.Next(ctx, nil)
		if err != nil {
			closeAll()
			var re *RefusedError
			switch {
			case errors.As(err, &re):
				fmt.Println("err refused", re.Reason)
			case errors.Is(err, ErrTakenBack):
				fmt.Println("err takenback")
			default:
				fmt.Println("err", err)
			}
			fmt.Println("leak", fdCount()-(base-1))
			return 1
		}
		all = append(all, m.FDs...)
		switch m.Kind {
		case Listeners:
			lfd = m.FDs[0]
		case Batch:
			conns = append(conns, m.FDs...)
			for i := 0; i+4 <= len(m.Payload); i += 4 {
				idx = append(idx, binary.BigEndian.Uint32(m.Payload[i:]))
			}
			batches++
			if mode == "die" && batches == 2 {
				os.Exit(3) // the kernel closes everything: nothing acknowledged survives a taker
			}
		case State:
			fmt.Println("state", string(m.Payload))
		case Commit:
			fmt.Println("held", fdCount()-base+1)
			// Ours now: serve. Each connection writes its index.
			for i, fd := range conns {
				f := os.NewFile(uintptr(fd), "conn")
				c, err := net.FileConn(f)
				f.Close()
				if err != nil {
					fmt.Println("err fileconn", err)
					return 1
				}
				fmt.Fprintf(c, "%d\n", idx[i])
				c.Close()
			}
			f := os.NewFile(uintptr(lfd), "listener")
			ln, err := net.FileListener(f)
			f.Close()
			if err != nil {
				fmt.Println("err filelistener", err)
				return 1
			}
			c, err := ln.Accept()
			if err == nil {
				io.WriteString(c, "L\n")
				c.Close()
			}
			ln.Close()
			fmt.Println("leak", fdCount()-(base-1))
			return 0
		}
	}
}

// runGiver is the child giver: it dials HANDOFF_N connections to
// HANDOFF_ADDR, gives them away in batches of 100 and then, by mode, dies
// before the commit ("die": the acknowledged batches must live on in the
// taker), calls the transfer off ("takeback") or closes its end without a
// word while it lives on ("silent").
func runGiver(mode string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, _ := strconv.Atoi(os.Getenv("HANDOFF_N"))
	var conns []*net.TCPConn
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", os.Getenv("HANDOFF_ADDR"))
		if err != nil {
			fmt.Println("err dial", err)
			return 2
		}
		fmt.Fprintf(c, "%d\n", i) // tells the parent which accepted end is which
		conns = append(conns, c.(*net.TCPConn))
	}
	cfg := Config{Version: testVersion, Logger: quietLogger(os.Stderr)}
	if mode == "stranger" {
		// Runs as another user: the parent must refuse it.
		_, err := Offer(ctx, os.Getenv("HANDOFF_DIR"), cfg)
		fmt.Println("err", err)
		return 1
	}
	g, err := Offer(ctx, os.Getenv("HANDOFF_DIR"), cfg)
	if err != nil {
		fmt.Println("err", err)
		return 2
	}
	for i := 0; i < n; i += 100 {
		var fds []int
		for _, c := range conns[i:min(i+100, n)] {
			rc, _ := c.SyscallConn()
			_ = rc.Control(func(fd uintptr) { fds = append(fds, int(fd)) })
		}
		if err := g.SendBatch(ctx, indices(i, len(fds)), fds); err != nil {
			fmt.Println("err", err)
			return 2
		}
	}
	if err := g.Flush(ctx); err != nil {
		fmt.Println("err", err)
		return 2
	}
	switch mode {
	case "die":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	case "takeback":
		g.TakeBack()
	case "silent":
		g.c.Close()
	}
	// Alive, serving what it took back: each connection writes "back".
	for _, c := range conns {
		io.WriteString(c, "back\n")
	}
	// Stay alive until the parent has decided.
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

func runRole(role string) int {
	kind, mode, _ := strings.Cut(role, ":")
	switch kind {
	case "taker":
		return runTaker(mode)
	case "giver":
		return runGiver(mode)
	case "stranger":
		return runStranger()
	}
	return 99
}

// A taker that dies after acknowledging two batches takes nothing with
// it: the giver learns it before the commit, takes everything back, and
// every connection still works, with the giver's descriptor count as
// before.
func TestTakerDiesGiverKeepsAll(t *testing.T) {
	p, ch, err := giveTakenBack(t, 700, "taker:die", Config{})
	if !errors.Is(err, ErrTakerGone) {
		t.Fatalf("transfer to a taker that died: %v, want ErrTakerGone", err)
	}
	if _, code := ch.wait(t); code != 3 {
		t.Fatalf("taker exited %d, want 3", code)
	}
	checkAlive(t, p)
}

// A batch whose checksum fails is refused: the giver takes everything back
// and the taker closes all it received.
func TestRefusedBatchTakesBack(t *testing.T) {
	// seq 1 is the listeners, 2 and 3 the first batches.
	p, ch, err := giveTakenBack(t, 600, "taker", Config{corruptSeq: 3})
	var re *RefusedError
	if !errors.As(err, &re) || re.Seq != 3 || !strings.Contains(re.Reason, "checksum") {
		t.Fatalf("transfer with a damaged batch: %v, want a refusal of message 3 for its checksum", err)
	}
	kv, _ := ch.wait(t)
	if !strings.HasPrefix(kv["err"], "refused checksum") {
		t.Errorf("taker ended with %q", kv["err"])
	}
	if kv["leak"] != "0" {
		t.Errorf("taker holds %s descriptors more than before, after a refused transfer", kv["leak"])
	}
	checkAlive(t, p)
}

// A taker at its descriptor limit gets a batch cut short (MSG_CTRUNC): it
// refuses the batch instead of serving part of it, closes what did
// arrive, and the giver keeps everything.
func TestTruncatedBatchRefused(t *testing.T) {
	p, ch, err := giveTakenBack(t, 300, "taker:lowlimit", Config{})
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "MSG_CTRUNC") {
		t.Fatalf("transfer to a taker at its limit: %v, want a refusal for MSG_CTRUNC", err)
	}
	kv, _ := ch.wait(t)
	if kv["leak"] != "0" {
		t.Errorf("taker holds %s descriptors more than before, after refusing (%v)", kv["leak"], kv)
	}
	checkAlive(t, p)
}

// Two processes that disagree on the state format move nothing: both are
// told, and neither holds a descriptor more.
func TestVersionMismatchMovesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ho")
	ch := spawn(t, "taker:version", "HANDOFF_DIR="+dir)
	ctx := testCtx(t)
	before := fdCount()
	_, err := Offer(ctx, dir, Config{Version: testVersion, Logger: quietLogger(nil)})
	var ve *VersionError
	if !errors.As(err, &ve) || ve.What != "state format" || ve.Ours != testVersion || ve.Theirs != testVersion+1 {
		t.Fatalf("Offer to a taker of another version: %v", err)
	}
	if got := fdCount(); got != before {
		t.Errorf("giver holds %d descriptors, had %d", got, before)
	}
	kv, _ := ch.wait(t)
	if kv["err"] != "version" || kv["leak"] != "0" {
		t.Errorf("taker: %v", kv)
	}
}

// giverCase runs a child giver of n connections (dialed to a listener of
// this process) in mode and takes over as far as it lets us. It returns
// the accepted ends by index, the messages received and the taker's
// final error.
func giverCase(t *testing.T, mode string, n int) (servers []net.Conn, fds []int, idx []uint32, err error, ch *child, before int) {
	t.Helper()
	return giverCaseStdin(t, mode, n, nil)
}

// giverCaseStdin is giverCase with the child's stdin set (nil: none), so
// that the child stays alive until the test closes it.
func giverCaseStdin(t *testing.T, mode string, n int, stdin *os.File) (servers []net.Conn, fds []int, idx []uint32, err error, ch *child, before int) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ho")
	ln, lerr := net.Listen("tcp", "127.0.0.1:0")
	if lerr != nil {
		t.Fatal(lerr)
	}
	defer ln.Close()
	ch = spawnIn(t, "giver:"+mode, stdin, "HANDOFF_DIR="+dir, "HANDOFF_N="+strconv.Itoa(n), "HANDOFF_ADDR="+ln.Addr().String())
	servers = make([]net.Conn, n)
	for i := 0; i < n; i++ {
		c, aerr := ln.Accept()
		if aerr != nil {
			t.Fatal(aerr)
		}
		var j int
		if _, serr := fmt.Fscanf(c, "%d\n", &j); serr != nil || j < 0 || j >= n {
			t.Fatalf("accepted connection sent %d, %v", j, serr)
		}
		servers[j] = c
		t.Cleanup(func() { c.Close() })
	}
	ln.Close()
	ctx := testCtx(t)
	before = fdCount()
	tk, cerr := Connect(ctx, dir, Config{Version: testVersion, Logger: quietLogger(nil)})
	if cerr != nil {
		t.Fatal(cerr)
	}
	for {
		m, nerr := tk.Next(ctx, nil)
		if nerr != nil {
			return servers, fds, idx, nerr, ch, before
		}
		fds = append(fds, m.FDs...)
		for i := 0; i+4 <= len(m.Payload); i += 4 {
			idx = append(idx, binary.BigEndian.Uint32(m.Payload[i:]))
		}
	}
}

// A giver that dies after its batches were acknowledged leaves them to the
// taker, which serves them: the peers see nothing.
func TestGiverDiesAcknowledgedLiveOn(t *testing.T) {
	const n = 300
	servers, fds, idx, err, ch, before := giverCase(t, "die", n)
	if !errors.Is(err, ErrGiverGone) {
		t.Fatalf("after the giver died: %v, want ErrGiverGone", err)
	}
	if len(fds) != n || fdCount() != before+n {
		t.Fatalf("taker holds %d received descriptors (%d in all, %d before), want %d", len(fds), fdCount(), before, n)
	}
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "conn")
		c, cerr := net.FileConn(f)
		f.Close()
		if cerr != nil {
			t.Fatal(cerr)
		}
		fmt.Fprintf(c, "alive %d\n", idx[i])
		c.Close()
	}
	for i, s := range servers {
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		b, rerr := io.ReadAll(s)
		if rerr != nil || string(b) != fmt.Sprintf("alive %d\n", i) {
			t.Fatalf("connection %d after the giver died: %q, %v", i, b, rerr)
		}
	}
	ch.wait(t)
}

// A giver that calls the transfer off keeps serving; the taker closes
// everything it received, unread, and holds nothing more than before. The
// same holds when the giver's end closes without a word while it lives
// on: only a giver that exited leaves anything behind.
func TestGiverTakesBack(t *testing.T) {
	for _, mode := range []string{"takeback", "silent"} {
		t.Run(mode, func(t *testing.T) {
			const n = 150
			pr, pw, perr := os.Pipe()
			if perr != nil {
				t.Fatal(perr)
			}
			defer pw.Close()
			servers, fds, _, err, ch, before := giverCaseStdin(t, mode, n, pr)
			if !errors.Is(err, ErrTakenBack) {
				t.Fatalf("after the giver took back: %v, want ErrTakenBack", err)
			}
			for _, fd := range fds {
				unix.Close(fd)
			}
			if got := fdCount(); got != before {
				t.Errorf("taker holds %d descriptors after closing what it got, had %d", got, before)
			}
			for i, s := range servers {
				_ = s.SetDeadline(time.Now().Add(10 * time.Second))
				b := make([]byte, 5)
				if _, rerr := io.ReadFull(s, b); rerr != nil || string(b) != "back\n" {
					t.Fatalf("connection %d: the giver no longer serves it: %q, %v", i, b, rerr)
				}
			}
			pw.Close()
			pr.Close()
			ch.wait(t)
		})
	}
}

// The window bounds the batches in flight, and ETOOMANYREFS (the kernel's
// count of this user's descriptors in flight) is waited out, not
// reported: every batch arrives once, in order.
func TestWindowAndTooManyRefs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ho")
	p := newPairs(t, 40)
	ctx := testCtx(t)
	var mu sync.Mutex
	maxInFlight, refusals := 0, 0
	var g *Giver
	cfg := Config{Version: testVersion, Logger: quietLogger(nil), Window: 2}
	cfg.sendErr = func(int) error {
		mu.Lock()
		defer mu.Unlock()
		// g.unacked already counts the message being sent.
		if f := g.InFlight(); f > maxInFlight {
			maxInFlight = f
		}
		if g.InFlight() > 1 && refusals < 3 {
			refusals++
			return unix.ETOOMANYREFS
		}
		return nil
	}
	type result struct {
		seqs []uint32
		idx  []uint32
		err  error
	}
	res := make(chan result, 1)
	go func() {
		tk, err := Connect(ctx, dir, Config{Version: testVersion, Logger: quietLogger(nil)})
		if err != nil {
			res <- result{err: err}
			return
		}
		var r result
		for {
			m, err := tk.Next(ctx, nil)
			if err != nil {
				r.err = err
				res <- r
				return
			}
			for _, fd := range m.FDs {
				unix.Close(fd)
			}
			r.seqs = append(r.seqs, m.Seq)
			for i := 0; i+4 <= len(m.Payload); i += 4 {
				r.idx = append(r.idx, binary.BigEndian.Uint32(m.Payload[i:]))
			}
			if m.Kind == Commit {
				res <- r
				return
			}
		}
	}()
	var err error
	g, err = Offer(ctx, dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i += 4 {
		var fds []int
		for _, c := range p.clients[i : i+4] {
			fds = append(fds, rawFD(t, c))
		}
		if err := g.SendBatch(ctx, indices(i, 4), fds); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	mu.Lock()
	defer mu.Unlock()
	if maxInFlight > 2 {
		t.Errorf("%d messages in flight, window 2", maxInFlight)
	}
	if refusals == 0 {
		t.Error("the test never made the kernel refuse: it checks nothing")
	}
	for i, s := range r.seqs {
		if s != uint32(i+1) {
			t.Fatalf("messages arrived as %v", r.seqs)
		}
	}
	for i, v := range r.idx {
		if v != uint32(i) {
			t.Fatalf("connections arrived as %v", r.idx)
		}
	}
	if len(r.idx) != 40 {
		t.Fatalf("%d connections arrived, want 40", len(r.idx))
	}
}

// The directory must be this user's and closed to others; the socket in it
// is created with no access for group and others, without a chmod.
func TestDirectoryRules(t *testing.T) {
	base := t.TempDir()
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := listen(open); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Errorf("listen in a directory of mode 0755: %v", err)
	}
	if _, err := listen(""); err == nil {
		t.Error("listen with no directory succeeded")
	}
	long := filepath.Join(base, strings.Repeat("d", 120))
	if _, err := listen(long); err == nil || !strings.Contains(err.Error(), "longer") {
		t.Errorf("listen with a socket path over the limit: %v", err)
	}
	dir := filepath.Join(base, "ho")
	ln, err := listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("handoff directory mode %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	si, err := os.Lstat(filepath.Join(dir, SocketName))
	if err != nil || si.Mode().Perm()&0o077 != 0 {
		t.Errorf("handoff socket mode %v, %v; want no access for group and others", si.Mode().Perm(), err)
	}
	// A second giver on the same directory is refused while the first
	// listens.
	if _, err := listen(dir); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("a second listen on a busy directory: %v", err)
	}
}

// A process of another user that reaches the socket (here through a
// directory opened on purpose) gets nothing, not even a byte, and is
// logged; the giver goes on waiting for the right successor. A giver of
// another user is refused by the taker before anything is read. Needs
// root, to run the stranger as another user.
func TestStrangersGetNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	const nobody = 65534
	// The stranger's binary must be reachable by that user.
	bindir := publicTempDir(t)
	if err := os.Chmod(bindir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(bindir, "handoff.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	sockdir := publicTempDir(t)
	if err := os.Chmod(sockdir, 0o777); err != nil {
		t.Fatal(err)
	}

	t.Run("giver refuses", func(t *testing.T) {
		path := filepath.Join(sockdir, "g.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if err := os.Chmod(path, 0o777); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), "HANDOFF_TEST_ROLE=stranger", "HANDOFF_SOCK="+path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		var logMu sync.Mutex
		cfg := &Config{Version: testVersion, Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, nil))}
		ctx := testCtx(t)
		got := make(chan *Conn, 1)
		go func() {
			c, err := accept(ctx, ln, cfg)
			if err != nil {
				t.Error(err)
			}
			got <- c
		}()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("stranger: %v\n%s", err, out)
		}
		if s := out.String(); !strings.Contains(s, "read 0 bytes 0 fds") {
			t.Errorf("the stranger got something: %s", s)
		}
		// The right successor is still welcome.
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		acc := <-got
		if acc == nil || acc.Peer.UID != os.Geteuid() {
			t.Fatalf("accept after the stranger: %+v", acc)
		}
		acc.Close()
		logMu.Lock()
		defer logMu.Unlock()
		if l := logs.String(); !strings.Contains(l, "another user") || !strings.Contains(l, "peer_uid="+strconv.Itoa(nobody)) {
			t.Errorf("the stranger was not logged: %q", l)
		}
	})

	t.Run("taker refuses", func(t *testing.T) {
		dir := filepath.Join(sockdir, "ho")
		if err := os.Mkdir(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), "HANDOFF_TEST_ROLE=giver:stranger", "HANDOFF_DIR="+dir, "HANDOFF_N=0", "HANDOFF_ADDR="+ln.Addr().String())
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		var logs bytes.Buffer
		var logMu sync.Mutex
		before := fdCount()
		_, err = Connect(testCtx(t), dir, Config{Version: testVersion, Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, nil))})
		if err == nil || !strings.Contains(err.Error(), "not allowed") {
			t.Fatalf("taking over from another user's process: %v", err)
		}
		if got := fdCount(); got != before {
			t.Errorf("taker holds %d descriptors after refusing, had %d", got, before)
		}
		logMu.Lock()
		defer logMu.Unlock()
		if !strings.Contains(logs.String(), "another user") {
			t.Errorf("not logged: %q", logs.String())
		}
	})
}

// publicTempDir makes a temporary directory that another user can reach
// (t.TempDir's parent is closed to others).
func publicTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "handoff-public")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// runStranger connects to HANDOFF_SOCK and reports what it could read.
func runStranger() int {
	c, err := net.Dial("unix", os.Getenv("HANDOFF_SOCK"))
	if err != nil {
		fmt.Println("err", err)
		return 2
	}
	uc := c.(*net.UnixConn)
	_ = uc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(4*MaxFDs))
	n, oobn, _, _, err := uc.ReadMsgUnix(b, oob)
	fds := 0
	if oobn > 0 {
		fds = len(parseRights(oob[:oobn]))
	}
	fmt.Printf("read %d bytes %d fds (%v)\n", n, fds, err)
	return 0
}
