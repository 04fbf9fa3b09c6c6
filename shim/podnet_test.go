package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/guest/sysinit"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/vmm"
	"github.com/cofferhq/coffer/vmm/cloudhypervisor"
	"github.com/cofferhq/coffer/vmm/cloudhypervisor/clhtest"
	"github.com/cofferhq/coffer/vmm/tapnet"
	"github.com/cofferhq/coffer/vmm/vmproc"
	"github.com/cofferhq/coffer/vmm/vmproc/vmproctest"
)

// defaultGuestCmdline is the guest build's command line (guest/build
// DefaultCmdline): it names the QEMU user-mode address in cc.net.
const defaultGuestCmdline = "console=ttyS0 loglevel=6 panic=-1 reboot=t cc.net=10.0.2.15/24,10.0.2.2,10.0.2.3"

func TestSetNetParam(t *testing.T) {
	nc, err := sysinit.ParseNetConfig("10.99.0.2/24,10.99.0.1,10.96.0.10,mac=0a:58:0a:63:00:02,mtu=1450,search=ns.svc.cluster.local")
	require.NoError(t, err)
	want := "cc.net=" + nc.String()

	got, err := setNetParam(defaultGuestCmdline, nc)
	require.NoError(t, err)
	require.Equal(t, "console=ttyS0 loglevel=6 panic=-1 reboot=t "+want, got, "the user-mode cc.net is replaced")
	parsed, err := sysinit.ParseCmdline(got)
	require.NoError(t, err, "the guest parses the result")
	require.Equal(t, nc, parsed.Net)

	// Quoted words stay whole, even with spaces or a cc.net look-alike inside.
	got, err = setNetParam(`a="x cc.net=1.2.3.4/8 y"  cc.net  b=1`+"\t", nc)
	require.NoError(t, err)
	require.Equal(t, `a="x cc.net=1.2.3.4/8 y" b=1 `+want, got)
	got, err = setNetParam("", nc)
	require.NoError(t, err)
	require.Equal(t, want, got)
	got, err = setNetParam(defaultGuestCmdline, nil)
	require.NoError(t, err)
	require.Equal(t, "console=ttyS0 loglevel=6 panic=-1 reboot=t", got, "nil only removes")

	_, err = setNetParam(strings.Repeat("x", maxCmdline), nc)
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	require.ErrorContains(t, err, "more than the 2047 a guest kernel takes")
}

// newCNINetns makes what a CNI plugin leaves for a pod: a network namespace
// bind-mounted at a file, holding eth0 (a veth whose peer sits in another
// namespace) with a MAC, MTU 1450, 10.99.0.2/24 and a default route via
// 10.99.0.1. Needs root and the tun driver; skips otherwise.
func newCNINetns(t *testing.T) (path string, h *netlink.Handle) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces and taps")
	}
	if _, err := os.Stat(tapnet.TunDevice); err != nil {
		t.Skipf("this machine has no tun driver: %v", err)
	}
	pod, podFD, _ := vmproctest.NewNetNS(t)
	peer, _, _ := vmproctest.NewNetNS(t)
	path = filepath.Join(t.TempDir(), "netns")
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	require.NoError(t, unix.Mount(podFD, path, "", unix.MS_BIND, ""), "bind-mount the pod netns the way CNI does")
	t.Cleanup(func() { unix.Unmount(path, unix.MNT_DETACH) })
	h, err := netlink.NewHandleAt(pod)
	require.NoError(t, err)
	t.Cleanup(h.Close)

	mac, _ := net.ParseMAC("0a:58:0a:63:00:02")
	require.NoError(t, h.LinkAdd(&netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "eth0", MTU: 1450, HardwareAddr: mac},
		PeerName:      "hveth0",
		PeerNamespace: netlink.NsFd(int(peer)),
	}))
	eth0, err := h.LinkByName("eth0")
	require.NoError(t, err)
	addr, err := netlink.ParseAddr("10.99.0.2/24")
	require.NoError(t, err)
	require.NoError(t, h.AddrAdd(eth0, addr))
	require.NoError(t, h.LinkSetUp(eth0))
	require.NoError(t, h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.99.0.1")}))
	return path, h
}

// clhPodVMConfig returns a shim config for Cloud Hypervisor with tee and
// the vmm config the shim builds before the pod network is attached.
func clhPodVMConfig(t *testing.T, tee vmm.TEEKind) (*Config, *vmm.Config) {
	cfg := &Config{}
	cfg.Hypervisor.VMM = string(vmm.KindCloudHypervisor)
	cfg.Hypervisor.TEE = string(tee)
	vc := &vmm.Config{Cmdline: defaultGuestCmdline, TEE: vmm.TEE{Kind: tee}, Network: vmm.Network{Mode: vmm.NetworkNone}}
	return cfg, vc
}

