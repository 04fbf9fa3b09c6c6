package cloudhypervisor

import (
	"encoding/hex"
	"os"
	"path/filepath"

	"github.com/cofferhq/coffer/vmm"
)

// DefaultBinary is the Cloud Hypervisor executable used when Config.Binary
// is empty, looked up in PATH.
const DefaultBinary = "cloud-hypervisor"

// Names of the files a Cloud Hypervisor VM keeps in its Config.StateDir.
// console.log and stderr.log share vmm's names (vmm.ConsoleLogName,
// vmm.StderrLogName) so that the shim's diagnosis reads the same files.
const (
	// APISocketName is the REST API unix socket (--api-socket path=...).
	APISocketName = "clh-api.sock"
	// VirtioConsoleLogName receives the guest's virtio-console (hvc0).
	VirtioConsoleLogName = "hvc0.log"
)

// Config describes one Cloud Hypervisor VM: the VMM-neutral vmm.Config plus
// what only Cloud Hypervisor takes. Call Validate before use; New does.
//
// How vmm.Config maps (see VMConfig for the exact request):
//   - Kernel, Initrd, Cmdline, Firmware become payload.kernel, initramfs,
//     cmdline and firmware; VCPUs becomes cpus boot_vcpus = max_vcpus;
//     MemoryMiB becomes memory.size in bytes.
//   - The serial port (ttyS0) is written to StateDir/console.log, the
//     virtio-console (hvc0) to StateDir/hvc0.log.
//   - Agent must be vmm.AgentHybridVsock: vsock {cid: GuestCID, socket:
//     SocketPath}.
//   - Network.Mode vmm.NetworkNone adds no NIC; vmm.NetworkTap adds one on
//     Network.Tap. A tap with File set is passed as that open file
//     descriptor: Start sends it with PUT /vm.add-net (SCM_RIGHTS on the
//     API socket, see TapNetConfig) between vm.create and vm.boot, so
//     cloud-hypervisor needs no CAP_NET_ADMIN to open it. A tap with only
//     Name set goes into vm.create's net list and Cloud Hypervisor opens
//     it by name. Either way cloud-hypervisor is started in Tap.NetNS, when
//     set, because it reads the tap's MTU by interface name (to advertise
//     it to the guest), which resolves only in the tap's namespace; its API
//     and vsock sockets are path-named unix sockets, which work across
//     network namespaces. Cloud Hypervisor has no user-mode network.
//   - TEE tdx sets platform.tdx (Firmware is TDVF or TD-Shim); TEE snp sets
//     platform.sev_snp with payload.igvm = IGVM and payload.host_data =
//     TEE.SNP.HostData in hex.
type Config struct {
	vmm.Config
	// IGVM is the absolute path of the IGVM image that launches a SEV-SNP
	// guest (payload.igvm). Required for TEE kind snp, only for it.
	IGVM string
	// SharedMemory maps guest RAM shared (memory.shared), which vhost-user
	// devices such as virtio-fs need. Off by default.
	SharedMemory bool
}

// BinaryPath returns Binary, or DefaultBinary when Binary is empty.
func (c *Config) BinaryPath() string {
	if c.Binary == "" {
		return DefaultBinary
	}
	return c.Binary
}

// APISocketPath returns StateDir/clh-api.sock.
func (c *Config) APISocketPath() string { return filepath.Join(c.StateDir, APISocketName) }

// VirtioConsoleLogPath returns StateDir/hvc0.log.
func (c *Config) VirtioConsoleLogPath() string {
	return filepath.Join(c.StateDir, VirtioConsoleLogName)
}

// VMConfig returns the vm.create request for c. It assumes c passed
// Validate; it reads no files.
func (c *Config) VMConfig() *VmConfig {
	vc := &VmConfig{
		CPUs:   &CpusConfig{BootVCPUs: c.VCPUs, MaxVCPUs: c.VCPUs},
		Memory: &MemoryConfig{Size: int64(c.MemoryMiB) << 20, Shared: c.SharedMemory},
		Payload: PayloadConfig{
			Firmware:  c.Firmware,
			Kernel:    c.Kernel,
			Cmdline:   c.Cmdline,
			Initramfs: c.Initrd,
		},
		Serial:  &ConsoleConfig{Mode: ConsoleFile, File: c.ConsoleLogPath()},
		Console: &ConsoleConfig{Mode: ConsoleFile, File: c.VirtioConsoleLogPath()},
	}
	if c.Agent.Kind == vmm.AgentHybridVsock {
		vc.Vsock = &VsockConfig{CID: int64(c.Agent.GuestCID), Socket: c.Agent.SocketPath}
	}
	if t := c.Network.Tap; c.Network.Mode == vmm.NetworkTap && t != nil && t.File == nil {
		vc.Net = []NetConfig{{Tap: t.Name, MAC: t.MAC, MTU: t.MTU}}
	}
	switch c.TEE.Kind {
	case vmm.TEETDX:
		vc.Platform = &PlatformConfig{TDX: true}
	case vmm.TEESNP:
		vc.Platform = &PlatformConfig{SEVSNP: true}
		vc.Payload.IGVM = c.IGVM
		if c.TEE.SNP != nil && c.TEE.SNP.HostData != nil {
			vc.Payload.HostData = hex.EncodeToString(c.TEE.SNP.HostData)
		}
	}
	return vc
}

// TapNetConfig returns the body of the vm.add-net request Start sends for a
// tap passed by file descriptor, and the files to pass with it: one open
// tap queue, so two virtqueues. Tap.MTU is left out of the body: given an
// MTU, Cloud Hypervisor sets it on the tap by interface name, which fails
// unless it runs in the tap's namespace; the tap's creator sets the MTU
// (vmm/tapnet does) and Cloud Hypervisor advertises the tap's own MTU to
// the guest. It returns nil, nil unless Network.Mode is vmm.NetworkTap
// with Network.Tap.File set (a tap by name is in VMConfig's net list
// instead). It assumes c passed Validate.
func (c *Config) TapNetConfig() (*NetConfig, []*os.File) {
	t := c.Network.Tap
	if c.Network.Mode != vmm.NetworkTap || t == nil || t.File == nil {
		return nil, nil
	}
	return &NetConfig{MAC: t.MAC, NumQueues: 2}, []*os.File{t.File}
}
