package integration

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/integration/harness"
)

// BenchmarkCRIPodStart measures, through crictl against containerd's CRI
// plugin with the cc runtime handler, the time from `crictl runp` to the
// pod's first container running and to all of them running, for pods of
// one and three containers, and the host memory of the pod's VM (QEMU
// RSS) once they run. Figures, not limits: `make bench` prints them.
func BenchmarkCRIPodStart(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("containers=%d", n), func(b *testing.B) {
			e := newCRIEnv(b, "")
			// The first pod creates the CNI bridge the image is pulled over.
			warm, _ := e.runPod("warm", allowAllPod(b))
			e.pull()
			e.crictl("stopp", warm)
			e.crictl("rmp", warm)

			var first, all []time.Duration
			var rss []float64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				pod, podCfg := e.runPod(fmt.Sprintf("bench%d", i), allowAllPod(b))
				for c := 0; c < n; c++ {
					e.startContainer(pod, podCfg, fmt.Sprintf("c%d", c), nil, "sleep", "1000")
					if c == 0 {
						first = append(first, time.Since(start))
					}
				}
				all = append(all, time.Since(start))
				b.StopTimer()
				if r, err := qemuRSSMiB(pod); err == nil {
					rss = append(rss, r)
				} else {
					b.Logf("QEMU RSS: %v", err)
				}
				e.crictl("stopp", pod)
				e.crictl("rmp", pod)
				b.StartTimer()
			}
			b.ReportMetric(median(first).Seconds()*1000, "ms-to-first-running")
			b.ReportMetric(median(all).Seconds()*1000, "ms-to-all-running")
			if len(rss) > 0 {
				sort.Float64s(rss)
				b.ReportMetric(rss[len(rss)/2], "qemu-rss-MiB")
			}
		})
	}
}

// median returns the middle of ds (0 when empty).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// qemuRSSMiB is the resident memory of the QEMU process of the pod.
func qemuRSSMiB(pod string) (float64, error) {
	procs, err := harness.ListProcs()
	if err != nil {
		return 0, err
	}
	for _, p := range procs {
		if !p.IsQEMU() || !p.Mentions(pod) {
			continue
		}
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.PID))
		if err != nil {
			return 0, err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				return kb / 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no QEMU process mentions pod %s", pod)
}
