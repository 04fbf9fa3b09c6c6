package vmm

import "path/filepath"

// Names of the files a VM keeps in its Config.StateDir.
const (
	// QMPSocketName is the QMP (QEMU Machine Protocol) unix socket.
	QMPSocketName = "qmp.sock"
	// ConsoleLogName receives everything the guest writes to its serial
	// console (ttyS0): kernel messages and cc-agent's markers.
	ConsoleLogName = "console.log"
	// PIDFileName holds the hypervisor's decimal process id, written by QEMU
	// (-pidfile) and removed by QEMU on a clean exit.
	PIDFileName = "qemu.pid"
	// StderrLogName receives the hypervisor's stdout and stderr.
	StderrLogName = "stderr.log"
	// SimIdentityName is the sim TEE's test-only VCEK certificate and key
	// (attestation/sim Reporter.MarshalPEM, mode 0600), passed to the guest
	// as fw_cfg item sim.FWCfgIdentity. Only for TEE kind sim.
	SimIdentityName = "sim-identity.pem"
)

// DefaultBinary is the QEMU binary used when Config.Binary is empty, looked up
// in PATH.
const DefaultBinary = "qemu-system-x86_64"

// MaxSocketPathLen is the longest unix socket path, in bytes, that Linux
// accepts: sun_path is 108 bytes including the terminating NUL.
const MaxSocketPathLen = 107

// MinMemoryMiB is the least guest memory, in MiB, that Validate accepts. The
// Debian cloud kernel alone needs more than 64 MiB and Coffer's runc
// initramfs needs 96 MiB, so real pods want 128 MiB or more.
const MinMemoryMiB = 64

// MaxVCPUs is the largest vCPU count the q35 machine accepts in QEMU 7.2.
const MaxVCPUs = 288

// VirtioSerialPortName is the name of the virtio-serial port that carries the
// agent connection; the guest finds it as /sys/class/virtio-ports/*/name.
const VirtioSerialPortName = "agent.0"

// Config describes one VM. The zero value of every optional field means "off"
// or "default", as documented on the field. Call Validate before use.
type Config struct {
	// Name labels the VM (QEMU -name) in process listings and logs.
	// Required; usually the pod's sandbox id.
	Name string
	// StateDir is an existing absolute directory owned by this VM. It holds
	// qmp.sock, console.log, qemu.pid and stderr.log. StateDir + "/qmp.sock"
	// must fit in MaxSocketPathLen bytes: use a short path such as
	// /run/cc/<short-hash>.
	StateDir string
	// Binary is the QEMU executable, a path or a name looked up in PATH.
	// Empty means DefaultBinary.
	Binary string
	// VCPUs is the number of virtual CPUs, 1 to MaxVCPUs.
	VCPUs int
	// MemoryMiB is the guest RAM size in MiB (2^20 bytes), at least
	// MinMemoryMiB.
	MemoryMiB int
	// Kernel is the absolute path of the guest kernel (bzImage), passed
	// directly to QEMU (-kernel). Required.
	Kernel string
	// Initrd is the absolute path of the guest initramfs (-initrd), which
	// carries cc-agent. Required.
	Initrd string
	// Cmdline is the guest kernel command line (-append), for example
	// "console=ttyS0 loglevel=6". console=ttyS0 is needed for console.log to
	// show the boot.
	Cmdline string
	// Firmware is the absolute path of the firmware image (-bios). Empty means
	// QEMU's default SeaBIOS. Required for TEE kinds snp (the AmdSevX64 OVMF
	// build) and tdx (TDVF, the IntelTdx OVMF build).
	Firmware string
	// Accel selects the accelerator. Empty means AccelAuto; see ResolveAccel.
	Accel Accel
	// Network is the guest's network. The zero value is no network.
	Network Network
	// Agent is the channel the host uses to reach cc-agent. The zero value
	// adds no agent device.
	Agent Agent
	// TEE selects the trusted execution environment. The zero value is none.
	TEE TEE
	// FWCfg lists small blobs passed through QEMU's fw_cfg device; the guest
	// reads them at /sys/firmware/qemu_fw_cfg/by_name/<Name>/raw. Keep each
	// under about 64 KiB: fw_cfg reads 1 MiB in about 12 s under TCG.
	FWCfg []FWCfgEntry
}

// Accel is a hypervisor accelerator.
type Accel string

