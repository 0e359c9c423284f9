package child

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/bench/internal/load"
)

// Clients are wsload processes in the hold scenario, driven through their
// standard input: they ramp their share of the connections, print
// "OPENED n failed", then answer commands ("check", "storm") one line
// each until "quit", after which each prints its RESULT line.
type Clients struct {
	procs []*holdProc
}

type holdProc struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	done  chan struct{}
}

// HoldSpec sizes a set of hold clients.
type HoldSpec struct {
	Bin   string         // wsload
	Addr  netip.AddrPort // the server
	Path  string
	N     int // connections in all, split evenly over Procs
	Procs int
	// Src returns the first of 4 consecutive loopback source addresses
	// for process i: each process (and each run) should use fresh ones.
	Src   func(i int) netip.Addr
	Args  []string // extra wsload arguments (-inflight, -rate, ...)
	CPUs  string   // -cpus for every process
	Debug io.Writer
}

// StartHold starts the client processes; they begin ramping at once.
func StartHold(h HoldSpec) (*Clients, error) {
	c := &Clients{}
	procs := max(1, h.Procs)
	for i := 0; i < procs; i++ {
		n := h.N / procs
		if i < h.N%procs {
			n++
		}
		args := []string{"-scenario", "hold", "-addr", h.Addr.String(), "-path", h.Path, "-n", strconv.Itoa(n),
			"-src", h.Src(i).String(), "-src-count", "4", "-quiet", "-max-life", "30m"}
		if h.CPUs != "" {
			args = append(args, "-cpus", h.CPUs)
		}
		cmd := exec.Command(h.Bin, append(args, h.Args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		cmd.Stderr = h.Debug
		in, err := cmd.StdinPipe()
		if err != nil {
			c.Kill()
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			c.Kill()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			c.Kill()
			return nil, err
		}
		p := &holdProc{cmd: cmd, in: in, lines: make(chan string, 64), done: make(chan struct{})}
		go func() {
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			for sc.Scan() {
				p.lines <- sc.Text()
			}
			close(p.lines)
		}()
		go func() { _ = cmd.Wait(); close(p.done) }()
		c.procs = append(c.procs, p)
	}
	return c, nil
}

// next returns p's next line starting with prefix, skipping others.
func (p *holdProc) next(prefix string, timeout time.Duration) (string, error) {
	t := time.After(timeout)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				return "", fmt.Errorf("wsload exited before %s", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l, nil
			}
		case <-t:
			return "", fmt.Errorf("no %s from wsload within %v", prefix, timeout)
		}
	}
}

// Lines sends cmd (if not "") to every process at once and returns each
// one's next line starting with prefix, split into fields.
func (c *Clients) Lines(cmd, prefix string, timeout time.Duration) ([][]string, error) {
	if cmd != "" {
		for _, p := range c.procs {
			if _, err := io.WriteString(p.in, cmd+"\n"); err != nil {
				return nil, err
			}
		}
	}
	var out [][]string
	for _, p := range c.procs {
		l, err := p.next(prefix, timeout)
		if err != nil {
			return out, err
		}
		out = append(out, strings.Fields(l))
	}
	return out, nil
}

// WaitOpened waits for every process's OPENED line and sums them.
func (c *Clients) WaitOpened(timeout time.Duration) (opened, failed int, err error) {
	ls, err := c.Lines("", "OPENED ", timeout)
	for _, f := range ls {
		if len(f) >= 3 {
			a, _ := strconv.Atoi(f[1])
			b, _ := strconv.Atoi(f[2])
			opened += a
			failed += b
		}
	}
	return opened, failed, err
}

// Quit ends every process and returns their results.
func (c *Clients) Quit() []*load.Result {
	var rs []*load.Result
	for _, p := range c.procs {
		_, _ = io.WriteString(p.in, "quit\n")
		_ = p.in.Close()
	}
	for _, p := range c.procs {
		if l, err := p.next("RESULT ", 30*time.Second); err == nil {
			var r load.Result
			if json.Unmarshal([]byte(strings.TrimPrefix(l, "RESULT ")), &r) == nil {
				rs = append(rs, &r)
			}
		}
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	return rs
}

// Kill stops every process at once.
func (c *Clients) Kill() {
	for _, p := range c.procs {
		_ = p.cmd.Process.Kill()
	}
}

// Pids returns the client processes' ids.
func (c *Clients) Pids() []int {
	var ps []int
	for _, p := range c.procs {
		ps = append(ps, p.cmd.Process.Pid)
	}
	return ps
}
