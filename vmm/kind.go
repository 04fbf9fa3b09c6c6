package vmm

import "fmt"

// Kind names a virtual machine monitor implementation. The shim config key
// hypervisor.vmm holds one; package vmm/qemu implements KindQEMU and package
// vmm/cloudhypervisor implements KindCloudHypervisor, both as vmm.VMM.
type Kind string

// VMM implementations.
const (
	// KindQEMU is QEMU (qemu-system-x86_64), driven over QMP (package vmm/qemu).
	KindQEMU Kind = "qemu"
	// KindCloudHypervisor is Cloud Hypervisor, driven over its REST API on
	// a unix socket (package vmm/cloudhypervisor).
	KindCloudHypervisor Kind = "cloud-hypervisor"
)

// ParseKind checks a configured VMM name. The empty string means KindQEMU.
// It returns an error naming the value and the accepted ones otherwise.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case "":
		return KindQEMU, nil
	case KindQEMU, KindCloudHypervisor:
		return k, nil
	default:
		return "", fmt.Errorf("parse vmm kind: %q is not a VMM, want %q or %q", s, KindQEMU, KindCloudHypervisor)
	}
}

// AgentHybridVsock is the Cloud Hypervisor (and Firecracker) "hybrid vsock"
// agent transport: the guest uses plain AF_VSOCK with Agent.GuestCID, and
// the VMM exposes the guest's vsock on the host as the unix socket
// Agent.SocketPath. The host connects there, writes "CONNECT <port>\n",
// reads "OK <host port>\n", and the connection then carries raw bytes
// (transport.ConnectHybridVsock). It needs no /dev/vhost-vsock. vmm/qemu
// does not implement it.
const AgentHybridVsock AgentKind = "hybrid-vsock"

// NetworkTap gives the guest a virtio-net NIC backed by a host tap device,
// described by Network.Tap (vmm/tapnet creates one in a pod's network
// namespace). Both backends implement it: vmm/qemu takes the tap as an open
// file (Tap.File, inherited as fd 3) or by name, vmm/cloudhypervisor by name
// only (it is the only kind of network Cloud Hypervisor has: it has no
// user-mode network).
const NetworkTap NetworkMode = "tap"
