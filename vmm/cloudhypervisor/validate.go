package cloudhypervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cofferhq/coffer/vmm"
	"github.com/containerd/errdefs"
)

// MaxVCPUs is the largest vCPU count Cloud Hypervisor takes: its
// cpus.max_vcpus is an 8-bit count.
const MaxVCPUs = 255

// snpHostDataSize is the SEV-SNP HOST_DATA size, bytes.
const snpHostDataSize = 32

// hypervisorDevices returns the host devices Cloud Hypervisor runs guests
// on: it has no software CPU emulation, so one of them is needed.
func hypervisorDevices() []string { return []string{"/dev/kvm", "/dev/mshv"} }

// Validate checks the whole Config, including that its files exist, that a
// hypervisor device is usable, and that Cloud Hypervisor can do what it
// asks. It returns nil or one error joining (errors.Join) one line per
// problem, each naming the field, the value found, what is wanted and how to
// fix it. Each line matches errdefs.ErrInvalidArgument (bad value or a
// combination Cloud Hypervisor cannot do), errdefs.ErrNotFound (missing
// file or binary) or errdefs.ErrUnavailable (missing host capability) via
// errors.Is.
//
// Refused combinations, with the reason:
//   - Accel tcg: Cloud Hypervisor needs KVM or MSHV.
//   - Network.Mode user, and guest forwards: no user-mode network; use tap.
//   - Agent kinds vsock (vhost-vsock) and virtio-serial: Cloud Hypervisor
//     has neither; use vmm.AgentHybridVsock.
//   - FWCfg entries and TEE kind sim: fw_cfg items are a QEMU feature here
//     (the API schema has no fw_cfg items), and the sim TEE is delivered
//     through them.
//   - TEE tdx without Firmware (TDVF or TD-Shim), with TDX.MRConfigID or
//     TDX.QuoteGenerationSocket: the API has no MRCONFIGID or quote
//     generation setting.
//   - TEE snp without IGVM, with Firmware, or with SNP Policy, CBitPos,
//     ReducedPhysBits or KernelHashes: the policy lives in the IGVM image
//     and the API has none of these settings. SNP.HostData is passed.
//   - IGVM without TEE snp; SharedMemory with a TEE.
func (c *Config) Validate() error {
	return c.validate(hypervisorDevices())
}

// validate is Validate with the hypervisor devices to look for.
func (c *Config) validate(devices []string) error {
	v := &validator{}
	v.checkBasics(c, devices)
	v.checkFiles(c)
	v.checkNetwork(c)
	v.checkAgent(&c.Agent)
	v.checkTEE(c)
	if len(c.FWCfg) > 0 {
		v.add(errdefs.ErrInvalidArgument, "FWCfg has %d entries, but Cloud Hypervisor's API has no fw_cfg items: drop them, or use vmm \"qemu\"", len(c.FWCfg))
	}
	if len(v.errs) == 0 {
		return nil
	}
	return fmt.Errorf("validate cloud-hypervisor vm config %q: %w", c.Name, errors.Join(v.errs...))
}

type validator struct {
	errs []error
}

func (v *validator) add(class error, format string, args ...any) {
	v.errs = append(v.errs, vmm.Errorf(class, format, args...))
}

// addErr keeps err, if any.
func (v *validator) addErr(err error) {
	if err != nil {
		v.errs = append(v.errs, err)
	}
}

