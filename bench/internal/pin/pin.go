// Package pin restricts the whole process to a set of CPUs, the way
// taskset(1) would, without needing taskset on the machine.
//
// sched_setaffinity applies to one thread, and by the time main runs the Go
// runtime already has several. A thread's mask is inherited by the threads
// it creates and survives execve, so [Apply] sets the mask on the calling
// thread and re-executes the program from it: the new process starts with
// one thread already restricted, every thread the runtime creates inherits
// the mask, and GOMAXPROCS (which the runtime derives from the mask) comes
// out right.
package pin

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// envDone marks a process that has already been re-executed, so that a
// mask the kernel narrowed further (CPUs offline, cgroup limits) cannot
// cause an exec loop.
const envDone = "WSLOOP_BENCH_PINNED"

// Parse reads a CPU list in taskset -c syntax: "0-7", "8-15", "0,2,4-6".
func Parse(list string) (unix.CPUSet, []int, error) {
	var set unix.CPUSet
	var cpus []int
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return set, nil, fmt.Errorf("bad CPU list %q", list)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return set, nil, fmt.Errorf("bad CPU list %q", list)
			}
		}
		for c := a; c <= b; c++ {
			if c < 0 || c >= 1024 {
				return set, nil, fmt.Errorf("CPU %d out of range in %q", c, list)
			}
			if !set.IsSet(c) {
				set.Set(c)
				cpus = append(cpus, c)
			}
		}
	}
	if len(cpus) == 0 {
		return set, nil, fmt.Errorf("empty CPU list %q", list)
	}
	return set, cpus, nil
}

// Apply restricts the process to the CPUs in list. An empty list does
// nothing. When the process is not yet restricted to exactly that set,
// Apply does not return: it re-executes the program with the same
// arguments and environment. It returns an error when the list is invalid
// or the kernel refuses the mask; the caller decides whether to go on
// unpinned.
func Apply(list string) error {
	if list == "" {
		return nil
	}
	want, _, err := Parse(list)
	if err != nil {
		return err
	}
	var have unix.CPUSet
	if err := unix.SchedGetaffinity(0, &have); err == nil && have == want {
		// Children of this process (a server started by a pinned
		// orchestrator) must be free to pin themselves elsewhere.
		_ = os.Unsetenv(envDone)
		return nil
	}
	if os.Getenv(envDone) != "" {
		return fmt.Errorf("pinned to %s once already and the mask still differs", list)
	}
	runtime.LockOSThread()
	if err := unix.SchedSetaffinity(0, &want); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("sched_setaffinity %s: %w", list, err)
	}
	exe, err := os.Executable()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	err = syscall.Exec(exe, os.Args, append(os.Environ(), envDone+"=1"))
	runtime.UnlockOSThread()
	return fmt.Errorf("re-exec for CPU pinning: %w", err)
}

// Current returns the CPUs the calling thread may run on, in taskset -c
// syntax, for reports.
func Current() string {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return "?"
	}
	var parts []string
	for c := 0; c < 1024; c++ {
		if !set.IsSet(c) {
			continue
		}
		e := c
		for e+1 < 1024 && set.IsSet(e+1) {
			e++
		}
		if e == c {
			parts = append(parts, strconv.Itoa(c))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", c, e))
		}
		c = e
	}
	return strings.Join(parts, ",")
}
