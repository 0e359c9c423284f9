// Command server runs one WebSocket echo-and-broadcast server, chosen by
// name, so that every implementation under comparison is the same kind of
// process. It prints "READY <impl> <addr> <pid>" on stdout once it listens,
// writes its Go runtime statistics as JSON to the -stats file on SIGUSR1, and
// exits by itself after -max-life.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/bench/internal/proc"
	"github.com/wsloop/wsloop/bench/servers"
)

func main() {
	impl := flag.String("impl", "", "implementation: "+fmt.Sprint(servers.Names()))
	addr := flag.String("addr", "127.0.0.1:9001", "listen address (loopback)")
	statsFile := flag.String("stats", "", "file to write runtime statistics to on SIGUSR1")
	maxLife := flag.Duration("max-life", time.Hour, "exit after this long whatever happens")
	list := flag.Bool("list", false, "list implementations and exit")
	memProfile := flag.String("memprofile", "", "also write a heap profile (pprof) to this file on SIGUSR1")
	flag.Parse()
	if *list {
		for _, n := range servers.Names() {
			d := servers.Describe(n)
			fmt.Printf("%-8s %s %s  %s\n", n, d.Module, d.Version, d.Notes)
		}
		return
	}
	if *memProfile != "" {
		// Every allocation sampled: exact per-connection attribution, at a
		// CPU cost that only profiling runs pay.
		runtime.MemProfileRate = 1
	}
	run, err := servers.Get(*impl)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	proc.RaiseNoFile()

	time.AfterFunc(*maxLife, func() {
		fmt.Fprintln(os.Stderr, "server: max-life reached, exiting")
		os.Exit(3)
	})
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	var seq atomic.Int64
	go func() {
		for s := range sigs {
			if s != syscall.SIGUSR1 {
				os.Exit(0)
			}
			if *statsFile != "" {
				writeStats(*impl, *statsFile, time.Now().UnixNano()+seq.Add(1))
			}
			if *memProfile != "" {
				writeHeapProfile(*memProfile)
			}
		}
	}()

	err = run(*addr, func() {
		fmt.Printf("READY %s %s %d\n", *impl, *addr, os.Getpid())
	})
	fmt.Fprintln(os.Stderr, "server:", err)
	os.Exit(1)
}

// writeHeapProfile records where the live heap was allocated, so that
// the bytes behind "heap per connection" can be attributed (go tool pprof
// -sample_index=inuse_space).
func writeHeapProfile(path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server: memprofile:", err)
		return
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "server: memprofile:", err)
	}
	_ = f.Close()
}

func writeStats(impl, path string, seq int64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	st := proc.ServerStats{
		Impl: impl, HeapAlloc: m.HeapAlloc, HeapInuse: m.HeapInuse, HeapSys: m.HeapSys,
		StackInuse: m.StackInuse, Sys: m.Sys, HeapReleased: m.HeapReleased, GCSys: m.GCSys,
		MSpanInuse: m.MSpanInuse, OtherSys: m.OtherSys, NumGoroutine: runtime.NumGoroutine(), NumGC: m.NumGC, Seq: seq,
	}
	b, _ := json.Marshal(st)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err == nil {
		_ = os.Rename(tmp, path)
	}
}