func (v *validator) checkBasics(c *Config, devices []string) {
	if strings.TrimSpace(c.Name) == "" {
		v.add(errdefs.ErrInvalidArgument, "Name is empty: set it to the pod's sandbox id")
	}
	switch {
	case c.StateDir == "":
		v.add(errdefs.ErrInvalidArgument, "StateDir is empty: set it to a short per-VM directory such as /run/cc/<short-hash>")
	case !filepath.IsAbs(c.StateDir):
		v.add(errdefs.ErrInvalidArgument, "StateDir %s is relative: use an absolute path such as /run/cc/<short-hash>", c.StateDir)
	default:
		if fi, err := os.Stat(c.StateDir); err != nil || !fi.IsDir() {
			v.add(errdefs.ErrNotFound, "StateDir %s is not an existing directory: create it before starting the VM", c.StateDir)
		}
		v.addErr(vmm.CheckSocketPath("API socket", c.APISocketPath(), "use a shorter StateDir such as /run/cc/<short-hash>"))
	}
	if _, err := exec.LookPath(c.BinaryPath()); err != nil {
		v.add(errdefs.ErrNotFound, "cloud-hypervisor binary %s: %v: install a Cloud Hypervisor release binary (Debian has no package) or set hypervisor.binary in the shim config", c.BinaryPath(), err)
	}
	if c.VCPUs < 1 || c.VCPUs > MaxVCPUs {
		v.add(errdefs.ErrInvalidArgument, "VCPUs is %d, want 1 to %d: set the VM's vCPU count", c.VCPUs, MaxVCPUs)
	}
	if c.MemoryMiB < vmm.MinMemoryMiB {
		v.add(errdefs.ErrInvalidArgument, "MemoryMiB is %d, want at least %d (the guest kernel alone needs more than 64 MiB): use 128 or more", c.MemoryMiB, vmm.MinMemoryMiB)
	}
	switch c.Accel {
	case vmm.AccelTCG:
		v.add(errdefs.ErrInvalidArgument, "Accel is tcg, but Cloud Hypervisor has no software CPU emulation: set accel kvm or auto on a KVM host, or use vmm \"qemu\"")
	case "", vmm.AccelAuto, vmm.AccelKVM:
		if !anyOpens(devices) {
			v.add(errdefs.ErrUnavailable, "Cloud Hypervisor needs %s: none of them opens read-write here: load the kvm module and run as root, or use vmm \"qemu\" with accel tcg", strings.Join(devices, " or "))
		}
	default:
		v.add(errdefs.ErrInvalidArgument, "Accel %q is unknown, want %q or %q", c.Accel, vmm.AccelKVM, vmm.AccelAuto)
	}
}

// anyOpens reports whether one of paths opens read-write.
func anyOpens(paths []string) bool {
	for _, p := range paths {
		if f, err := os.OpenFile(p, os.O_RDWR, 0); err == nil {
			f.Close()
			return true
		}
	}
	return false
}

func (v *validator) checkFiles(c *Config) {
	const guestFix = "run `make guest` or set %s in the shim config"
	v.addErr(vmm.CheckImageFile("kernel", c.Kernel, fmt.Sprintf(guestFix, "kernel_path")))
	v.addErr(vmm.CheckImageFile("initrd", c.Initrd, fmt.Sprintf(guestFix, "initrd_path")))
	if c.Firmware != "" {
		v.addErr(vmm.CheckImageFile("firmware", c.Firmware, "install the firmware image or set firmware_path in the shim config"))
	}
	if c.IGVM != "" {
		v.addErr(vmm.CheckImageFile("igvm", c.IGVM, "build the IGVM image or set igvm_path in the shim config"))
	}
}

func (v *validator) checkNetwork(c *Config) {
	n := &c.Network
	switch n.Mode {
	case "", vmm.NetworkNone:
	case vmm.NetworkTap:
		v.checkTap(n.Tap)
	case vmm.NetworkUser:
		v.add(errdefs.ErrInvalidArgument, "Network.Mode is user, but Cloud Hypervisor has no user-mode (slirp) network: use network mode %q with a host tap device, or %q", vmm.NetworkTap, vmm.NetworkNone)
	default:
		v.add(errdefs.ErrInvalidArgument, "Network.Mode %q is unknown, want %q or %q", n.Mode, vmm.NetworkNone, vmm.NetworkTap)
	}
	if n.Tap != nil && n.Mode != vmm.NetworkTap {
		v.add(errdefs.ErrInvalidArgument, "Network.Tap %q is set but network mode is %q: set mode %q or drop the tap", n.Tap.Name, n.Mode, vmm.NetworkTap)
	}
	if len(n.Forwards) > 0 {
		v.add(errdefs.ErrInvalidArgument, "Network.Forwards has %d entries, but guest forwards are a QEMU user-network feature: route the guest through the tap instead, or use vmm \"qemu\"", len(n.Forwards))
	}
	if n.Restrict {
		v.add(errdefs.ErrInvalidArgument, "Network.Restrict is a QEMU user-network setting: restrict a tap with host firewall rules instead")
	}
}

