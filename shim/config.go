package shim

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/forward"
	"github.com/cofferhq/coffer/vmm"
	"github.com/cofferhq/coffer/vmm/cloudhypervisor"
)

// MinMemoryMiB is the smallest hypervisor.memory_mib the shim accepts
// (MiB). The initramfs (about 40 MiB unpacked, most of it cc-agent) lives
// in guest RAM beside its 14 MiB compressed copy while the kernel unpacks
// it. Measured with the Coffer guest under TCG on 2026-11-30 (Debian 6.1
// kernel) and again on 2026-12-01 (Debian 6.12 kernel, whose image takes
// about 5 MiB more RAM), with the same result: 144 MiB boots and runs
// busybox, 128 and 136 MiB fail to unpack the initramfs and panic
// ("System is deadlocked on memory"). 160 leaves a margin.
const MinMemoryMiB = 160

// DefaultConfigPath is where the shim reads its config when containerd's
// runtime options carry no ConfigPath.
const DefaultConfigPath = "/etc/coffer/cc.toml"

// Config is the shim's configuration file (configs/cc.toml documents every
// key). Zero values mean "use the default" listed on each field.
type Config struct {
	Hypervisor  HypervisorConfig  `toml:"hypervisor"`
	Agent       AgentConfig       `toml:"agent"`
	Network     NetworkConfig     `toml:"network"`
	Registry    RegistryConfig    `toml:"registry"`
	Image       ImageConfig       `toml:"image"`
	Attestation AttestationConfig `toml:"attestation"`
}

// AttestationConfig says how a confidential guest proves itself to the KBS
// (docs/configuration.md, docs/trust-model.md).
type AttestationConfig struct {
	// InitData is a CoCo init-data TOML file used for pods that carry no
	// init-data annotation (io.coffer.cc.init-data or Kata's
	// io.katacontainers.config.hypervisor.cc_init_data). Default: none.
	InitData string `toml:"init_data"`
	// Required makes the guest attest to the KBS named in init-data before
	// its first image pull, and refuse to pull without one. Default: true
	// when hypervisor.tee is not "none".
	Required *bool `toml:"required"`
	// Deadline bounds how long the guest retries an unreachable KBS
	// (default 30s); every attempt is a /cc/attestation event.
	Deadline Duration `toml:"deadline"`
	// SimChainDir is the sim TEE's test-only ARK/ASK/VCEK directory (as
	// written by `ccctl attest sim-chain` / attestation/sim WriteDir).
	// Required when hypervisor.tee = "sim".
	SimChainDir string `toml:"sim_chain_dir"`
}

// ImageConfig says where a container's image may come from.
type ImageConfig struct {
	// ForceGuestPull lets a container whose rootfs a host snapshotter
	// unpacked (overlayfs, native, ...) run anyway: the guest pulls the
	// image by name and the host copy is ignored, with a /cc/warning event.
	// Default false: such a container is refused, because its layers were
	// already fetched and unpacked on the untrusted host.
	ForceGuestPull bool `toml:"force_guest_pull"`
}

// HypervisorConfig selects and sizes the VM.
type HypervisorConfig struct {
	// VMM is the virtual machine monitor: "qemu" (default) or
	// "cloud-hypervisor" (docs/cloud-hypervisor.md).
	VMM string `toml:"vmm"`
	// Binary is the VMM executable (default "qemu-system-x86_64", or
	// "cloud-hypervisor", from PATH).
	Binary string `toml:"binary"`
	// IGVMPath is the IGVM image for tee "snp" with vmm
	// "cloud-hypervisor"; only for that combination.
	IGVMPath string `toml:"igvm_path"`
	// Accel is "kvm", "tcg" or "auto" (default; see vmm.ResolveAccel).
	Accel string `toml:"accel"`
	// VCPUs is the number of virtual CPUs (default 1).
	VCPUs int `toml:"vcpus"`
	// MaxVCPUs caps a pod VM's vCPUs: vcpus plus the pod's summed CPU
	// limits (CRI). Default: the host's CPU count.
	MaxVCPUs int `toml:"max_vcpus"`
	// MaxMemoryMiB caps a pod VM's RAM: memory_mib plus the pod's summed
	// memory limits (CRI). Default 16384.
	MaxMemoryMiB int `toml:"max_memory_mib"`
	// MemoryMiB is guest RAM in MiB (default 512, at least MinMemoryMiB).
	// The container rootfs lives in guest RAM, so size it for the image
	// plus the workload.
	MemoryMiB int `toml:"memory_mib"`
	// GuestDir holds the guest build (vmlinuz, initrd.img, manifest.json).
	// Default: "../guest" relative to the shim binary, which is the layout
	// `make` produces (build/bin, build/guest).
	GuestDir string `toml:"guest_dir"`
	// KernelPath overrides GuestDir/vmlinuz.
	KernelPath string `toml:"kernel_path"`
	// InitrdPath overrides GuestDir/initrd.img.
	InitrdPath string `toml:"initrd_path"`
	// KernelCmdline replaces the guest build's default kernel command line
	// (manifest.json "cmdline"). Leave empty to use the default.
	KernelCmdline string `toml:"kernel_cmdline"`
	// FirmwarePath is the firmware (-bios) for SNP/TDX guests.
	FirmwarePath string `toml:"firmware_path"`
	// TEE is "none" (default), "sim", "snp" or "tdx".
	TEE string `toml:"tee"`
}

