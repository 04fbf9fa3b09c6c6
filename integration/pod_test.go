package integration

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/integration/harness"
)

// TestTwoContainersShareOneVM: containers carrying the same CRI sandbox-id
// annotation share one shim and one VM; deleting one leaves the other
// running, and deleting the last stops the VM.
func TestTwoContainersShareOneVM(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	podID := newID("pod")
	pod := "--annotation=io.kubernetes.cri.sandbox-id=" + podID
	first, second := newID("first"), newID("second")
	for _, id := range []string{first, second} {
		_, err := e.run([]string{"-d", pod}, ref, id, "sleep", "1000")
		require.NoError(t, err)
		e.waitTaskStatus(id, "RUNNING")
	}
	podVMs := func() []harness.Proc {
		procs, err := harness.ListProcs()
		require.NoError(t, err)
		var vms []harness.Proc
		for _, p := range procs {
			if p.IsQEMU() && p.Mentions("coffer-"+podID) {
				vms = append(vms, p)
			}
		}
		return vms
	}
	vms := podVMs()
	require.Len(t, vms, 1, "both containers must run in one VM named after the pod")
	fp := e.ctd.Observe(t, first)
	require.Len(t, fp.QEMU, 1, "%s", fp)
	require.Equal(t, vms[0].PID, fp.QEMU[0].PID, "the first container's shim runs the pod's VM")

	_, err := e.ctd.Ctr(e.ctx, "task", "kill", "-s", "SIGKILL", first)
	require.NoError(t, err)
	e.waitTaskStatus(first, "STOPPED")
	_, err = e.ctd.Ctr(e.ctx, "task", "rm", first)
	require.NoError(t, err)
	_, err = e.ctd.Ctr(e.ctx, "container", "rm", first)
	require.NoError(t, err)

	out, err := e.ctd.Ctr(e.ctx, "task", "exec", "--exec-id", "after", second, "echo", "still-here")
	require.NoError(t, err, "the second container must survive the first one's removal")
	require.Equal(t, "still-here\n", out)
	require.True(t, vms[0].Alive(), "the pod's VM must keep running")

	_, err = e.ctd.Ctr(e.ctx, "task", "kill", "-s", "SIGKILL", second)
	require.NoError(t, err)
	e.waitTaskStatus(second, "STOPPED")
	_, err = e.ctd.Ctr(e.ctx, "task", "rm", second)
	require.NoError(t, err)
	_, err = e.ctd.Ctr(e.ctx, "container", "rm", second)
	require.NoError(t, err)
	fp.RequireGone(t, goneWithin)
	require.Empty(t, podVMs(), "deleting the pod's last container must stop its VM")
}