func (v *validator) checkTap(t *vmm.Tap) {
	if t == nil {
		v.add(errdefs.ErrInvalidArgument, "network mode tap needs Network.Tap: give the host tap device's name")
		return
	}
	if t.File != nil {
		v.add(errdefs.ErrInvalidArgument, "Network.Tap.File is set, but Cloud Hypervisor's vm.create takes a tap by name only (tap file descriptors go over SCM_RIGHTS with vm.add-net, which Coffer does not use): give the tap's name and run cloud-hypervisor in the tap's network namespace")
	}
	if t.Name == "" || len(t.Name) > vmm.MaxInterfaceNameLen || strings.ContainsAny(t.Name, "/ \t\n") {
		v.add(errdefs.ErrInvalidArgument, "Network.Tap.Name %q is not an interface name: use 1 to %d bytes without '/' or spaces, such as \"cctap0\"", t.Name, vmm.MaxInterfaceNameLen)
	}
	if t.MAC != "" {
		if hw, err := net.ParseMAC(t.MAC); err != nil || len(hw) != 6 {
			v.add(errdefs.ErrInvalidArgument, "Network.Tap.MAC %q is not a 6-byte MAC address: use one such as \"52:54:00:12:34:56\", or none for a random one", t.MAC)
		}
	}
	if t.MTU != 0 && (t.MTU < 68 || t.MTU > 65535) {
		v.add(errdefs.ErrInvalidArgument, "Network.Tap.MTU is %d, want 68 to 65535, or 0 for the tap's", t.MTU)
	}
}

func (v *validator) checkAgent(a *vmm.Agent) {
	switch a.Kind {
	case "":
		if a.GuestCID != 0 || a.SocketPath != "" {
			v.add(errdefs.ErrInvalidArgument, "Agent.Kind is empty but GuestCID or SocketPath is set: set kind %q", vmm.AgentHybridVsock)
		}
	case vmm.AgentHybridVsock:
		if a.GuestCID < 3 || a.GuestCID == 0xffffffff {
			v.add(errdefs.ErrInvalidArgument, "Agent.GuestCID is %d, want 3 to 4294967294 (0-2 are reserved, -1 is VMADDR_CID_ANY)", a.GuestCID)
		}
		switch {
		case a.SocketPath == "":
			v.add(errdefs.ErrInvalidArgument, "Agent.SocketPath is empty: set it to the hybrid vsock socket in the state dir, such as /run/cc/<short-hash>/vsock.sock")
		case !filepath.IsAbs(a.SocketPath):
			v.add(errdefs.ErrInvalidArgument, "Agent.SocketPath %s is relative: use an absolute path", a.SocketPath)
		default:
			v.addErr(vmm.CheckSocketPath("Agent.SocketPath", a.SocketPath, "use a shorter path such as /run/cc/<short-hash>/vsock.sock"))
			if fi, err := os.Stat(filepath.Dir(a.SocketPath)); err != nil || !fi.IsDir() {
				v.add(errdefs.ErrNotFound, "Agent.SocketPath %s: directory %s does not exist: create it first", a.SocketPath, filepath.Dir(a.SocketPath))
			}
		}
	case vmm.AgentVsock:
		v.add(errdefs.ErrInvalidArgument, "Agent.Kind is vsock (vhost-vsock), but Cloud Hypervisor has no vhost-vsock device: use kind %q (its virtio-vsock exposed as a host unix socket)", vmm.AgentHybridVsock)
	case vmm.AgentVirtioSerial:
		v.add(errdefs.ErrInvalidArgument, "Agent.Kind is virtio-serial, but Cloud Hypervisor has no virtio-serial ports: use kind %q", vmm.AgentHybridVsock)
	default:
		v.add(errdefs.ErrInvalidArgument, "Agent.Kind %q is unknown, want %q", a.Kind, vmm.AgentHybridVsock)
	}
}

