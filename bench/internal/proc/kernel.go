package proc

import (
	"os"
	"strconv"
	"strings"
)

// MemInfo returns /proc/meminfo as bytes by field name (MemFree, Slab,
// SUnreclaim, KernelStack, PageTables, ...).
func MemInfo() (map[string]int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == "kB" {
			n <<= 10
		}
		m[k] = n
	}
	return m, nil
}

// SockStat is the TCP line of /proc/net/sockstat.
type SockStat struct {
	InUse, Orphan, TimeWait, Alloc int64
	// MemPages is the memory the TCP stack charges to socket buffers, in
	// pages (net.ipv4.tcp_mem's unit).
	MemPages int64
}

// ReadSockStat reads the TCP line of /proc/net/sockstat.
func ReadSockStat() (SockStat, error) {
	var s SockStat
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "TCP:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			v, _ := strconv.ParseInt(f[i+1], 10, 64)
			switch f[i] {
			case "inuse":
				s.InUse = v
			case "orphan":
				s.Orphan = v
			case "tw":
				s.TimeWait = v
			case "alloc":
				s.Alloc = v
			case "mem":
				s.MemPages = v
			}
		}
	}
	return s, nil
}

// SlabCache is one line of /proc/slabinfo.
type SlabCache struct {
	Active, Total int64 // objects
	ObjSize       int64 // bytes
	Slabs         int64
	PagesPerSlab  int64
}

// ActiveBytes is the memory held by the cache's allocated objects.
func (c SlabCache) ActiveBytes() int64 { return c.Active * c.ObjSize }

// SlabInfo reads /proc/slabinfo (root only) by cache name.
func SlabInfo() (map[string]SlabCache, error) {
	b, err := os.ReadFile("/proc/slabinfo")
	if err != nil {
		return nil, err
	}
	return parseSlabInfo(string(b)), nil
}

func parseSlabInfo(s string) map[string]SlabCache {
	m := map[string]SlabCache{}
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "slabinfo") || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		// name active num objsize objperslab pagesperslab : tunables a b c : slabdata active_slabs num_slabs shared
		if len(f) < 16 {
			continue
		}
		n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
		m[f[0]] = SlabCache{Active: n(1), Total: n(2), ObjSize: n(3), PagesPerSlab: n(5), Slabs: n(14)}
	}
	return m
}

// ConntrackCount returns the number of connection-tracking entries, or -1
// when conntrack is not loaded.
func ConntrackCount() int64 {
	b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
	if err != nil {
		return -1
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1
	}
	return v
}