// TestPodNetworkCloudHypervisor attaches a Cloud Hypervisor VM config to a
// CNI-style pod netns: the tap is created there and handed over as an
// open file (for vm.add-net), the pod's addresses, routes and DNS replace
// cc.net on the command line, and there is no fw_cfg item.
func TestPodNetworkCloudHypervisor(t *testing.T) {
	nsPath, h := newCNINetns(t)
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	require.NoError(t, os.WriteFile(resolv, []byte("nameserver 10.96.0.10\nsearch ns.svc.cluster.local svc.cluster.local\n"), 0o644))
	cfg, vc := clhPodVMConfig(t, vmm.TEENone)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ep, warning, err := podNetwork(ctx, cfg, vc, nsPath, resolv)
	require.NoError(t, err)
	require.Empty(t, warning)
	require.NotNil(t, ep)

	require.Empty(t, vc.FWCfg, "Cloud Hypervisor has no fw_cfg")
	require.Equal(t, vmm.NetworkTap, vc.Network.Mode)
	tap := vc.Network.Tap
	require.NotNil(t, tap)
	require.Same(t, ep.Tap, tap.File, "the open tap goes to the VMM")
	require.Equal(t, tapnet.DefaultTapName, tap.Name)
	require.Equal(t, "0a:58:0a:63:00:02", tap.MAC)
	require.Equal(t, 1450, tap.MTU)
	require.Equal(t, nsPath, tap.NetNS, "cloud-hypervisor is started in the pod's namespace")
	_, err = h.LinkByName(tapnet.DefaultTapName)
	require.NoError(t, err, "the tap lives in the pod's namespace")

	parsed, err := sysinit.ParseCmdline(vc.Cmdline)
	require.NoError(t, err, "the guest parses %q", vc.Cmdline)
	require.Equal(t, 1, strings.Count(vc.Cmdline, "cc.net="), "one cc.net, the pod's: %s", vc.Cmdline)
	require.True(t, strings.HasPrefix(vc.Cmdline, "console=ttyS0 loglevel=6 panic=-1 reboot=t cc.net="), vc.Cmdline)
	require.Equal(t, ep.Guest.String(), parsed.Net.String())
	require.Equal(t, "10.99.0.2/24", parsed.Net.Address.String())
	require.Equal(t, "10.99.0.1", parsed.Net.Gateway.String())
	require.Equal(t, "10.96.0.10", parsed.Net.DNS.String())
	require.Equal(t, []string{"ns.svc.cluster.local", "svc.cluster.local"}, parsed.Net.Search)

	// What vmm/cloudhypervisor makes of it: no tap named in vm.create, the
	// open tap sent with vm.add-net, the pod's cc.net in the payload.
	clh := &cloudhypervisor.Config{Config: *vc}
	require.Empty(t, clh.VMConfig().Net)
	require.Equal(t, vc.Cmdline, clh.VMConfig().Payload.Cmdline)
	nic, files := clh.TapNetConfig()
	require.Equal(t, &cloudhypervisor.NetConfig{MAC: "0a:58:0a:63:00:02", NumQueues: 2}, nic)
	require.Equal(t, []*os.File{ep.Tap}, files)

	require.NoError(t, ep.Close())
	_, err = h.LinkByName(tapnet.DefaultTapName)
	require.Error(t, err, "Close removes the tap")
}

// TestPodNetworkCloudHypervisorTEE: with tee snp or tdx the pod's addresses
// would enter the measured command line, so the pod network is refused
// before anything is created.
func TestPodNetworkCloudHypervisorTEE(t *testing.T) {
	nsPath, h := newCNINetns(t)
	for _, tee := range []vmm.TEEKind{vmm.TEESNP, vmm.TEETDX} {
		cfg, vc := clhPodVMConfig(t, tee)
		before := vc.Cmdline
		ep, _, err := podNetwork(context.Background(), cfg, vc, nsPath, "")
		require.ErrorIs(t, err, errdefs.ErrNotImplemented, tee)
		require.Nil(t, ep)
		require.ErrorContains(t, err, "attach the VM to the pod network "+nsPath)
		require.ErrorContains(t, err, `with tee "`+string(tee)+`" that is part of the attested launch`)
		require.ErrorContains(t, err, `use vmm "qemu" for CRI pods with a TEE`)
		require.Equal(t, before, vc.Cmdline)
		require.Equal(t, vmm.NetworkNone, vc.Network.Mode)
		_, err = h.LinkByName(tapnet.DefaultTapName)
		require.Error(t, err, "no tap was created")
	}
}

