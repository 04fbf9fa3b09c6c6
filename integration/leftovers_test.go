package integration

import (
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/integration/harness"
)

// requireHostClean checks what must hold for the whole containerd once
// its only container is gone: nothing mounted under its root or state,
// no socket left in its bundles, and no VM state dir added since before.
func requireHostClean(t *testing.T, e *env, vmDirsBefore []string) {
	t.Helper()
	harness.NoMountsUnder(t, e.ctd.StateDir())
	harness.NoMountsUnder(t, e.ctd.RootDir())
	harness.NoSocketsUnder(t, e.ctd.StateDir())
	var after []string
	require.Eventually(t, func() bool {
		var err error
		after, err = harness.VMStateDirs()
		require.NoError(t, err)
		return len(newEntries(vmDirsBefore, after)) == 0
	}, goneWithin, 200*time.Millisecond, "VM state dirs left behind: %v", newEntries(vmDirsBefore, after))
}

// newEntries returns the entries of after that are not in before.
func newEntries(before, after []string) []string {
	var out []string
	for _, a := range after {
		if !slices.Contains(before, a) {
			out = append(out, a)
		}
	}
	return out
}

func TestNoLeftoversAfterRemove(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	vmDirsBefore, err := harness.VMStateDirs()
	require.NoError(t, err)
	id := newID("rm")
	e.startDetached(ref, id, "sleep", "1000")
	fp := e.ctd.Observe(t, id)
	t.Logf("footprint: %s", fp)
	require.NotEmpty(t, fp.VMDirs, "QEMU's command line names no %s/<name> dir", harness.VMStateRoot)

	_, err = e.ctd.Ctr(e.ctx, "task", "kill", "-s", "SIGKILL", id)
	require.NoError(t, err)
	e.waitTaskStatus(id, "STOPPED")
	_, err = e.ctd.Ctr(e.ctx, "task", "rm", id)
	require.NoError(t, err)
	_, err = e.ctd.Ctr(e.ctx, "container", "rm", id)
	require.NoError(t, err)

	fp.RequireGone(t, goneWithin)
	requireHostClean(t, e, vmDirsBefore)
}

func TestNoLeftoversAfterShimKill(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	vmDirsBefore, err := harness.VMStateDirs()
	require.NoError(t, err)
	id := newID("shimkill")
	e.startDetached(ref, id, "sleep", "1000")
	fp := e.ctd.Observe(t, id)
	t.Logf("footprint: %s", fp)

	require.NoError(t, syscall.Kill(fp.Shim.PID, syscall.SIGKILL), "kill shim %s", fp.Shim)
	// containerd notices the dead shim and runs `containerd-shim-cc-v2
	// delete` for the bundle; by the time `ctr task rm` runs the task may
	// already be gone, which ctr reports as not found.
	if _, err := e.ctd.Ctr(e.ctx, "task", "rm", "-f", id); err != nil {
		require.Contains(t, stderrOf(t, err), "not found", "ctr task rm -f after the shim died: %v", err)
	}
	_, err = e.ctd.Ctr(e.ctx, "container", "rm", id)
	require.NoError(t, err)

	fp.RequireGone(t, goneAfterShimKill)
	requireHostClean(t, e, vmDirsBefore)
}
