package sysinit

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// virtioDevices writes a fake /sys/bus/virtio/devices with one device
// per ID and returns its path.
func virtioDevices(t *testing.T, ids ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "devices")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for i, id := range ids {
		d := filepath.Join(dir, "virtio"+string(rune('0'+i)))
		require.NoError(t, os.MkdirAll(d, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(d, "device"), []byte(id+"\n"), 0o644))
	}
	return dir
}

func TestLacksNetworkDevice(t *testing.T) {
	// virtio-serial (console, 0x0003) only: network.mode "none".
	require.True(t, lacksNetworkDevice(virtioDevices(t, "0x0003")))
	// vsock (0x0013) and an entropy source (0x0004): Cloud Hypervisor without a tap.
	require.True(t, lacksNetworkDevice(virtioDevices(t, "0x0013", "0x0004")))
	// A network card among them: QEMU user networking or a pod tap.
	require.False(t, lacksNetworkDevice(virtioDevices(t, "0x0003", "0x0001")))
	// No virtio devices at all means the virtio modules failed, not "no network".
	require.False(t, lacksNetworkDevice(virtioDevices(t)))
	require.False(t, lacksNetworkDevice(filepath.Join(t.TempDir(), "missing")))
	// A device whose ID cannot be read: do not guess.
	dir := virtioDevices(t, "0x0003")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "virtio9"), 0o755))
	require.False(t, lacksNetworkDevice(dir))
}