// TestPodNetworkQEMU keeps QEMU's path: the addresses go to fw_cfg and the
// command line stays the guest build's.
func TestPodNetworkQEMU(t *testing.T) {
	nsPath, _ := newCNINetns(t)
	cfg := &Config{}
	cfg.Hypervisor.VMM = string(vmm.KindQEMU)
	vc := &vmm.Config{Cmdline: defaultGuestCmdline, Network: vmm.Network{Mode: vmm.NetworkUser}}
	ep, warning, err := podNetwork(context.Background(), cfg, vc, nsPath, "")
	require.NoError(t, err)
	require.Empty(t, warning)
	defer ep.Close()
	require.Equal(t, defaultGuestCmdline, vc.Cmdline)
	require.Equal(t, []vmm.FWCfgEntry{{Name: sysinit.FWCfgNet, String: ep.Guest.String()}}, vc.FWCfg)
	require.Same(t, ep.Tap, vc.Network.Tap.File)
}

// TestMain lets this test binary act as a fake cloud-hypervisor
// (clhtest.ModeEnv, see TestCloudHypervisorPodVM).
func TestMain(m *testing.M) {
	clhtest.Main()
	os.Exit(m.Run())
}

// TestCloudHypervisorPodVM runs the shim's Cloud Hypervisor pod path end
// to end up to the VMM's API, with the fake cloud-hypervisor (this test
// binary): vmConfig, podNetwork and newVMM as startSandbox calls them,
// then Start. The fake runs in the pod's network namespace, receives the
// pod's tap with vm.add-net, and boots a command line carrying the pod's
// cc.net.
func TestCloudHypervisorPodVM(t *testing.T) {
	nsPath, _ := newCNINetns(t)
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		t.Skipf("cloudhypervisor.New wants /dev/kvm to open read-write (even for the fake): %v", err)
	} else {
		f.Close()
	}
	dir, err := os.MkdirTemp("", "ccpod") // short: the socket paths live here
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644))
	}
	exe, err := os.Executable()
	require.NoError(t, err)
	t.Setenv(clhtest.ModeEnv, "serve")

	cfg := &Config{}
	h := &cfg.Hypervisor
	h.VMM, h.Binary, h.TEE = string(vmm.KindCloudHypervisor), exe, string(vmm.TEENone)
	h.KernelPath, h.InitrdPath = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img")
	h.KernelCmdline, h.VCPUs, h.MemoryMiB = defaultGuestCmdline, 1, MinMemoryMiB
	cfg.Network.Mode = "none"
	stateDir := filepath.Join(dir, "vm")
	require.NoError(t, os.Mkdir(stateDir, 0o700))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	vc, err := vmConfig(cfg, "pod-fake", stateDir, transport.KindHybridVsock, nil)
	require.NoError(t, err)
	ep, warning, err := podNetwork(ctx, cfg, vc, nsPath, "")
	require.NoError(t, err)
	require.Empty(t, warning)
	t.Cleanup(func() { ep.Close() })
	vm, err := newVMM(cfg, vc)
	require.NoError(t, err)
	require.NoError(t, vm.Start(ctx))
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", vm.Pid()))
	require.NoError(t, err)
	rec := clhtest.ReadRecord(t, stateDir)
	require.NoError(t, vm.Stop(ctx))

	require.Contains(t, string(env), "\x00"+vmproc.VMNameEnv+"=coffer-pod-fake\x00", "the harness finds the pod's VM by its name")
	podNS, err := vmproctest.NetNSInode(nsPath)
	require.NoError(t, err)
	require.Equal(t, podNS, rec.NetNS, "cloud-hypervisor runs in the pod's namespace")
	require.Len(t, rec.Taps, 1)
	require.Empty(t, rec.Taps[0].Err)
	require.Equal(t, tapnet.DefaultTapName, rec.Taps[0].Name)
	require.Equal(t, podNS, rec.Taps[0].NetNS, "the pod's tap reached cloud-hypervisor")
	require.JSONEq(t, `{"mac":"0a:58:0a:63:00:02","num_queues":2}`, string(rec.AddNet))
	var created cloudhypervisor.VmConfig
	require.NoError(t, json.Unmarshal(rec.Create, &created))
	require.Empty(t, created.Net)
	require.Equal(t, "console=ttyS0 loglevel=6 panic=-1 reboot=t cc.net="+ep.Guest.String(), created.Payload.Cmdline)
	var calls []string
	for _, c := range rec.Calls {
		if c != "GET /api/v1/vmm.ping" {
			calls = append(calls, c)
		}
	}
	require.Equal(t, []string{"PUT /api/v1/vm.create", "PUT /api/v1/vm.add-net", "PUT /api/v1/vm.boot"}, calls, "read before Stop")
}
