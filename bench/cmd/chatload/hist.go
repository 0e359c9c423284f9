package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// latHist is a log-linear latency histogram that workers fill from many
// goroutines at once (atomic counters) and ship to the orchestrator as
// JSON: every power of two of nanoseconds is split into 32 linear
// sub-buckets, so a quantile is exact to about 3 %.
type latHist struct {
	counts [41 * 32]atomic.Uint64
	max    atomic.Int64
}

func latIndex(v int64) int {
	if v < 32 {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - 5
	i := e*32 + int((uint64(v)>>(e-1))&31)
	return min(i, 41*32-1)
}

// latLower is the smallest value of bucket i.
func latLower(i int) int64 {
	if i < 32 {
		return int64(i)
	}
	e := i / 32
	return (32 + int64(i%32)) << (e - 1)
}

func (h *latHist) record(d time.Duration) {
	h.counts[latIndex(int64(d))].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// histData is a histogram as it travels: the non-empty buckets.
type histData struct {
	Buckets map[int]uint64 `json:"buckets"`
	Max     int64          `json:"max_ns"`
}

func (h *latHist) data() histData {
	d := histData{Buckets: map[int]uint64{}, Max: h.max.Load()}
	for i := range h.counts {
		if c := h.counts[i].Load(); c > 0 {
			d.Buckets[i] = c
		}
	}
	return d
}

func (d *histData) merge(o histData) {
	if d.Buckets == nil {
		d.Buckets = map[int]uint64{}
	}
	for i, c := range o.Buckets {
		d.Buckets[i] += c
	}
	d.Max = max(d.Max, o.Max)
}

func (d histData) count() uint64 {
	var n uint64
	for _, c := range d.Buckets {
		n += c
	}
	return n
}

// quantile returns the q-quantile as the middle of its bucket.
func (d histData) quantile(q float64) time.Duration {
	n := d.count()
	if n == 0 {
		return 0
	}
	rank := max(uint64(q*float64(n)+0.5), 1)
	var seen uint64
	for i := range 41 * 32 {
		seen += d.Buckets[i]
		if seen >= rank {
			mid := (latLower(i) + latLower(i+1)) / 2
			return time.Duration(min(mid, d.Max))
		}
	}
	return time.Duration(d.Max)
}
