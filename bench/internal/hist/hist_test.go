package hist

import (
	"math"
	"testing"
	"time"
)

func TestBucketsMonotonic(t *testing.T) {
	prev := -1
	for v := int64(0); v < 1<<22; v += 1 + v/97 {
		i := index(v)
		if i < prev {
			t.Fatalf("index(%d)=%d < %d", v, i, prev)
		}
		if lower(i) > v || lower(i+1) <= v {
			t.Fatalf("v=%d bucket %d [%d,%d)", v, i, lower(i), lower(i+1))
		}
		prev = i
	}
}

func TestQuantile(t *testing.T) {
	var h H
	for i := 1; i <= 100000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, q := range []float64{0.5, 0.99, 0.999} {
		got := float64(h.Quantile(q))
		want := q * 100000 * float64(time.Microsecond)
		if math.Abs(got-want)/want > 0.04 {
			t.Errorf("q%.3f = %v want ~%v", q, time.Duration(got), time.Duration(want))
		}
	}
}
