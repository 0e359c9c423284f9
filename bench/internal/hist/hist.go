// Package hist is a small log-linear latency histogram: every power of two
// is split into 32 linear sub-buckets, so a quantile is exact to about 3 %,
// recording is an index computation and an increment, and histograms merge
// by addition.
package hist

import (
	"math/bits"
	"time"
)

const subBits = 5
const sub = 1 << subBits

// H records durations from 1 ns to about 2^40 ns (18 min).
type H struct {
	counts [41 * sub]uint64
	n      uint64
	max    int64
}

func index(v int64) int {
	if v < sub {
		if v < 0 {
			v = 0
		}
		return int(v)
	}
	e := bits.Len64(uint64(v)) - subBits // >= 1
	i := e*sub + int((uint64(v)>>(e-1))&(sub-1))
	if i >= len(H{}.counts) {
		i = len(H{}.counts) - 1
	}
	return i
}

// lower returns the smallest value that falls into bucket i.
func lower(i int) int64 {
	if i < sub {
		return int64(i)
	}
	e := i / sub
	m := int64(i % sub)
	return (sub + m) << (e - 1)
}

// Record adds one observation.
func (h *H) Record(d time.Duration) {
	v := int64(d)
	h.counts[index(v)]++
	h.n++
	if v > h.max {
		h.max = v
	}
}

// Merge adds o's observations to h.
func (h *H) Merge(o *H) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// Count is the number of observations.
func (h *H) Count() uint64 { return h.n }

// Max is the largest observation.
func (h *H) Max() time.Duration { return time.Duration(h.max) }

// Quantile returns the q-quantile (0 < q <= 1), as the midpoint of its bucket.
func (h *H) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := lower(i), lower(i+1)
			mid := (lo + hi) / 2
			if mid > h.max {
				mid = h.max
			}
			return time.Duration(mid)
		}
	}
	return time.Duration(h.max)
}