// Accelerators.
const (
	// AccelKVM runs the guest on the host CPU through /dev/kvm.
	AccelKVM Accel = "kvm"
	// AccelTCG emulates the CPU in software (QEMU's Tiny Code Generator).
	AccelTCG Accel = "tcg"
	// AccelAuto picks AccelKVM when it works here, else AccelTCG; see
	// ResolveAccel.
	AccelAuto Accel = "auto"
)

// TEEKind is a kind of trusted execution environment.
type TEEKind string

// TEE kinds.
const (
	// TEENone runs a plain VM.
	TEENone TEEKind = "none"
	// TEESim runs a plain VM with a simulated, test-only TEE: the VMM hands
	// the guest a sim VCEK key, the launch measurement of what it boots and
	// HOST_DATA through fw_cfg (see TEE.Sim and SimFWCfg). Apart from those
	// fw_cfg items the QEMU command line is the same as TEENone.
	TEESim TEEKind = "sim"
	// TEESNP runs an AMD SEV-SNP guest (QEMU >= 9.1, KVM on an SNP host).
	TEESNP TEEKind = "snp"
	// TEETDX runs an Intel TDX guest (QEMU >= 10.1, KVM on a TDX host).
	TEETDX TEEKind = "tdx"
)

// TEE selects the trusted execution environment and its launch parameters.
type TEE struct {
	// Kind is the TEE kind. Empty means TEENone.
	Kind TEEKind
	// SNP holds SEV-SNP launch parameters; only for Kind TEESNP. Nil means
	// all defaults.
	SNP *SNPConfig
	// TDX holds TDX launch parameters; only for Kind TEETDX. Nil means all
	// defaults.
	TDX *TDXConfig
	// Sim holds the simulated TEE's parameters; required for Kind TEESim,
	// only for it.
	Sim *SimConfig
}

// SNP launch defaults, used when the matching SNPConfig field is zero.
const (
	// DefaultSNPPolicy is the SEV-SNP guest policy: bit 17 (reserved, must be
	// 1) and bit 16 (SMT allowed) set; debug, migration agent and single
	// socket off. AMD SEV-SNP ABI spec 56860, section 4.3.
	DefaultSNPPolicy uint64 = 0x30000
	// DefaultCBitPos is the position of the C-bit (encryption bit) in a page
	// table entry on EPYC Milan and Genoa.
	DefaultCBitPos = 51
	// DefaultReducedPhysBits is the number of physical address bits lost to
	// memory encryption on EPYC Milan and Genoa.
	DefaultReducedPhysBits = 1
)

// SNPConfig holds the AMD SEV-SNP launch parameters QEMU passes to the
// sev-snp-guest object.
type SNPConfig struct {
	// Policy is the 64-bit SNP guest policy (SNP_LAUNCH_START). Zero means
	// DefaultSNPPolicy. Bit 17 must be set.
	Policy uint64
	// CBitPos is the C-bit position, 32 to 63. Zero means DefaultCBitPos.
	CBitPos int
	// ReducedPhysBits is the count of address bits lost to encryption, 1 to
	// 63. Zero means DefaultReducedPhysBits.
	ReducedPhysBits int
	// HostData is copied into the attestation report's HOST_DATA field. It
	// must be nil or exactly 32 bytes (typically a SHA-256 digest).
	HostData []byte
	// KernelHashes makes the firmware measure the kernel, initrd and command
	// line into the launch digest (QEMU kernel-hashes=on).
	KernelHashes bool
}

// WithDefaults returns a copy of c with zero fields set to their defaults. It
// accepts a nil receiver, which yields all defaults.
func (c *SNPConfig) WithDefaults() SNPConfig {
	var out SNPConfig
	if c != nil {
		out = *c
	}
	if out.Policy == 0 {
		out.Policy = DefaultSNPPolicy
	}
	if out.CBitPos == 0 {
		out.CBitPos = DefaultCBitPos
	}
	if out.ReducedPhysBits == 0 {
		out.ReducedPhysBits = DefaultReducedPhysBits
	}
	return out
}

// TDXConfig holds the Intel TDX launch parameters QEMU passes to the
// tdx-guest object.
type TDXConfig struct {
	// MRConfigID is copied into the TD report's MRCONFIGID field. It must be
	// nil or exactly 48 bytes (typically a SHA-384 digest).
	MRConfigID []byte
	// QuoteGenerationSocket is where QEMU reaches the host's Quote
	// Generation Service for the guest's GetQuote requests. Nil means none.
	QuoteGenerationSocket *VsockAddr
}

// VsockAddr is an AF_VSOCK address.
type VsockAddr struct {
	// CID is the context id; 2 is the host.
	CID uint32
	// Port is the vsock port.
	Port uint32
}

