//go:build ignore

// Command testsummary reads `go test -json` on stdin and prints what a person
// needs from it: a line per package as it finishes, the whole output of every
// failing test (and of a package that failed outside its tests: a build
// error, a panic, a timeout), then a summary with every skipped test and why.
//
// A test skipped for want of a tool that CI installed fails the run: the
// tests skip with "missing tool: NAME (install: ...)" (internal/testtool),
// and -require lists the tools .ci/run has, so a broken install or a lookup
// that stopped finding a tool cannot pass as a green build.
//
//	go build -o testsummary .ci/testsummary.go
//	go test -json ./... | ./testsummary -require 'chromium node' -save test.json
//
// It exits 1 when a package failed, a required tool's test skipped, or the
// stream had no result at all; 0 otherwise.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json), with the build
// events of Go 1.24 and later.
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	Elapsed    float64
	ImportPath string // build-output, build-fail
}

type line struct{ test, text string }

type pkgState struct {
	lines []line          // every output line, in order, with its test
	ended map[string]bool // top-level tests that passed, failed or skipped
	// Where each test's latest run began in lines: a binary may run a
	// test more than once (conformance's TestMain runs the suite once per
	// road), and only the latest run's output belongs to its result.
	from map[string]int
}

type skip struct{ pkg, test, reason string }

var missingTool = regexp.MustCompile(`missing tool: (\S+)`)

func main() {
	require := flag.String("require", "", "tools (space- or comma-separated) whose tests must not skip")
	save := flag.String("save", "", "also write the raw stream to this file")
	flag.Parse()
	required := map[string]bool{}
	for _, t := range strings.FieldsFunc(*require, func(r rune) bool { return r == ' ' || r == ',' }) {
		required[t] = true
	}

	var in io.Reader = os.Stdin
	if *save != "" {
		f, err := os.Create(*save)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testsummary:", err)
			os.Exit(2)
		}
		defer f.Close()
		in = io.TeeReader(os.Stdin, f)
	}

	start := time.Now()
	pkgs := map[string]*pkgState{}
	build := map[string][]string{} // build output by import path
	state := func(p string) *pkgState {
		s := pkgs[p]
		if s == nil {
			s = &pkgState{ended: map[string]bool{}, from: map[string]int{}}
			pkgs[p] = s
		}
		return s
	}
	var (
		okPkgs, failedPkgs []string
		passed, failed     int
		skips              []skip
		results            int
	)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		raw := sc.Bytes()
		var e event
		if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &e) != nil {
			fmt.Println(string(raw)) // the go command's own messages
			continue
		}
		switch e.Action {
		case "build-output":
			build[e.ImportPath] = append(build[e.ImportPath], e.Output)
			continue
		case "build-fail":
			fmt.Printf("BUILD FAILED %s\n%s", e.ImportPath, strings.Join(build[e.ImportPath], ""))
			continue
		}
		s := state(e.Package)
		switch e.Action {
		case "run":
			s.from[e.Test] = len(s.lines)
			if !strings.Contains(e.Test, "/") {
				delete(s.ended, e.Test)
			}
		case "output":
			s.lines = append(s.lines, line{e.Test, e.Output})
		case "pass", "fail", "skip":
			if e.Test != "" {
				if !strings.Contains(e.Test, "/") {
					s.ended[e.Test] = true
				}
				switch e.Action {
				case "pass":
					passed++
				case "fail":
					failed++
					if !strings.Contains(e.Test, "/") {
						printTest(e.Package, e.Test, s)
					}
				case "skip":
					skips = append(skips, skip{e.Package, e.Test, skipReason(s, e.Test)})
				}
				continue
			}
			results++
			switch e.Action {
			case "pass":
				okPkgs = append(okPkgs, e.Package)
				fmt.Printf("ok      %s\t%.1fs\n", e.Package, e.Elapsed)
			case "skip":
				// no test files
			case "fail":
				failedPkgs = append(failedPkgs, e.Package)
				// What was not shown with a failing test: the package's
				// own output (a panic outside any test, a timeout, the
				// final FAIL) and that of tests that never ended (the
				// one running when the binary died).
				// A timeout's or a crash's dump is attributed to
				// whichever test printed last, often one that had
				// ended (parallel tests), so it is found by its text
				// and shown whole, less goroutines of no test.
				dump := len(s.lines)
				for i, l := range s.lines {
					if strings.HasPrefix(l.text, "panic: ") || strings.HasPrefix(l.text, "fatal error: ") {
						dump = i
						break
					}
				}
				var rest, tail strings.Builder
				for i, l := range s.lines {
					top := topLevel(l.test)
					switch {
					case i >= dump:
						tail.WriteString(l.text)
					case l.test == "" || !s.ended[top] && i >= s.from[top]:
						rest.WriteString(l.text)
					}
				}
				fmt.Printf("FAIL    %s\t%.1fs\n%s%s", e.Package, e.Elapsed,
					indent(clip(rest.String(), *save)), indent(testGoroutines(tail.String(), *save)))
			}
			delete(pkgs, e.Package)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Println("testsummary: reading the stream:", err)
		results = 0
	}

	fmt.Printf("\nsummary: %d packages ok, %d failed; tests and subtests: %d passed, %d failed, %d skipped (%s)\n",
		len(okPkgs), len(failedPkgs), passed, failed, len(skips), time.Since(start).Round(time.Second))
	bad := results == 0 || len(failedPkgs) > 0
	if results == 0 {
		fmt.Println("summary: no package reported a result")
	}
	for _, p := range failedPkgs {
		fmt.Println("  FAILED", p)
	}
	if len(skips) > 0 {
		fmt.Println("skipped (package, test: why):")
		sort.SliceStable(skips, func(i, j int) bool { return skips[i].pkg < skips[j].pkg })
		for _, s := range skips {
			fmt.Printf("  %s %s: %s\n", short(s.pkg), s.test, s.reason)
		}
	}
	for _, s := range skips {
		m := missingTool.FindStringSubmatch(s.reason)
		if m != nil && required[m[1]] {
			fmt.Printf("summary: %s %s skipped for want of %s, which CI installed: the tool is there, so the test's lookup is broken\n", s.pkg, s.test, m[1])
			bad = true
		}
	}
	if bad {
		os.Exit(1)
	}
}

