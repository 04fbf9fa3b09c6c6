package sysinit

import (
	"net"
	"os"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNewNetns runs f on a locked OS thread switched into a fresh network
// namespace, then switches back and deletes the namespace with the thread.
func inNewNetns(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Errorf("get current netns: %v", err)
			return
		}
		defer orig.Close()
		ns, err := netns.New() // switches this thread
		if err != nil {
			t.Errorf("create netns: %v", err)
			return
		}
		defer ns.Close()
		defer func() {
			// Only a thread back in its own namespace may run other
			// goroutines; otherwise it stays locked and dies with this one.
			if err := netns.Set(orig); err == nil {
				runtime.UnlockOSThread()
			}
		}()
		f()
	}()
	<-done
}

// TestConfigureLinkStatic applies a full NetConfig to a veth link in a
// fresh netns: the MAC is taken, the MTU, both addresses, the on-link and
// gatewayed routes and the default route are there.
func TestConfigureLinkStatic(t *testing.T) {
	inNewNetns(t, func() {
		require.NoError(t, bringUpLoopback())
		// A veth pair: this kernel may lack the dummy driver.
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Errorf("add veth link: %v", err)
			return
		}
		n, err := ParseNetConfig("192.168.7.9/24,192.168.7.1,mac=0a:58:c0:a8:07:09,mtu=1400," +
			"addr=fd00:7::9/64,route=169.254.1.1/32,route=10.96.0.0/12@169.254.1.1")
		require.NoError(t, err)
		first, err := netlink.LinkByName("eth0")
		require.NoError(t, err)
		link, err := configureLink(first, n)
		require.NoError(t, err)
		require.Equal(t, "eth0", link.Attrs().Name)

		l, err := netlink.LinkByName("eth0")
		require.NoError(t, err)
		require.Equal(t, "0a:58:c0:a8:07:09", l.Attrs().HardwareAddr.String())
		require.Equal(t, 1400, l.Attrs().MTU)
		require.NotZero(t, l.Attrs().Flags&net.FlagUp)

		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		require.NoError(t, err)
		var got []string
		for _, a := range addrs {
			if a.Scope == unix.RT_SCOPE_UNIVERSE {
				got = append(got, a.IPNet.String())
			}
		}
		require.ElementsMatch(t, []string{"192.168.7.9/24", "fd00:7::9/64"}, got)

		routes, err := netlink.RouteList(l, netlink.FAMILY_V4)
		require.NoError(t, err)
		var rs []string
		for _, r := range routes {
			if r.Protocol == unix.RTPROT_KERNEL {
				continue
			}
			dst := "0.0.0.0/0"
			if r.Dst != nil {
				dst = r.Dst.String()
			}
			rs = append(rs, dst+" via "+r.Gw.String())
		}
		require.ElementsMatch(t, []string{
			"169.254.1.1/32 via <nil>",
			"10.96.0.0/12 via 169.254.1.1",
			"0.0.0.0/0 via 192.168.7.1",
		}, rs)
	})
}

// TestConfigureLinkPicksByMAC checks that with two links the one already
// carrying the configured MAC is chosen and the other is left alone.
func TestConfigureLinkPicksByMAC(t *testing.T) {
	inNewNetns(t, func() {
		mac := mustMAC("0a:58:0a:58:00:05")
		veth := &netlink.Veth{
			LinkAttrs:        netlink.LinkAttrs{Name: "eth0", HardwareAddr: mustMAC("0a:58:0a:58:00:01")},
			PeerName:         "eth1",
			PeerHardwareAddr: mac,
		}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Errorf("add veth pair eth0/eth1: %v", err)
			return
		}
		first, err := netlink.LinkByName("eth0")
		require.NoError(t, err)
		link, err := configureLink(first, &NetConfig{Address: mustPrefix("10.88.0.5/16"), MAC: mac})
		require.NoError(t, err)
		require.Equal(t, "eth1", link.Attrs().Name)
		eth0, err := netlink.LinkByName("eth0")
		require.NoError(t, err)
		require.Equal(t, "0a:58:0a:58:00:01", eth0.Attrs().HardwareAddr.String(), "eth0 keeps its MAC")
		addrs, err := netlink.AddrList(eth0, netlink.FAMILY_V4)
		require.NoError(t, err)
		require.Empty(t, addrs, "eth0 gets no address")
	})
}