// AgentConfig says how the shim reaches cc-agent.
type AgentConfig struct {
	// Transport is "auto" (default: vsock when /dev/vhost-vsock exists,
	// virtio-serial otherwise), "vsock" or "virtio-serial".
	Transport string `toml:"transport"`
	// VsockPort is the agent's vsock port (default 1024).
	VsockPort uint32 `toml:"vsock_port"`
	// BootTimeout bounds VM start until the agent answers (default "60s").
	BootTimeout Duration `toml:"boot_timeout"`
	// PullTimeout bounds the in-guest image pull (default "10m").
	PullTimeout Duration `toml:"pull_timeout"`
}

// NetworkConfig is the guest's network.
type NetworkConfig struct {
	// Mode is "user" (default: QEMU user-mode networking) or "none" (no
	// guest network device at all).
	Mode string `toml:"mode"`
	// Unrestricted lets the guest open connections to any address the host
	// can reach. Default false: the guest reaches only Forwards. Only for
	// mode "user".
	Unrestricted bool `toml:"unrestricted"`
	// Forwards are host "ip:port" endpoints (typically a registry or a KBS
	// on the host's loopback) the guest may reach; image references and
	// KBS URLs naming one are dialed through its forward. At most
	// forward.MaxForwards (100). With mode "user" each gets a guest address
	// 10.0.2.100, 10.0.2.101, ... with the same port, through a QEMU
	// guestfwd. With mode "none" (and always on Cloud Hypervisor) each
	// guest connection is carried over the agent transport instead, and
	// the shim dials the endpoint (transport/forward).
	Forwards []string `toml:"forwards"`
}

