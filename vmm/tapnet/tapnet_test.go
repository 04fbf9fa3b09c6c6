package tapnet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/guest/sysinit"
)

// vnetHdrLen is the size of struct virtio_net_hdr, the header a tap opened
// with IFF_VNET_HDR puts before every frame by default.
const vnetHdrLen = 10

// testEtherType is IEEE 802's "local experimental" EtherType, which no
// stack on the test links answers.
const testEtherType = 0x88b5

func requireRootAndTun(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces and taps")
	}
	if _, err := os.Stat(TunDevice); err != nil {
		t.Skipf("this machine has no tun driver: %v", err)
	}
}

// onThreadIn runs f on a locked OS thread switched into ns (inNetns).
func onThreadIn(t *testing.T, ns netns.NsHandle, f func()) {
	t.Helper()
	if err := inNetns(ns, func() error { f(); return nil }); err != nil {
		t.Error(err)
	}
}

// newNetns creates a network namespace bind-mounted at a file in a temp
// dir, the way CNI's netns files are made, and returns its path and a
// handle. Cleanup closes the handle, unmounts and removes the file.
func newNetns(t *testing.T) (string, netns.NsHandle) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "netns")
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	var mountErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			mountErr = err
			return
		}
		defer orig.Close()
		ns, err := netns.New() // switches this thread
		if err != nil {
			mountErr = err
			return
		}
		ns.Close()
		mountErr = unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
	require.NoError(t, mountErr, "create and bind-mount a netns")
	ns, err := netns.GetFromPath(path)
	require.NoError(t, err)
	t.Cleanup(func() {
		ns.Close()
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount netns %s: %v", path, err)
		}
	})
	return path, ns
}

// podNetwork is what a CNI bridge plugin leaves behind: a pod netns with
// eth0 (addresses, routes, MTU) whose veth peer sits in a "host" netns.
type podNetwork struct {
	podPath  string
	pod      netns.NsHandle
	host     netns.NsHandle
	podH     *netlink.Handle
	hostH    *netlink.Handle
	peerName string
}

func newPodNetwork(t *testing.T) *podNetwork {
	t.Helper()
	p := &podNetwork{peerName: "hveth0"}
	p.podPath, p.pod = newNetns(t)
	_, p.host = newNetns(t)
	var err error
	p.podH, err = netlink.NewHandleAt(p.pod)
	require.NoError(t, err)
	t.Cleanup(p.podH.Close)
	p.hostH, err = netlink.NewHandleAt(p.host)
	require.NoError(t, err)
	t.Cleanup(p.hostH.Close)

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "eth0", MTU: 1450},
		PeerName:      p.peerName,
		PeerNamespace: netlink.NsFd(int(p.host)),
	}
	require.NoError(t, p.podH.LinkAdd(veth))
	eth0, err := p.podH.LinkByName("eth0")
	require.NoError(t, err)
	require.NoError(t, p.podH.AddrAdd(eth0, mustAddr("10.99.0.2/24")))
	require.NoError(t, p.podH.AddrAdd(eth0, &netlink.Addr{IPNet: mustAddr("fd00:99::2/64").IPNet, Flags: unix.IFA_F_NODAD}))
	require.NoError(t, p.podH.LinkSetUp(eth0))
	require.NoError(t, p.podH.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.99.0.1")}))
	require.NoError(t, p.podH.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: mustAddr("10.96.0.0/12").IPNet, Gw: net.ParseIP("10.99.0.1")}))

	peer, err := p.hostH.LinkByName(p.peerName)
	require.NoError(t, err)
	require.NoError(t, p.hostH.LinkSetMTU(peer, 1450))
	require.NoError(t, p.hostH.LinkSetUp(peer))
	return p
}

