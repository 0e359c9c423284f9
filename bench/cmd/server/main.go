// Command server runs one WebSocket echo-and-broadcast server, chosen by
// name, so that every implementation under comparison is the same kind of
// process. It prints "READY <impl> <addr> <pid>" on stdout once it listens,
// writes its Go runtime statistics as JSON to the -stats file on SIGUSR1
// (after a forced GC) or SIGUSR2 (without one), and exits by itself after
// -max-life. With -tls (wsloop, gws and nbio) it serves wss:// instead of
// ws://. The bench servers run with the Go runtime's defaults: no GOGC,
// memory limit or FreeOSMemory, so that what is measured is what a user
// gets.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/bench/internal/pin"
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
	var set servers.Settings
	flag.IntVar(&set.Loops, "loops", 0, "event loops (wsloop) or pollers (nbio); 0: the library's default; others ignore it")
	flag.BoolVar(&set.ReusePort, "reuseport", false, "SO_REUSEPORT on the listener, so several server processes can share the port")
	flag.Func("opt", "wsloop: set engine.Options field, `Field=Value` (repeatable), e.g. -opt ReadBufferCap=16384", func(s string) error {
		set.Options = append(set.Options, s)
		return nil
	})
	cpus := flag.String("cpus", "", "run only on these CPUs (taskset -c syntax, e.g. 0-7); GOMAXPROCS follows")
	useTLS := flag.Bool("tls", false, "serve wss:// (wsloop, gws, nbio) with -tls-cert/-tls-key, or a self-signed ECDSA P-256 certificate generated in memory")
	tlsCert := flag.String("tls-cert", "", "PEM certificate file for wss:// (implies -tls)")
	tlsKey := flag.String("tls-key", "", "PEM private key file for wss:// (implies -tls)")
	flag.Parse()
	if err := pin.Apply(*cpus); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(2)
	}
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
	if len(set.Options) > 0 && *impl != "wsloop" && *impl != "wsloop-http" {
		fmt.Fprintln(os.Stderr, "server: -opt applies to wsloop and wsloop-http only")
		os.Exit(2)
	}
	if *useTLS || *tlsCert != "" || *tlsKey != "" {
		if !servers.SupportsTLS(*impl) {
			fmt.Fprintf(os.Stderr, "server: %s has no wss:// mode in this bench\n", *impl)
			os.Exit(2)
		}
		switch {
		case *tlsCert != "" && *tlsKey != "":
			set.TLS, err = servers.LoadTLSCert(*tlsCert, *tlsKey)
		case *tlsCert != "" || *tlsKey != "":
			err = fmt.Errorf("-tls-cert and -tls-key go together")
		default:
			set.TLS, err = servers.SelfSignedTLSCert()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "server:", err)
			os.Exit(2)
		}
	}
	proc.RaiseNoFile()

	time.AfterFunc(*maxLife, func() {
		fmt.Fprintln(os.Stderr, "server: max-life reached, exiting")
		os.Exit(3)
	})
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	var seq atomic.Int64
	go func() {
		for s := range sigs {
			switch s {
			case syscall.SIGUSR1:
				if *statsFile != "" {
					writeStats(*impl, *statsFile, time.Now().UnixNano()+seq.Add(1), true)
				}
				if *memProfile != "" {
					writeHeapProfile(*memProfile)
				}
			case syscall.SIGUSR2:
				// Statistics without a GC: reading them must not change
				// the memory being measured.
				if *statsFile != "" {
					writeStats(*impl, *statsFile, time.Now().UnixNano()+seq.Add(1), false)
				}
			default:
				os.Exit(0)
			}
		}
	}()

	err = run(*addr, set, func() {
		fmt.Printf("READY %s %s %d\n", *impl, *addr, os.Getpid())
	})
	fmt.Fprintln(os.Stderr, "server:", err)
	os.Exit(1)
}

// writeHeapProfile records where the live heap was allocated, so that
// the bytes behind "heap per connection" can be attributed (go tool pprof
// -sample_index=inuse_space).
//
// The profile is written to a temporary name and renamed when complete, so
// that a reader polling for path never sees half of it.
func writeHeapProfile(path string) {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server: memprofile:", err)
		return
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "server: memprofile:", err)
	}
	if err := f.Close(); err == nil {
		_ = os.Rename(tmp, path)
	}
}

// writeStats writes the runtime's memory statistics, after a GC when
// forceGC is set. runtime.ReadMemStats stops the world briefly but
// allocates nothing on the heap and does not start a GC.
func writeStats(impl, path string, seq int64, forceGC bool) {
	if forceGC {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	st := proc.ServerStats{
		Impl: impl, Forced: forceGC, HeapAlloc: m.HeapAlloc, HeapInuse: m.HeapInuse, HeapSys: m.HeapSys,
		StackInuse: m.StackInuse, Sys: m.Sys, HeapReleased: m.HeapReleased, GCSys: m.GCSys,
		MSpanInuse: m.MSpanInuse, OtherSys: m.OtherSys, NumGoroutine: runtime.NumGoroutine(), NumGC: m.NumGC, Seq: seq,
	}
	samples := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"}, {Name: "/gc/heap/goal:bytes"}, {Name: "/gc/heap/allocs:bytes"},
		{Name: "/gc/heap/allocs:objects"}, {Name: "/memory/classes/heap/free:bytes"}, {Name: "/memory/classes/heap/unused:bytes"},
	}
	metrics.Read(samples)
	u := func(i int) uint64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return samples[i].Value.Uint64()
	}
	st.HeapLive, st.HeapGoal, st.TotalAlloc, st.TotalAllocs, st.HeapFree, st.HeapUnused = u(0), u(1), u(2), u(3), u(4), u(5)
	b, _ := json.Marshal(st)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err == nil {
		_ = os.Rename(tmp, path)
	}
}