func (v *validator) checkTEE(c *Config) {
	t := &c.TEE
	switch t.Kind {
	case "", vmm.TEENone, vmm.TEETDX, vmm.TEESNP:
	case vmm.TEESim:
		v.add(errdefs.ErrInvalidArgument, "tee sim is delivered through QEMU fw_cfg items, which Cloud Hypervisor's API does not have: use tee %q, %q or %q, or vmm \"qemu\"", vmm.TEENone, vmm.TEESNP, vmm.TEETDX)
		return
	default:
		v.add(errdefs.ErrInvalidArgument, "TEE.Kind %q is unknown, want %q, %q or %q", t.Kind, vmm.TEENone, vmm.TEESNP, vmm.TEETDX)
		return
	}
	if t.SNP != nil && t.Kind != vmm.TEESNP {
		v.add(errdefs.ErrInvalidArgument, "TEE.SNP is set but TEE.Kind is %q: set kind %q or drop the SNP settings", t.Kind, vmm.TEESNP)
	}
	if t.TDX != nil && t.Kind != vmm.TEETDX {
		v.add(errdefs.ErrInvalidArgument, "TEE.TDX is set but TEE.Kind is %q: set kind %q or drop the TDX settings", t.Kind, vmm.TEETDX)
	}
	if t.Sim != nil {
		v.add(errdefs.ErrInvalidArgument, "TEE.Sim is set, but Cloud Hypervisor cannot run the sim TEE: drop it")
	}
	if c.IGVM != "" && t.Kind != vmm.TEESNP {
		v.add(errdefs.ErrInvalidArgument, "IGVM %s is set but TEE.Kind is %q: Coffer passes an IGVM image only for tee %q", c.IGVM, t.Kind, vmm.TEESNP)
	}
	if c.SharedMemory && (t.Kind == vmm.TEETDX || t.Kind == vmm.TEESNP) {
		v.add(errdefs.ErrInvalidArgument, "SharedMemory is set with tee %s, whose guest RAM is private to the guest: drop shared memory (and the vhost-user devices that need it)", t.Kind)
	}
	switch t.Kind {
	case vmm.TEETDX:
		v.checkTDX(c)
	case vmm.TEESNP:
		v.checkSNP(c)
	}
}

func (v *validator) checkTDX(c *Config) {
	if c.Firmware == "" {
		v.add(errdefs.ErrInvalidArgument, "tee tdx needs Firmware (TDVF or TD-Shim, payload.firmware): set firmware_path in the shim config")
	}
	if d := c.TEE.TDX; d != nil {
		if d.MRConfigID != nil {
			v.add(errdefs.ErrInvalidArgument, "TEE.TDX.MRConfigID is set, but Cloud Hypervisor's API has no MRCONFIGID setting, so init-data cannot be bound into a TDX report here: drop it, or use vmm \"qemu\" (QEMU >= 10.1)")
		}
		if d.QuoteGenerationSocket != nil {
			v.add(errdefs.ErrInvalidArgument, "TEE.TDX.QuoteGenerationSocket is set, but Cloud Hypervisor's API has no quote generation setting: drop it (the guest must reach a quote service itself), or use vmm \"qemu\"")
		}
	}
}

func (v *validator) checkSNP(c *Config) {
	if c.IGVM == "" {
		v.add(errdefs.ErrInvalidArgument, "tee snp needs IGVM, the IGVM image Cloud Hypervisor launches SEV-SNP guests from (payload.igvm): set igvm_path in the shim config")
	}
	if c.Firmware != "" {
		v.add(errdefs.ErrInvalidArgument, "Firmware %s is set with tee snp, but Cloud Hypervisor refuses a firmware next to an IGVM image: drop firmware_path (the IGVM image carries the firmware)", c.Firmware)
	}
	s := c.TEE.SNP
	if s == nil {
		return
	}
	if s.Policy != 0 || s.CBitPos != 0 || s.ReducedPhysBits != 0 || s.KernelHashes {
		v.add(errdefs.ErrInvalidArgument, "TEE.SNP sets Policy, CBitPos, ReducedPhysBits or KernelHashes, which Cloud Hypervisor's API does not take (the guest policy is part of the IGVM image): clear them")
	}
	if s.HostData != nil && len(s.HostData) != snpHostDataSize {
		v.add(errdefs.ErrInvalidArgument, "TEE.SNP.HostData is %d bytes, want exactly %d (a SHA-256 digest, such as the init-data digest) or none", len(s.HostData), snpHostDataSize)
	}
}