func mustAddr(s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

// ingressFilters returns the ingress qdisc's filters on link name in h's
// namespace, or nil and false when link has no ingress qdisc.
func ingressFilters(t *testing.T, h *netlink.Handle, name string) ([]netlink.Filter, bool) {
	t.Helper()
	l, err := h.LinkByName(name)
	require.NoError(t, err)
	qdiscs, err := h.QdiscList(l)
	require.NoError(t, err)
	for _, q := range qdiscs {
		if q.Type() == "ingress" {
			filters, err := h.FilterList(l, ingressHandle)
			require.NoError(t, err)
			return filters, true
		}
	}
	return nil, false
}

// redirectTarget returns the ifindex the single u32 mirred filter
// redirects to.
func redirectTarget(t *testing.T, filters []netlink.Filter) int {
	t.Helper()
	require.Len(t, filters, 1)
	u32, ok := filters[0].(*netlink.U32)
	require.True(t, ok, "filter is %T, want *netlink.U32", filters[0])
	require.Len(t, u32.Actions, 1)
	m, ok := u32.Actions[0].(*netlink.MirredAction)
	require.True(t, ok, "action is %T, want *netlink.MirredAction", u32.Actions[0])
	require.Equal(t, netlink.TCA_EGRESS_REDIR, m.MirredAction)
	return m.Ifindex
}

func TestSetupAndTeardown(t *testing.T) {
	requireRootAndTun(t)
	p := newPodNetwork(t)
	eth0, err := p.podH.LinkByName("eth0")
	require.NoError(t, err)

	ep, err := Setup(context.Background(), Options{NetNSPath: p.podPath})
	require.NoError(t, err)
	t.Cleanup(func() { ep.Close() })
	require.Equal(t, "eth0", ep.Interface)
	require.Equal(t, DefaultTapName, ep.TapName)

	require.Equal(t, sysinit.NetConfig{
		Address:   netip.MustParsePrefix("10.99.0.2/24"),
		Gateway:   netip.MustParseAddr("10.99.0.1"),
		MAC:       eth0.Attrs().HardwareAddr,
		MTU:       1450,
		Addresses: []netip.Prefix{netip.MustParsePrefix("fd00:99::2/64")},
		Routes:    []sysinit.Route{{Dst: netip.MustParsePrefix("10.96.0.0/12"), Via: netip.MustParseAddr("10.99.0.1")}},
	}, ep.Guest)
	vt := ep.VMMTap()
	require.Equal(t, ep.Tap, vt.File)
	require.Equal(t, DefaultTapName, vt.Name)
	require.Equal(t, eth0.Attrs().HardwareAddr.String(), vt.MAC)
	require.Equal(t, 1450, vt.MTU)

	tap, err := p.podH.LinkByName(DefaultTapName)
	require.NoError(t, err)
	require.Equal(t, "tuntap", tap.Type())
	require.Equal(t, 1450, tap.Attrs().MTU)
	require.NotZero(t, tap.Attrs().Flags&net.FlagUp, "tap is up")
	vethFilters, ok := ingressFilters(t, p.podH, "eth0")
	require.True(t, ok, "eth0 has an ingress qdisc")
	require.Equal(t, tap.Attrs().Index, redirectTarget(t, vethFilters), "eth0 redirects to the tap")
	tapFilters, ok := ingressFilters(t, p.podH, DefaultTapName)
	require.True(t, ok, "the tap has an ingress qdisc")
	require.Equal(t, eth0.Attrs().Index, redirectTarget(t, tapFilters), "the tap redirects to eth0")

	_, err = Setup(context.Background(), Options{NetNSPath: p.podPath})
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition, "a second Setup finds the tap name taken")
	require.ErrorContains(t, err, "a link named tap0_cc already exists")
	_, ok = ingressFilters(t, p.podH, "eth0")
	require.True(t, ok, "the failed second Setup leaves the first one's plumbing alone")

	require.NoError(t, ep.Close())
	_, err = p.podH.LinkByName(DefaultTapName)
	require.Error(t, err, "the tap is gone after Close")
	_, ok = ingressFilters(t, p.podH, "eth0")
	require.False(t, ok, "eth0's ingress qdisc and filter are gone after Close")
	links, err := p.podH.LinkList()
	require.NoError(t, err)
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	require.ElementsMatch(t, []string{"lo", "eth0"}, names, "nothing else is left in the pod netns")
	require.NoError(t, Teardown(p.podPath, "eth0", DefaultTapName), "Teardown is idempotent")
	require.NoError(t, Teardown(filepath.Join(t.TempDir(), "gone"), "eth0", DefaultTapName), "a missing netns is nothing to tear down")
}