// RegistryConfig is how the guest reaches registries.
type RegistryConfig struct {
	// Insecure lists registry hosts ("host:port") reached over plain HTTP.
	// All others use TLS.
	Insecure []string `toml:"insecure"`
	// CAFiles are PEM files with extra CAs trusted for registry TLS.
	CAFiles []string `toml:"ca_files"`
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q: want e.g. \"30s\" or \"5m\"", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText formats the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// LoadConfig reads the TOML config at path. An empty path reads
// DefaultConfigPath if it exists and uses the built-in defaults otherwise.
// Unknown keys are an error naming the key, so a typo never silently falls
// back to a default.
func LoadConfig(path string) (*Config, error) {
	cfg := &Config{}
	explicit := path != ""
	if !explicit {
		path = DefaultConfigPath
	}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		dec := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields()
		if err := dec.Decode(cfg); err != nil {
			var sm *toml.StrictMissingError
			if errors.As(err, &sm) {
				return nil, fmt.Errorf("shim config %s: unknown key(s):\n%s", path, sm.String())
			}
			var de *toml.DecodeError
			if errors.As(err, &de) {
				row, col := de.Position()
				return nil, fmt.Errorf("shim config %s: line %d column %d: %v", path, row, col, de)
			}
			return nil, fmt.Errorf("shim config %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist) && !explicit:
	default:
		return nil, fmt.Errorf("read shim config: %w", err)
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("shim config %s: %w", path, err)
	}
	return cfg, nil
}

// setDefaults fills zero values and validates what can be checked without
// touching the guest files (the VMM config validates those at Create).
func (c *Config) setDefaults() error {
	h := &c.Hypervisor
	kind, err := vmm.ParseKind(h.VMM)
	if err != nil {
		return fmt.Errorf("hypervisor.vmm %q: want \"qemu\" or \"cloud-hypervisor\"", h.VMM)
	}
	h.VMM = string(kind)
	if h.Binary == "" {
		h.Binary = "qemu-system-x86_64"
		if kind == vmm.KindCloudHypervisor {
			h.Binary = cloudhypervisor.DefaultBinary
		}
	}
	if h.Accel == "" {
		h.Accel = string(vmm.AccelAuto)
	}
	switch vmm.Accel(h.Accel) {
	case vmm.AccelAuto, vmm.AccelKVM, vmm.AccelTCG:
	default:
		return fmt.Errorf("hypervisor.accel %q: want \"auto\", \"kvm\" or \"tcg\"", h.Accel)
	}
	if h.VCPUs == 0 {
		h.VCPUs = 1
	}
	if h.VCPUs < 1 || h.VCPUs > vmm.MaxVCPUs {
		return fmt.Errorf("hypervisor.vcpus = %d: want 1 to %d (0 means the default, 1)", h.VCPUs, vmm.MaxVCPUs)
	}
	if h.MemoryMiB == 0 {
		h.MemoryMiB = 512
	}
	if h.MemoryMiB < MinMemoryMiB {
		return fmt.Errorf("hypervisor.memory_mib = %d: want at least %d (0 means the default, 512); the guest kernel, its initramfs and the container rootfs all live in guest RAM, and below %d MiB the Coffer guest does not boot", h.MemoryMiB, MinMemoryMiB, MinMemoryMiB)
	}
	if h.MaxVCPUs == 0 {
		h.MaxVCPUs = min(runtime.NumCPU(), vmm.MaxVCPUs)
	}
	if h.MaxVCPUs < h.VCPUs || h.MaxVCPUs > vmm.MaxVCPUs {
		return fmt.Errorf("hypervisor.max_vcpus = %d: want %d (vcpus) to %d", h.MaxVCPUs, h.VCPUs, vmm.MaxVCPUs)
	}
	if h.MaxMemoryMiB == 0 {
		h.MaxMemoryMiB = max(16384, h.MemoryMiB)
	}
	if h.MaxMemoryMiB < h.MemoryMiB {
		return fmt.Errorf("hypervisor.max_memory_mib = %d is below memory_mib = %d: raise it (it caps pod VMs sized from container limits)", h.MaxMemoryMiB, h.MemoryMiB)
	}
	if h.TEE == "" {
		h.TEE = string(vmm.TEENone)
	}
	switch vmm.TEEKind(h.TEE) {
	case vmm.TEENone, vmm.TEESim, vmm.TEESNP, vmm.TEETDX:
	default:
		return fmt.Errorf("hypervisor.tee %q: want \"none\", \"sim\", \"snp\" or \"tdx\"", h.TEE)
	}
	if h.GuestDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("locate shim binary for the default guest_dir: %w", err)
		}
		h.GuestDir = filepath.Join(filepath.Dir(exe), "..", "guest")
	}
	if h.KernelPath == "" {
		h.KernelPath = filepath.Join(h.GuestDir, "vmlinuz")
	}
	if h.InitrdPath == "" {
		h.InitrdPath = filepath.Join(h.GuestDir, "initrd.img")
	}

	a := &c.Agent
	if a.Transport == "" {
		a.Transport = string(transport.KindAuto)
	}
	switch transport.Kind(a.Transport) {
	case transport.KindAuto, transport.KindVsock, transport.KindVirtioSerial, transport.KindHybridVsock:
	default:
		return fmt.Errorf("agent.transport %q: want \"auto\", \"vsock\", \"virtio-serial\" or (Cloud Hypervisor) \"hybrid-vsock\"", a.Transport)
	}
	if a.VsockPort == 0 {
		a.VsockPort = transport.DefaultVsockPort
	}
	if a.BootTimeout == 0 {
		a.BootTimeout = Duration(60 * time.Second)
	}
	if a.PullTimeout == 0 {
		a.PullTimeout = Duration(10 * time.Minute)
	}
	if a.BootTimeout < 0 {
		return fmt.Errorf("agent.boot_timeout = %s: want a positive duration such as \"60s\"", time.Duration(a.BootTimeout))
	}
	if a.PullTimeout < 0 {
		return fmt.Errorf("agent.pull_timeout = %s: want a positive duration such as \"10m\"", time.Duration(a.PullTimeout))
	}

	if err := c.Attestation.setDefaults(vmm.TEEKind(h.TEE)); err != nil {
		return err
	}

	n := &c.Network
	if n.Mode == "" {
		n.Mode = "user"
	}
	if n.Mode != "user" && n.Mode != "none" {
		return fmt.Errorf("network.mode %q: want \"user\" or \"none\"", n.Mode)
	}
	for _, f := range n.Forwards {
		host, port, err := net.SplitHostPort(f)
		if err != nil || net.ParseIP(host) == nil {
			return fmt.Errorf("network.forwards entry %q: want a host \"ip:port\" such as \"127.0.0.1:5000\"", f)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("network.forwards entry %q: port must be 1-65535", f)
		}
	}
	if len(n.Forwards) > forward.MaxForwards {
		return fmt.Errorf("network.forwards has %d entries, at most %d are supported", len(n.Forwards), forward.MaxForwards)
	}
	if n.Mode == "none" && n.Unrestricted {
		return fmt.Errorf("network.unrestricted = true needs network.mode = \"user\": with mode \"none\" the guest has no network and reaches only network.forwards")
	}
	return c.checkVMMCombination(kind)
}