// NetworkMode is how the guest reaches the network.
type NetworkMode string

// Network modes.
const (
	// NetworkNone gives the guest no network device.
	NetworkNone NetworkMode = "none"
	// NetworkUser gives the guest a virtio-net NIC on QEMU's user-mode
	// (slirp) network 10.0.2.0/24: guest 10.0.2.15, host 10.0.2.2, DNS
	// 10.0.2.3.
	NetworkUser NetworkMode = "user"
)

// Network configures the guest network.
type Network struct {
	// Mode is the network mode. Empty means NetworkNone.
	Mode NetworkMode
	// Restrict isolates the guest from the host and the outside network
	// (QEMU restrict=on); only Forwards stay reachable. Only for NetworkUser.
	Restrict bool
	// Forwards are guest-to-host TCP forwards (QEMU guestfwd). Only for
	// NetworkUser.
	Forwards []Forward
	// Tap is the host tap device backing the NIC; required for NetworkTap
	// (with either backend), only for NetworkTap.
	Tap *Tap
}

// Forward makes a TCP address on the guest's user network run a host command
// for every connection, with the connection as the command's stdin and
// stdout (QEMU "guestfwd=tcp:IP:PORT-cmd:COMMAND").
//
// QEMU's libslirp starts the command with setsid() and a double fork, so it
// is neither in QEMU's process group nor QEMU's child; it inherits QEMU's
// environment. vmm/qemu uses that environment to kill such commands when QEMU
// exits. The command should still exit when its stdin reaches EOF.
type Forward struct {
	// GuestIP is the IPv4 address the guest connects to, inside
	// 10.0.2.0/24 and not one of QEMU's own addresses (.0, .2, .3, .255),
	// for example "10.0.2.100".
	GuestIP string
	// GuestPort is the TCP port the guest connects to, 1 to 65535.
	GuestPort int
	// Command is the host command's argv; Command[0] is looked up in PATH.
	// vmm/qemu quotes it for QEMU (shell-style quoting for glib's
	// g_shell_parse_argv, then commas doubled for QEMU's option parser).
	Command []string
}

// AgentKind is the transport between the host and cc-agent.
type AgentKind string

// Agent transports.
const (
	// AgentVsock uses AF_VSOCK through vhost-vsock (needs /dev/vhost-vsock).
	AgentVsock AgentKind = "vsock"
	// AgentVirtioSerial uses a virtio-serial port named VirtioSerialPortName,
	// backed on the host by a unix socket QEMU listens on.
	AgentVirtioSerial AgentKind = "virtio-serial"
)

// Agent configures the host-to-agent channel.
type Agent struct {
	// Kind is the transport. Empty means no agent device.
	Kind AgentKind
	// GuestCID is the guest's vsock context id, at least 3. Only for
	// AgentVsock.
	GuestCID uint32
	// SocketPath is the absolute path of the unix socket QEMU listens on for
	// the virtio-serial port, at most MaxSocketPathLen bytes, in an existing
	// directory. Only for AgentVirtioSerial.
	SocketPath string
}

// FWCfgEntry is one fw_cfg item. Exactly one of File and String is set.
type FWCfgEntry struct {
	// Name is the fw_cfg file name. It must start with "opt/" (other names
	// belong to QEMU) and be at most 55 bytes; Coffer uses "opt/cc/<name>".
	Name string
	// File is the absolute path of a host file whose bytes become the item.
	File string
	// String is the item's content, used when File is empty.
	String string
}

// BinaryPath returns Binary, or DefaultBinary when Binary is empty.
func (c *Config) BinaryPath() string {
	if c.Binary == "" {
		return DefaultBinary
	}
	return c.Binary
}

// QMPSocketPath returns StateDir/qmp.sock.
func (c *Config) QMPSocketPath() string { return filepath.Join(c.StateDir, QMPSocketName) }

// ConsoleLogPath returns StateDir/console.log.
func (c *Config) ConsoleLogPath() string { return filepath.Join(c.StateDir, ConsoleLogName) }

// PIDFilePath returns StateDir/qemu.pid.
func (c *Config) PIDFilePath() string { return filepath.Join(c.StateDir, PIDFileName) }

// SimIdentityPath returns StateDir/sim-identity.pem.
func (c *Config) SimIdentityPath() string { return filepath.Join(c.StateDir, SimIdentityName) }

// StderrLogPath returns StateDir/stderr.log.
func (c *Config) StderrLogPath() string { return filepath.Join(c.StateDir, StderrLogName) }