// TestTrafficFlowsBothWays writes a frame into the tap (as QEMU does for
// the guest) and sees it leave the pod through the veth, then sends one
// into the pod from the host side and reads it from the tap.
func TestTrafficFlowsBothWays(t *testing.T) {
	requireRootAndTun(t)
	p := newPodNetwork(t)
	ep, err := Setup(context.Background(), Options{NetNSPath: p.podPath, Interface: "eth0", TapName: "tapt0"})
	require.NoError(t, err)
	t.Cleanup(func() { ep.Close() })
	peer, err := p.hostH.LinkByName(p.peerName)
	require.NoError(t, err)

	var sock int
	onThreadIn(t, p.host, func() {
		sock, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	})
	require.NoError(t, err, "packet socket in the host netns")
	t.Cleanup(func() { unix.Close(sock) })
	require.NoError(t, unix.Bind(sock, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: peer.Attrs().Index}))
	require.NoError(t, unix.SetsockoptTimeval(sock, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000}))

	guestMAC := ep.Guest.MAC
	peerMAC := peer.Attrs().HardwareAddr

	// Guest to pod network: tap fd -> tap ingress -> redirect -> eth0 -> peer.
	out := frame(peerMAC, guestMAC, []byte("coffer tapnet guest->host"))
	_, err = ep.Tap.Write(append(make([]byte, vnetHdrLen), out...))
	require.NoError(t, err, "write a frame to the tap")
	require.True(t, receive(t, func(b []byte) (int, error) {
		n, _, err := unix.Recvfrom(sock, b, 0)
		return n, err
	}, out), "the frame written to the tap reaches the veth peer")

	// Pod network to guest: peer -> eth0 ingress -> redirect -> tap -> fd.
	in := frame(guestMAC, peerMAC, []byte("coffer tapnet host->guest"))
	require.NoError(t, unix.Sendto(sock, in, 0, &unix.SockaddrLinklayer{Ifindex: peer.Attrs().Index, Halen: 6}))
	require.True(t, receive(t, func(b []byte) (int, error) {
		ep.Tap.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := ep.Tap.Read(b)
		if n < vnetHdrLen {
			return 0, err
		}
		copy(b, b[vnetHdrLen:n])
		return n - vnetHdrLen, err
	}, in), "the frame sent to the veth reaches the tap")
}

// receive reads frames with read for up to 3 s and reports whether one
// equal to want arrived; other traffic (IPv6 router solicitations) is
// skipped.
func receive(t *testing.T, read func([]byte) (int, error), want []byte) bool {
	t.Helper()
	buf := make([]byte, 65536)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		n, err := read(buf)
		if err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read: %v", err)
			return false
		}
		if n >= len(want) && bytes.Equal(buf[:len(want)], want) {
			return true
		}
	}
	return false
}

// frame builds an Ethernet frame of testEtherType, padded to the 60-byte
// minimum.
func frame(dst, src net.HardwareAddr, payload []byte) []byte {
	b := append(append(append([]byte{}, dst...), src...), byte(testEtherType>>8), byte(testEtherType&0xff))
	b = append(b, payload...)
	for len(b) < 60 {
		b = append(b, 0)
	}
	return b
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func TestSetupErrors(t *testing.T) {
	requireRootAndTun(t)
	_, err := Setup(context.Background(), Options{})
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	_, err = Setup(context.Background(), Options{NetNSPath: "/nonexistent/netns"})
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	require.ErrorContains(t, err, "open network namespace /nonexistent/netns")

	path, ns := newNetns(t)
	_, err = Setup(context.Background(), Options{NetNSPath: path})
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
	require.ErrorContains(t, err, "no interface besides lo: has the CNI plugin run for this pod?")

	h, err := netlink.NewHandleAt(ns)
	require.NoError(t, err)
	defer h.Close()
	require.NoError(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth1"}))
	_, err = Setup(context.Background(), Options{NetNSPath: path})
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
	require.ErrorContains(t, err, "2 interfaces besides lo (eth0, eth1): name the pod's veth in Options.Interface")
	_, err = Setup(context.Background(), Options{NetNSPath: path, Interface: "eth0"})
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
	require.ErrorContains(t, err, "interface eth0 has no global address")
	_, err = Setup(context.Background(), Options{NetNSPath: path, Interface: "eth9"})
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	_, err = Setup(context.Background(), Options{NetNSPath: path, Interface: "eth0", TapName: "a-very-long-tap-name"})
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
}

func TestTunUnavailableError(t *testing.T) {
	err := error(&TunUnavailableError{Path: TunDevice, Err: unix.ENOENT})
	require.ErrorIs(t, err, errdefs.ErrUnavailable)
	require.ErrorIs(t, err, unix.ENOENT)
	require.ErrorContains(t, err, "tap networking unavailable: /dev/net/tun: no such file or directory: load the tun module")
	var tu *TunUnavailableError
	require.True(t, errors.As(err, &tu))
	for _, e := range []error{unix.ENOENT, unix.ENODEV, unix.ENXIO, unix.EACCES, unix.EPERM} {
		require.True(t, tunUnavailable(e), "%v", e)
	}
	require.False(t, tunUnavailable(unix.EBUSY))
}