// checkVMMCombination refuses, at config load, settings the chosen VMM
// cannot do (docs/cloud-hypervisor.md).
func (c *Config) checkVMMCombination(kind vmm.Kind) error {
	h, a, n := &c.Hypervisor, &c.Agent, &c.Network
	if kind == vmm.KindQEMU {
		if a.Transport == string(transport.KindHybridVsock) {
			return fmt.Errorf("agent.transport \"hybrid-vsock\" is Cloud Hypervisor's: use \"auto\", \"vsock\" or \"virtio-serial\" with vmm \"qemu\"")
		}
		if h.IGVMPath != "" {
			return fmt.Errorf("hypervisor.igvm_path is only used with vmm \"cloud-hypervisor\" and tee \"snp\": drop it")
		}
		return nil
	}
	switch a.Transport {
	case string(transport.KindAuto), string(transport.KindHybridVsock):
		a.Transport = string(transport.KindHybridVsock)
	default:
		return fmt.Errorf("agent.transport %q: Cloud Hypervisor has no virtio-serial or vhost-vsock agent port; use \"auto\" or \"hybrid-vsock\"", a.Transport)
	}
	if h.Accel == string(vmm.AccelTCG) {
		return fmt.Errorf("hypervisor.accel \"tcg\": Cloud Hypervisor needs KVM; use \"kvm\" or \"auto\", or vmm \"qemu\"")
	}
	if n.Mode == "user" {
		return fmt.Errorf("network.mode \"user\" (the default): Cloud Hypervisor has no user-mode network; set network.mode = \"none\" (network.forwards then reach the host over the agent's hybrid vsock), or use vmm \"qemu\"")
	}
	switch vmm.TEEKind(h.TEE) {
	case vmm.TEESim:
		return fmt.Errorf("hypervisor.tee \"sim\" is delivered through QEMU's fw_cfg, which Cloud Hypervisor lacks: use vmm \"qemu\"")
	case vmm.TEESNP:
		if h.IGVMPath == "" || h.FirmwarePath != "" {
			return fmt.Errorf("hypervisor.tee \"snp\" with Cloud Hypervisor needs hypervisor.igvm_path (an IGVM image) and no firmware_path")
		}
	case vmm.TEETDX:
		if h.FirmwarePath == "" {
			return fmt.Errorf("hypervisor.tee \"tdx\" with Cloud Hypervisor needs hypervisor.firmware_path (TDVF or TD-Shim)")
		}
		if c.Attestation.InitData != "" {
			return fmt.Errorf("attestation.init_data with tee \"tdx\": Cloud Hypervisor cannot set MRCONFIGID, so init-data cannot be bound at launch; use vmm \"qemu\"")
		}
	}
	if h.IGVMPath != "" && vmm.TEEKind(h.TEE) != vmm.TEESNP {
		return fmt.Errorf("hypervisor.igvm_path is set but hypervisor.tee is %q: it is only for \"snp\"", h.TEE)
	}
	return nil
}

// DefaultAttestationDeadline is attestation.deadline's default.
const DefaultAttestationDeadline = 30 * time.Second

func (a *AttestationConfig) setDefaults(tee vmm.TEEKind) error {
	if a.Required == nil {
		req := tee != vmm.TEENone
		a.Required = &req
	}
	if a.Deadline == 0 {
		a.Deadline = Duration(DefaultAttestationDeadline)
	}
	if a.Deadline < 0 {
		return fmt.Errorf("attestation.deadline = %s: want a positive duration such as \"30s\"", time.Duration(a.Deadline))
	}
	if a.InitData != "" {
		if _, err := os.Stat(a.InitData); err != nil {
			return fmt.Errorf("attestation.init_data: %w", err)
		}
	}
	if tee == vmm.TEESim && a.SimChainDir == "" {
		return fmt.Errorf("hypervisor.tee = \"sim\" needs attestation.sim_chain_dir: the directory of the sim TEE's test-only signing chain (create one with `ccctl attest sim-chain DIR`)")
	}
	return nil
}