// printTest prints the output of a failed top-level test and its subtests.
func printTest(pkg, test string, s *pkgState) {
	var b strings.Builder
	for _, l := range s.lines[s.from[test]:] {
		if l.test == test || strings.HasPrefix(l.test, test+"/") {
			b.WriteString(l.text)
		}
	}
	fmt.Printf("--- FAIL: %s (%s)\n%s", test, pkg, indent(b.String()))
}

// skipReason is what a skipped test said, without the run and skip lines.
func skipReason(s *pkgState, test string) string {
	var parts []string
	for _, l := range s.lines[s.from[test]:] {
		if l.test != test {
			continue
		}
		t := strings.TrimSpace(l.text)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		// "file_test.go:12: message": keep the message.
		if i := strings.Index(t, ".go:"); i >= 0 {
			if j := strings.Index(t[i:], ": "); j >= 0 {
				t = t[i+j+2:]
			}
		}
		parts = append(parts, t)
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	return strings.Join(parts, " ")
}

// clip keeps the first 40 and the last 80 lines of a long output (a
// timeout's goroutine dump, a chatty package), saying where the rest is.
func clip(s, saved string) string {
	lines := strings.SplitAfter(s, "\n")
	const head, tail = 40, 80
	if len(lines) <= head+tail+10 {
		return s
	}
	where := "the raw stream"
	if saved != "" {
		where = saved
	}
	return strings.Join(lines[:head], "") +
		fmt.Sprintf("[... %d lines: see %s ...]\n", len(lines)-head-tail, where) +
		strings.Join(lines[len(lines)-tail:], "")
}

// testGoroutines keeps, of a panic's goroutine dump, the message (with the
// tests that were running) and the goroutines with a test file in their
// stack, which say where each test waited; the engine's own goroutines
// (loops, timers) rarely do and can number hundreds.
func testGoroutines(s, saved string) string {
	if s == "" {
		return ""
	}
	blocks := strings.SplitAfter(s, "\n\n")
	var b strings.Builder
	b.WriteString(blocks[0]) // the panic, and "running tests:"
	shown, left := 0, 0
	for _, g := range blocks[1:] {
		if !strings.HasPrefix(g, "goroutine ") {
			b.WriteString(g) // the go command's lines after the dump
			continue
		}
		if !strings.Contains(g, "_test.go:") || shown == 20 {
			left++
			continue
		}
		b.WriteString(g)
		shown++
	}
	if left > 0 {
		where := "the raw stream"
		if saved != "" {
			where = saved
		}
		fmt.Fprintf(&b, "[%d goroutines with no test file in their stack, or past the first 20: see %s]\n", left, where)
	}
	return b.String()
}

func topLevel(test string) string {
	if i := strings.Index(test, "/"); i >= 0 {
		return test[:i]
	}
	return test
}

func short(pkg string) string { return strings.TrimPrefix(pkg, "github.com/wsloop/wsloop/") }

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}
