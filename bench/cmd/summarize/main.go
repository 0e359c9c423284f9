// Command summarize prints one compact table from the raw results of
// benchall (results.json) and million (million.json), for the end of a run
// on a machine that has nothing but the bench binaries (bench/device).
//
//	summarize tail.json scaling.json million-wsloop.json
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/wsloop/wsloop/bench/internal/load"
)

// benchRun mirrors the fields of benchall's run that the summary needs.
type benchRun struct {
	Impl   string       `json:"impl"`
	Case   string       `json:"case"`
	Rep    int          `json:"rep"`
	Result *load.Result `json:"result"`
	Err    string       `json:"error"`
}

// millionFile mirrors the fields of million's output that the summary needs.
type millionFile struct {
	Results []struct {
		Impl       string   `json:"impl"`
		Target     int      `json:"target"`
		Connected  int64    `json:"connected"`
		Servers    int      `json:"servers"`
		RampSecs   float64  `json:"ramp_secs"`
		ServerRSS  float64  `json:"server_rss_per_conn"`
		ServerLive float64  `json:"server_live_heap_per_conn"`
		KernelSlab float64  `json:"kernel_slab_objects_per_conn"`
		ClientRSS  float64  `json:"client_rss_per_conn"`
		SampleSent int64    `json:"sample_sent"`
		SampleOK   int64    `json:"sample_ok"`
		Errors     []string `json:"errors"`
	} `json:"results"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: summarize FILE.json ...")
		os.Exit(2)
	}
	for _, f := range os.Args[1:] {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Printf("%s: %v\n", f, err)
			continue
		}
		if err := summarize(os.Stdout, f, b); err != nil {
			fmt.Printf("%s: %v\n", f, err)
		}
	}
}

func summarize(w io.Writer, name string, b []byte) error {
	trimmed := strings.TrimSpace(string(b))
	if strings.HasPrefix(trimmed, "[") {
		var runs []benchRun
		if err := json.Unmarshal(b, &runs); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\n%-24s %-18s %9s %8s %8s %8s %8s %s\n", name, "case", "impl", "msg/s", "p50 ms", "p99 ms", "p99.9", "CPU/1M", "problems")
		for _, r := range runs {
			if r.Result == nil {
				fmt.Fprintf(w, "%-24s %-18s %s\n", r.Case, r.Impl, r.Err)
				continue
			}
			x := r.Result
			if x.Scenario == "idle" {
				fmt.Fprintf(w, "%-24s %-18s RSS %.0f B/conn after hold, %.0f after server GC, live %.0f, %.0f conn/s %s\n",
					r.Case, r.Impl, x.RSSPerConn, x.RSSPerConnGC, x.HeapPerConn, x.ConnectRate, strings.Join(x.Errors, "; "))
				continue
			}
			fmt.Fprintf(w, "%-24s %-18s %9.0f %8.2f %8.2f %8.2f %8.2f %s\n", r.Case, r.Impl, x.MsgsPerSec,
				x.LatP50us/1000, x.LatP99us/1000, x.LatP999us/1000, x.ServerCPUPerM, strings.Join(x.Errors, "; "))
		}
		fmt.Fprintln(w)
		return nil
	}
	var m millionFile
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	fmt.Fprintf(w, "%s\n%-8s %10s %8s %7s %12s %11s %14s %12s %10s %s\n", name, "impl", "connected", "servers", "ramp s", "server B/conn", "live B/conn", "kernel B/pair", "client B/conn", "sample", "problems")
	for _, r := range m.Results {
		fmt.Fprintf(w, "%-8s %10d %8d %7.1f %12.0f %11.0f %14.0f %12.0f %5d/%-5d %s\n", r.Impl, r.Connected, r.Servers, r.RampSecs,
			r.ServerRSS, r.ServerLive, r.KernelSlab, r.ClientRSS, r.SampleOK, r.SampleSent, strings.Join(r.Errors, "; "))
	}
	fmt.Fprintln(w)
	return nil
}
