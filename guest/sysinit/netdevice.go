package sysinit

import (
	"os"
	"path/filepath"
	"strings"
)

// sysVirtioDevices lists the VM's virtio devices, one directory each whose
// "device" file holds the virtio device ID.
const sysVirtioDevices = "/sys/bus/virtio/devices"

// virtioNetDeviceID is the virtio device ID of a network card, as sysfs
// prints it.
const virtioNetDeviceID = "0x0001"

// lacksNetworkDevice reports whether dir (sysVirtioDevices) lists virtio
// devices and none of them is a network card: the host started the VM
// without a network (the shim's network.mode "none", where forwards go
// over the agent transport). The agent transport is itself a virtio
// device (virtio-serial or vsock), so an empty or missing list means the
// virtio modules did not load, not that there is no network card; it
// returns false then, and Setup waits for an interface and reports the
// failure as before.
func lacksNetworkDevice(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		return false
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "device"))
		if err != nil || strings.TrimSpace(string(b)) == virtioNetDeviceID {
			return false // unreadable: do not guess
		}
	}
	return true
}
