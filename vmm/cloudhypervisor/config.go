package cloudhypervisor

import (
	"encoding/hex"
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
//     the tap Network.Tap names (Cloud Hypervisor opens it by name). Cloud
//     Hypervisor has no user-mode network.
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
	if t := c.Network.Tap; c.Network.Mode == vmm.NetworkTap && t != nil {
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
