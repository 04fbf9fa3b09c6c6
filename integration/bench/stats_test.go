package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMedian(t *testing.T) {
	_, ok := Median(nil)
	require.False(t, ok)
	in := []time.Duration{5 * time.Second, 1 * time.Second, 3 * time.Second}
	m, ok := Median(in)
	require.True(t, ok)
	require.Equal(t, 3*time.Second, m)
	require.Equal(t, 5*time.Second, in[0], "Median must not reorder its input")
	m, _ = Median([]time.Duration{4 * time.Second, 1 * time.Second, 2 * time.Second, 10 * time.Second})
	require.Equal(t, 3*time.Second, m, "even count: mean of the middle two")

	_, ok = MedianBytes(nil)
	require.False(t, ok)
	b, _ := MedianBytes([]uint64{30, 10, 20, 1000})
	require.Equal(t, uint64(25), b)
}

func TestFormat(t *testing.T) {
	require.Equal(t, "3.41 s", secs(3414*time.Millisecond))
	require.Equal(t, "17.5 MiB", mib(17*(1<<20)+(1<<19)))
}
