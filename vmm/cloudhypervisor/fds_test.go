package cloudhypervisor

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/vmm/vmproc/vmproctest"
)

// newTapInNetns creates a fresh network namespace and, inside it, a tap
// named name opened the way vmm/tapnet opens a pod's tap (IFF_TAP |
// IFF_NO_PI | IFF_VNET_HDR, non-blocking). It returns the tap's queue, a
// path that opens the namespace and the namespace's inode. Needs root;
// skips otherwise. Cleanup closes both, which removes the tap and the
// namespace.
func newTapInNetns(t *testing.T, name string) (tap *os.File, nsPath string, nsIno uint64) {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("this machine has no tun driver: %v", err)
	}
	ns, nsPath, nsIno := vmproctest.NewNetNS(t)
	err := vmproctest.InNetNS(ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err == nil {
			ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
			err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		}
		if err == nil {
			err = unix.SetNonblock(fd, true)
		}
		if err != nil {
			unix.Close(fd)
			return err
		}
		tap = os.NewFile(uintptr(fd), "/dev/net/tun")
		return nil
	})
	require.NoError(t, err, "create a tap in a new network namespace")
	t.Cleanup(func() { tap.Close() })
	return tap, nsPath, nsIno
}
