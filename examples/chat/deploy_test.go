//go:build linux

package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// Deploying without disconnecting, as an operator does it: the chat runs as
// a process of its own (this test binary, re-executed as the chat's main),
// gets SIGHUP, starts its successor and hands it everything. The clients
// must not notice.

func TestMain(m *testing.M) {
	if os.Getenv("CHAT_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// chatProcess is a chat server running as a process of its own, and the
// lines it (and its successors, which inherit its stderr) logged.
type chatProcess struct {
	cmd   *exec.Cmd
	addr  net.Addr
	lines chan string
}

var addrRE = regexp.MustCompile(`addr=(\S+)`)
var pidRE = regexp.MustCompile(`\bpid=(\d+)`)

// startChat runs the chat as a process with args on a free loopback port.
// This test process becomes the subreaper of its successors, so that it
// can wait for them when they are orphaned by a deploy.
func startChat(t *testing.T, args ...string) *chatProcess {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "handoff")
	args = append([]string{"-addr", "127.0.0.1:0", "-handoff-dir", dir}, args...)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "CHAT_TEST_MAIN=1")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = pw // an *os.File: no copying goroutine, and successors inherit it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	p := &chatProcess{cmd: cmd, lines: make(chan string, 1000)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if testing.Verbose() {
				fmt.Fprintln(os.Stderr, "chat:", sc.Text())
			}
			select {
			case p.lines <- sc.Text():
			default: // nobody waits for these
			}
		}
		pr.Close()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}
	})
	line := p.waitLine(t, "chat listening")
	m := addrRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no address in %q", line)
	}
	a, err := net.ResolveTCPAddr("tcp", m[1])
	if err != nil {
		t.Fatal(err)
	}
	p.addr = a
	return p
}

// waitLine returns the next logged line that contains s.
func (p *chatProcess) waitLine(t *testing.T, s string) string {
	t.Helper()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("the chat processes ended without logging %q", s)
			}
			if strings.Contains(line, s) {
				return line
			}
		case <-timer.C:
			t.Fatalf("no %q logged within 30s", s)
		}
	}
}

// redeploy sends the chat process SIGHUP and waits until its successor
// took over and the old process exited cleanly; the successor is stopped
// when the test ends.
func (p *chatProcess) redeploy(t *testing.T) {
	t.Helper()
	oldPid := p.cmd.Process.Pid
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	took := p.waitLine(t, "chat took over")
	m := pidRE.FindStringSubmatch(took)
	if m == nil {
		t.Fatalf("no pid in %q", took)
	}
	newPid, _ := strconv.Atoi(m[1])
	if newPid == oldPid {
		t.Fatalf("the successor has the old pid %d", newPid)
	}
	t.Cleanup(func() { reapOrphan(t, newPid) })
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("the old process: %v", err)
	}
}

// reapOrphan stops a successor that this process adopted as subreaper.
func reapOrphan(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Errorf("stopping the successor %d: %v", pid, err)
		return
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		t.Errorf("waiting for the successor %d: %v", pid, err)
	} else if ws.ExitStatus() != 0 {
		t.Errorf("the successor exited %d", ws.ExitStatus())
	}
}

// collect reads c's chat messages until it has every one in want, and
// fails on anything the deploy must not cause: a close, a join or leave
// notice, a member list, a history.
func collect(t *testing.T, c *wsClient, want map[string]bool) []string {
	t.Helper()
	var got []string
	seen := 0
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	for seen < len(want) {
		select {
		case m := <-c.msgs:
			switch m["type"] {
			case "message":
				text, _ := m["text"].(string)
				got = append(got, text)
				if want[text] {
					seen++
				}
			default:
				t.Fatalf("%s got %v during the deploy", c.name, m)
			}
		case <-c.done:
			t.Fatalf("%s: connection closed (%d %q) during the deploy, after %d messages", c.name, c.close, c.text, len(got))
		case <-timer.C:
			t.Fatalf("%s: %d of %d messages after 30s", c.name, seen, len(want))
		}
	}
	return got
}

// checkOnceInOrder checks that got holds each sender's messages 1..n once
// each, in order.
func checkOnceInOrder(t *testing.T, who string, got []string, senders []string, n int) {
	t.Helper()
	next := map[string]int{}
	for _, s := range senders {
		next[s] = 1
	}
	for _, text := range got {
		s, num, ok := strings.Cut(text, "-")
		i, err := strconv.Atoi(num)
		if !ok || err != nil {
			t.Errorf("%s: unexpected message %q", who, text)
			continue
		}
		if i != next[s] {
			t.Fatalf("%s: %q arrived when %s-%d was due: a message was lost, doubled or reordered", who, text, s, next[s])
		}
		next[s]++
	}
	for _, s := range senders {
		if next[s] != n+1 {
			t.Errorf("%s: got %s's messages up to %d of %d", who, s, next[s]-1, n)
		}
	}
}

// A chat process that gets SIGHUP while two members talk hands the port,
// the room and both connections to its successor: neither member sees a
// close, a notice or a lost or doubled message, the old process exits,
// and someone joining afterwards gets the history from before the deploy.
func TestDeployOnSIGHUP(t *testing.T) {
	p := startChat(t)
	// One after the other: two joins at once may land in either order
	// (each connection has its own loop).
	ann := mustDial(t, p.addr, "deploy", "ann")
	ann.expect(t, "history", typeIs("history"))
	ann.expect(t, "members", typeIs("members"))
	bob := mustDial(t, p.addr, "deploy", "bob")
	bob.expect(t, "history", typeIs("history"))
	if m := bob.expect(t, "members", typeIs("members")); !slices.Contains(names(m), "ann") {
		t.Fatalf("bob's member list %v has no ann", names(m))
	}
	ann.expect(t, "bob joining", joined("bob"))

	// Both talk steadily, one message each every 5 ms, through the deploy.
	const n = 200
	want := map[string]bool{}
	for i := 1; i <= n; i++ {
		want[fmt.Sprintf("ann-%d", i)] = true
		want[fmt.Sprintf("bob-%d", i)] = true
	}
	started := make(chan struct{}, 2)
	talk := func(c *wsClient) {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 1; i <= n; i++ {
			<-tick.C
			if err := c.write(ws.NewTextFrame(mustJSON(clientMsg{Type: "message", Text: fmt.Sprintf("%s-%d", c.name, i)}))); err != nil {
				t.Errorf("%s: send %d: %v", c.name, i, err)
				return
			}
			if i == 20 {
				started <- struct{}{}
			}
		}
	}
	go talk(ann)
	go talk(bob)
	// Deploy once the conversation is going.
	<-started
	<-started
	p.redeploy(t)
	for _, c := range []*wsClient{ann, bob} {
		checkOnceInOrder(t, c.name, collect(t, c, want), []string{"ann", "bob"}, n)
	}

	cy := mustDial(t, p.addr, "deploy", "cy")
	h := cy.expect(t, "history", typeIs("history"))
	msgs, _ := h["messages"].([]any)
	if len(msgs) == 0 {
		t.Fatal("cy got no history: the rooms did not move")
	}
	last, _ := msgs[len(msgs)-1].(map[string]any)
	if last["text"] != "ann-200" && last["text"] != "bob-200" {
		t.Errorf("the history ends with %v, want the last message of the conversation", last["text"])
	}
	mem := cy.expect(t, "members", typeIs("members"))
	if fmt.Sprint(mem["names"]) != "[ann bob cy]" {
		t.Errorf("cy sees members %v", mem["names"])
	}
}
