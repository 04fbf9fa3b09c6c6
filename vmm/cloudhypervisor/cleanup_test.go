package cloudhypervisor

import (
	"os"
	"testing"
	"time"

	"github.com/cofferhq/coffer/vmm/qemu"
	"github.com/cofferhq/coffer/vmm/vmproc"
	"github.com/stretchr/testify/require"
)

// TestCleanupKillsCloudHypervisor checks the claim the shim relies on:
// vmproc.Cleanup(StateDir), and qemu.Cleanup (which the shim calls for a
// stale state directory whatever the VMM), find a cloud-hypervisor by its
// environment tag, kill it and remove its sockets.
func TestCleanupKillsCloudHypervisor(t *testing.T) {
	for name, cleanup := range map[string]func(string) error{"vmproc": vmproc.Cleanup, "qemu": qemu.Cleanup} {
		t.Run(name, func(t *testing.T) {
			h, cfg := fakeVM(t, "deaf")
			require.NoError(t, h.Start(testCtx(t, 10*time.Second)))
			require.NoError(t, cleanup(cfg.StateDir))
			select {
			case <-h.Exited():
			case <-time.After(5 * time.Second):
				t.Fatalf("cloud-hypervisor still running after %s.Cleanup", name)
			}
			_, err := os.Stat(cfg.APISocketPath())
			require.True(t, os.IsNotExist(err), "%s.Cleanup removes the api socket", name)
		})
	}
}
