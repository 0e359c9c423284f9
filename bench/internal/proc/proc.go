// Package proc reads what the harness measures about processes and the
// machine from /proc: resident memory, CPU time, machine-wide CPU use.
package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ClockTick is the kernel's USER_HZ, the unit of the CPU times in
// /proc/PID/stat and /proc/stat. It is 100 on every Linux configuration Go
// supports.
const ClockTick = 100

// RSS returns the VmRSS of pid in bytes.
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// CPU returns the user+system CPU time pid has used so far.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat for pid %d", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')' field index 0 is state (field 3 of proc(5)); utime and
	// stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("short stat for pid %d", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad stat for pid %d", pid)
	}
	return time.Duration(ut+st) * time.Second / ClockTick, nil
}

// MachineCPU is a reading of the aggregate line of /proc/stat.
type MachineCPU struct {
	Busy, Total time.Duration // summed over all CPUs
}

// ReadMachineCPU reads /proc/stat.
func ReadMachineCPU() (MachineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return MachineCPU{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return MachineCPU{}, fmt.Errorf("unexpected /proc/stat")
	}
	var total, idle int64
	for i, s := range f[1:] {
		if i >= 8 { // guest and guest_nice are already in user and nice
			break
		}
		v, _ := strconv.ParseInt(s, 10, 64)
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	tick := time.Second / ClockTick
	return MachineCPU{Busy: time.Duration(total-idle) * tick, Total: time.Duration(total) * tick}, nil
}

// LoadAvg returns the 1-minute load average.
func LoadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// RaiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and returns
// the new soft limit.
func RaiseNoFile() uint64 {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &r)
		_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &r)
	}
	return uint64(r.Cur) // int64 on FreeBSD and DragonFly
}

// ServerStats is what a bench server reports about its Go runtime: on
// SIGUSR1 after a forced GC (Forced, so HeapAlloc is the live heap), on
// SIGUSR2 as it stands, without a GC (the fields from runtime/metrics then
// say what the last GC found live and how much has been allocated since).
type ServerStats struct {
	Impl         string `json:"impl"`
	Forced       bool   `json:"forced_gc"`
	HeapAlloc    uint64 `json:"heap_alloc"`
	HeapInuse    uint64 `json:"heap_inuse"`
	HeapSys      uint64 `json:"heap_sys"`
	StackInuse   uint64 `json:"stack_inuse"`
	Sys          uint64 `json:"sys"`
	HeapReleased uint64 `json:"heap_released"`
	GCSys        uint64 `json:"gc_sys"`
	MSpanInuse   uint64 `json:"mspan_inuse"`
	OtherSys     uint64 `json:"other_sys"`
	NumGoroutine int    `json:"goroutines"`
	NumGC        uint32 `json:"num_gc"`
	Seq          int64  `json:"seq"`

	// From runtime/metrics.
	HeapLive    uint64 `json:"heap_live"`    // /gc/heap/live:bytes: live heap as the last GC marked it
	HeapGoal    uint64 `json:"heap_goal"`    // /gc/heap/goal:bytes
	TotalAlloc  uint64 `json:"total_alloc"`  // /gc/heap/allocs:bytes: every byte ever allocated
	TotalAllocs uint64 `json:"total_allocs"` // /gc/heap/allocs:objects
	HeapFree    uint64 `json:"heap_free"`    // /memory/classes/heap/free:bytes: free, still resident
	HeapUnused  uint64 `json:"heap_unused"`  // /memory/classes/heap/unused:bytes: in spans, unallocated
}
