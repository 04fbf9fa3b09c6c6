package bench

import (
	"archive/tar"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSummariseAttested(t *testing.T) {
	_, ok := SummariseAttested(nil)
	require.False(t, ok)
	s := time.Second
	runs := []*RunSample{
		// ready at 5 s, allowed at 5.5 s, pulled at 7.5 s: 2 s after allowed for 4 MiB.
		{AgentAnswered: 5 * s, Allowed: 5*s + s/2, AllowedAttempt: s / 4, PullDone: 7*s + s/2, PullRPC: 2*s + s/2, PullBytes: 4 << 20, FirstOutput: 9 * s, AgentPeak: 30 << 20, AgentRSS: 20 << 20},
		{AgentAnswered: 4 * s, Allowed: 5 * s, AllowedAttempt: s / 2, PullDone: 6 * s, PullRPC: 2 * s, PullBytes: 4 << 20, FirstOutput: 8 * s, AgentPeak: 32 << 20, AgentRSS: 22 << 20},
		{AgentAnswered: 4 * s, Allowed: 7 * s, AllowedAttempt: s, PullDone: 11 * s, PullRPC: 5 * s, PullBytes: 4 << 20, FirstOutput: 12 * s, AgentPeak: 31 << 20, AgentRSS: 21 << 20},
	}
	f, ok := SummariseAttested(runs)
	require.True(t, ok)
	require.Equal(t, 3, f.N)
	require.Equal(t, [3]time.Duration{s, s / 2, 3 * s}, f.ReadyToAllowed)
	require.Equal(t, [3]time.Duration{s / 2, s / 4, s}, f.Attempt)
	require.Equal(t, [3]time.Duration{2 * s, s, 4 * s}, f.PullAfterAllowed)
	require.Equal(t, [3]float64{2, 1, 4}, f.RateMiBs, "MiB fetched / (pull done - allowed)")
	require.Equal(t, [3]uint64{31 << 20, 30 << 20, 32 << 20}, f.AgentPeak)
	require.Equal(t, uint64(4<<20), f.PullBytes)

	var out strings.Builder
	require.NoError(t, WriteAttested(&out, "title", f))
	require.Contains(t, out.String(), "title (3 runs; median, min, max)")
	require.Contains(t, out.String(), "1.00 s")
	require.Contains(t, out.String(), "31.0 MiB")
}

func TestFillerImage(t *testing.T) {
	_, err := FillerImage(0)
	require.Error(t, err)
	img, err := FillerImage(2)
	require.NoError(t, err)
	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 2, "the filler layer, then busybox")
	mt, err := layers[0].MediaType()
	require.NoError(t, err)
	require.Equal(t, "application/vnd.oci.image.layer.v1.tar", string(mt))
	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var files int
	var bytes int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if h.Typeflag == tar.TypeReg {
			files++
			bytes += h.Size
		}
	}
	require.Equal(t, 2, files)
	require.Equal(t, int64(2<<20), bytes)
	again, err := FillerImage(2)
	require.NoError(t, err)
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	require.Equal(t, d1, d2, "the filler image is reproducible")
}
