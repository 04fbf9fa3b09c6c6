package cloudhypervisor

import (
	"os"
	"testing"
	"time"

	"github.com/cofferhq/coffer/vmm/qemu"
	"github.com/stretchr/testify/require"
)

// TestQEMUCleanupKillsCloudHypervisor checks the claim the shim relies on:
// qemu.Cleanup(StateDir), run for a stale state directory, finds a
// cloud-hypervisor by its environment tag, kills it and removes its sockets.
func TestQEMUCleanupKillsCloudHypervisor(t *testing.T) {
	h, cfg := fakeVM(t, "deaf")
	require.NoError(t, h.Start(testCtx(t, 10*time.Second)))
	require.NoError(t, qemu.Cleanup(cfg.StateDir))
	select {
	case <-h.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("cloud-hypervisor still running after qemu.Cleanup")
	}
	_, err := os.Stat(cfg.APISocketPath())
	require.True(t, os.IsNotExist(err), "qemu.Cleanup removes the api socket")
}
