package vmm

import "os"

// MaxInterfaceNameLen is the longest network interface name, bytes
// (IFNAMSIZ - 1).
const MaxInterfaceNameLen = 15

// Tap is the host tap device behind a NetworkTap NIC, which both backends
// take from Network.Tap by File or by Name. Package vmm/tapnet creates one inside a pod
// network namespace and returns it in this form (tapnet.Endpoint.VMMTap).
type Tap struct {
	// Name is the tap's interface name, 1 to MaxInterfaceNameLen bytes. QEMU
	// opens the tap by this name (ifname=, script=no) when File is nil; that
	// needs the tap in QEMU's own network namespace.
	Name string
	// File is an open queue of the tap (/dev/net/tun after TUNSETIFF with
	// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR). QEMU inherits it as file descriptor 3
	// (-netdev tap,fd=3); Cloud Hypervisor receives it over its API socket
	// (SCM_RIGHTS with vm.add-net). Either way the VMM needs neither
	// CAP_NET_ADMIN nor to run in the tap's network namespace, and Name
	// only labels messages. The caller keeps ownership: it may close its
	// copy once the VM has started. Nil means open by Name.
	File *os.File
	// NetNS is the network namespace the tap lives in (a bind-mounted file
	// such as /var/run/netns/cni-<uuid>, or /proc/<pid>/ns/net), empty for
	// the VMM's own. Cloud Hypervisor is started in it: even with the tap
	// passed as File it reads (and, given an MTU, sets) the tap's MTU by
	// interface name, which resolves only in the tap's namespace. QEMU
	// ignores it.
	NetNS string
	// MAC is the guest NIC's MAC address, six colon-separated hex bytes
	// ("0a:58:0a:58:00:05"); empty means the VMM's default (QEMU's is
	// 52:54:00:12:34:56, Cloud Hypervisor picks a random one).
	MAC string
	// MTU is the MTU, bytes, the NIC advertises to the guest (virtio-net
	// host_mtu, 68 to 65535); 0 advertises none and the guest uses 1500.
	MTU int
}
