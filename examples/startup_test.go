// Package examples_test checks what every example program does at start.
package examples_test

import (
	"bytes"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Each example started on a port that is taken exits 1 with the reason on
// stderr, and never panics: Start returns the listener's error, and nothing
// says "listening" (or hands out a nil Addr) before a listen succeeded.
// Half of the starts ask for the loopback address that is taken, half for
// every address (":PORT"), which the kernel refuses for the same reason.
func TestExamplesExitOnTakenPort(t *testing.T) {
	starts := 200
	if testing.Short() {
		starts = 20
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	for _, ex := range []string{"chat", "echo", "embed"} {
		t.Run(ex, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), ex)
			build := exec.Command("go", "build", "-o", bin, ".")
			build.Dir = ex
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go build ./examples/%s: %v\n%s", ex, err, out)
			}
			var wg sync.WaitGroup
			sem := make(chan struct{}, runtime.GOMAXPROCS(0)*2)
			for i := range starts {
				addr := "127.0.0.1:" + port
				if i%2 == 1 {
					addr = ":" + port
				}
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; wg.Done() }()
					var stderr bytes.Buffer
					cmd := exec.Command(bin, "-addr", addr)
					cmd.Stderr = &stderr
					err := cmd.Run()
					var ee *exec.ExitError
					switch {
					case strings.Contains(stderr.String(), "panic"):
						t.Errorf("start %d (-addr %s) panicked:\n%s", i, addr, stderr.String())
					case !errors.As(err, &ee) || ee.ExitCode() != 1:
						t.Errorf("start %d (-addr %s): %v, want exit status 1\n%s", i, addr, err, stderr.String())
					case !strings.Contains(stderr.String(), "address already in use"):
						t.Errorf("start %d (-addr %s): stderr does not give the reason:\n%s", i, addr, stderr.String())
					}
				}()
			}
			wg.Wait()
		})
	}
}
