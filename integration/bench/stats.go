package bench

import (
	"fmt"
	"slices"
	"time"
)

// Median returns the median of ds (the mean of the two middle values for
// an even count) and false when ds is empty. ds is not modified.
func Median(ds []time.Duration) (time.Duration, bool) {
	if len(ds) == 0 {
		return 0, false
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2], true
	}
	return (s[n/2-1] + s[n/2]) / 2, true
}

// MedianBytes is Median for byte counts.
func MedianBytes(xs []uint64) (uint64, bool) {
	if len(xs) == 0 {
		return 0, false
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2], true
	}
	return (s[n/2-1] + s[n/2]) / 2, true
}

// secs formats d as seconds with two decimals ("3.41 s").
func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// mib formats n bytes as MiB with one decimal ("17.4 MiB").
func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
