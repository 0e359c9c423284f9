// Package stat summarizes repeated measurements: medians, ranges, and
// ratios between implementations measured in the same repetition.
package stat

import (
	"fmt"
	"slices"
)

// Median of v (0 for none).
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Cell formats median (min–max) with format f, or "-" for no values.
func Cell(v []float64, f string) string {
	if len(v) == 0 {
		return "-"
	}
	if len(v) == 1 {
		return fmt.Sprintf(f, v[0])
	}
	return fmt.Sprintf(f+" ("+f+"–"+f+")", Median(v), slices.Min(v), slices.Max(v))
}

// Ratio formats the ratio of the medians of a and b, with the range of the
// ratios of the repetitions both have (a and b are indexed by repetition;
// NaN-free: a repetition missing on either side is skipped).
func Ratio(a, b map[int]float64) string {
	var av, bv, rs []float64
	for rep, x := range a {
		av = append(av, x)
		if y, ok := b[rep]; ok && y != 0 {
			rs = append(rs, x/y)
		}
	}
	for _, y := range b {
		bv = append(bv, y)
	}
	mb := Median(bv)
	if len(av) == 0 || mb == 0 {
		return "-"
	}
	s := fmt.Sprintf("%.2f", Median(av)/mb)
	if len(rs) > 1 {
		s += fmt.Sprintf(" (%.2f–%.2f)", slices.Min(rs), slices.Max(rs))
	}
	return s
}

// Values returns the values of m in no particular order.
func Values(m map[int]float64) []float64 {
	var v []float64
	for _, x := range m {
		v = append(v, x)
	}
	return v
}
