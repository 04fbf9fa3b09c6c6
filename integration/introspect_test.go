package integration

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/stretchr/testify/require"
)

// taskPID returns the PID column of `ctr task ls` for id (the init's PID
// in the guest).
func (e *env) taskPID(id string) uint32 {
	e.t.Helper()
	out, err := e.ctd.Ctr(e.ctx, "task", "ls")
	require.NoError(e.t, err)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == id {
			pid, err := strconv.ParseUint(f[1], 10, 32)
			require.NoError(e.t, err, "PID column of `ctr task ls`: %q", line)
			return uint32(pid)
		}
	}
	e.t.Fatalf("task %s not in `ctr task ls`:\n%s", id, out)
	return 0
}

// taskPs returns the PIDs `ctr task ps id` lists (its "PID INFO" table).
func (e *env) taskPs(id string) ([]uint32, error) {
	out, err := e.ctd.Ctr(e.ctx, "task", "ps", id)
	if err != nil {
		return nil, err
	}
	var pids []uint32
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) == 0 {
			continue // header "PID INFO"
		}
		pid, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return nil, err
		}
		pids = append(pids, uint32(pid))
	}
	return pids, nil
}

// metricsLimit is the container memory limit of TestTaskPsAndMetrics,
// 64 MiB, which `ctr task metrics` must report back from the guest's
// cgroup.
const metricsLimit = 64 << 20

// TestTaskPsAndMetrics: `ctr task ps` lists the container's processes in
// the guest (init, its children and an exec'd process), and `ctr task
// metrics` reports the guest's cgroup v2 statistics for the container:
// the processes counted, memory in use, and the limit that was set.
func TestTaskPsAndMetrics(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	id := newID("ps")
	_, err := e.run([]string{"-d", "--memory-limit", strconv.Itoa(metricsLimit)}, ref, id,
		"sh", "-c", "sleep 1000 & sleep 1000 & wait")
	require.NoError(t, err)
	e.waitTaskStatus(id, "RUNNING")
	t.Cleanup(func() {
		// Best effort; the containerd cleanup removes whatever is left.
		_, _ = e.ctd.Ctr(e.ctx, "task", "rm", "-f", id)
		_, _ = e.ctd.Ctr(e.ctx, "container", "rm", id)
	})
	_, err = e.ctd.Ctr(e.ctx, "task", "exec", "--detach", "--exec-id", "x1", id, "sleep", "1001")
	require.NoError(t, err)
	initPID := e.taskPID(id)

	// The shell forks its two sleeps asynchronously: wait until all four
	// processes (sh, 2 x sleep, the exec) are listed.
	var pids []uint32
	require.Eventually(t, func() bool {
		pids, err = e.taskPs(id)
		return err == nil && len(pids) == 4
	}, time.Minute, 200*time.Millisecond, "`ctr task ps %s` never listed 4 processes; last: %v (error %v)", id, pids, err)
	require.Contains(t, pids, initPID, "`ctr task ps` must list the init PID that `ctr task ls` shows")
	require.Len(t, slices.Compact(slices.Sorted(slices.Values(pids))), 4, "PIDs must be distinct: %v", pids)

	out, err := e.ctd.Ctr(e.ctx, "task", "metrics", "--format", "json", id)
	require.NoError(t, err)
	var m stats.Metrics
	require.NoError(t, json.Unmarshal([]byte(out), &m), "`ctr task metrics --format json` must print cgroup v2 metrics (io.containerd.cgroups.v2.Metrics):\n%s", out)
	require.NotNil(t, m.Pids, "no pids metrics:\n%s", out)
	require.EqualValues(t, 4, m.Pids.Current, "pids.current must count the 4 processes `ctr task ps` listed:\n%s", out)
	require.NotNil(t, m.Memory, "no memory metrics:\n%s", out)
	require.Greater(t, m.Memory.Usage, uint64(0), "memory.current of a running container:\n%s", out)
	require.EqualValues(t, metricsLimit, m.Memory.UsageLimit, "memory.max must be the --memory-limit given to ctr run:\n%s", out)
	require.NotNil(t, m.CPU, "no cpu metrics:\n%s", out)
	require.Greater(t, m.CPU.UsageUsec, uint64(0), "cpu.stat usage_usec of a container that ran sh:\n%s", out)
}
