package cloudhypervisor

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cofferhq/coffer/vmm"
	"github.com/containerd/errdefs"
)

// MaxVCPUs is the largest vCPU count Cloud Hypervisor takes: its
// cpus.max_vcpus is an 8-bit count.
const MaxVCPUs = 255

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
//   - Network.Tap with neither File (passed with vm.add-net) nor Name, or
//     with a NetNS that does not exist (errdefs.ErrNotFound).
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
	v.addErr(vmm.CheckName(c.Name))
	v.addErr(vmm.CheckStateDir(c.StateDir, "API socket", c.APISocketPath()))
	v.addErr(vmm.CheckBinary("cloud-hypervisor", c.BinaryPath(), "install a Cloud Hypervisor release binary (Debian has no package) or set hypervisor.binary in the shim config"))
	v.addErr(vmm.CheckVCPUs(c.VCPUs, MaxVCPUs))
	v.addErr(vmm.CheckMemory(c.MemoryMiB))
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
	if t.File == nil && t.Name == "" {
		v.add(errdefs.ErrInvalidArgument, "Network.Tap has neither File nor Name: pass the open tap queue in File (sent with vm.add-net), or name a tap in cloud-hypervisor's network namespace such as \"cctap0\"")
	}
	if t.NetNS != "" {
		if _, err := os.Stat(t.NetNS); err != nil {
			v.add(errdefs.ErrNotFound, "Network.Tap.NetNS %s, the network namespace to start cloud-hypervisor in: %v: the pod's namespace is gone (was the pod removed?); recreate the pod", t.NetNS, err)
		}
	}
	v.addErr(vmm.CheckTapFields(t))
}

func (v *validator) checkAgent(a *vmm.Agent) {
	switch a.Kind {
	case "":
		if a.GuestCID != 0 || a.SocketPath != "" {
			v.add(errdefs.ErrInvalidArgument, "Agent.Kind is empty but GuestCID or SocketPath is set: set kind %q", vmm.AgentHybridVsock)
		}
	case vmm.AgentHybridVsock:
		v.addErr(vmm.CheckGuestCID(a.GuestCID))
		v.addErr(vmm.CheckAgentSocketPath(a.SocketPath, "/run/cc/<short-hash>/vsock.sock"))
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
	v.addErr(vmm.CheckTEESections(t))
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
	v.addErr(vmm.CheckSNPHostData(s.HostData))
}
