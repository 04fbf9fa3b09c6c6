package vmm

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/containerd/errdefs"
)

// maxFWCfgNameLen is the longest fw_cfg file name in bytes: QEMU's
// FW_CFG_MAX_FILE_PATH is 56 including the NUL.
const maxFWCfgNameLen = 55

// snpHostDataSize is the SEV-SNP HOST_DATA size, bytes.
const snpHostDataSize = 32

// vhostVsockDevice is the host device QEMU's vhost-vsock-pci needs.
const vhostVsockDevice = "/dev/vhost-vsock"

// slirpNet is QEMU's default user-mode network.
var slirpNet = netip.MustParsePrefix("10.0.2.0/24")

// classedError is an error whose message is exactly msg and which matches an
// errdefs class through errors.Is, so the message stays free of a trailing
// ": invalid argument".
type classedError struct {
	msg   string
	class error
}

func (e *classedError) Error() string { return e.msg }
func (e *classedError) Unwrap() error { return e.class }

// Validate checks the whole Config, including that its files exist and that
// the host can provide the chosen accelerator and agent transport. It returns
// nil or one error joining (errors.Join) one line per problem; each names the
// field, the value found, what is wanted and how to fix it. Each line matches
// errdefs.ErrInvalidArgument (bad value), errdefs.ErrNotFound (missing file or
// binary) or errdefs.ErrUnavailable (missing host capability) via errors.Is.
//
// The messages name the shim configuration keys kernel_path, initrd_path and
// firmware_path, and the `make guest` target that builds the guest kernel
// and initrd.
func (c *Config) Validate() error {
	v := &validator{}
	v.checkBasics(c)
	v.checkFiles(c)
	accel := v.checkAccel(c)
	v.checkNetwork(&c.Network)
	v.checkAgent(&c.Agent)
	v.checkTEE(c, accel)
	v.checkFWCfg(c.FWCfg)
	if len(v.errs) == 0 {
		return nil
	}
	return fmt.Errorf("validate vm config %q: %w", c.Name, errors.Join(v.errs...))
}

type validator struct {
	errs []error
}

func (v *validator) add(class error, format string, args ...any) {
	v.errs = append(v.errs, &classedError{msg: fmt.Sprintf(format, args...), class: class})
}

func (v *validator) checkBasics(c *Config) {
	v.checkName(c.Name)
	v.checkStateDir(c.StateDir, "QMP socket", c.QMPSocketPath())
	v.checkBinary("qemu", c.BinaryPath(), "install qemu-system-x86 (apt-get install qemu-system-x86) or set the QEMU binary path")
	v.checkVCPUs(c.VCPUs, MaxVCPUs)
	v.checkMemory(c.MemoryMiB)
}

func (v *validator) checkName(name string) {
	if strings.TrimSpace(name) == "" {
		v.add(errdefs.ErrInvalidArgument, "Name is empty: set it to the pod's sandbox id")
	} else if strings.ContainsFunc(name, isControl) {
		v.add(errdefs.ErrInvalidArgument, "Name %q contains control characters: use printable characters only", name)
	}
}

// checkStateDir checks the state directory and, when it is absolute, that
// the control socket in it fits a unix socket path.
func (v *validator) checkStateDir(dir, socketWhat, socketPath string) {
	switch {
	case dir == "":
		v.add(errdefs.ErrInvalidArgument, "StateDir is empty: set it to a short per-VM directory such as /run/cc/<short-hash>")
	case !filepath.IsAbs(dir):
		v.add(errdefs.ErrInvalidArgument, "StateDir %s is relative: use an absolute path such as /run/cc/<short-hash>", dir)
	default:
		if fi, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			v.add(errdefs.ErrNotFound, "StateDir %s: no such directory: create it before starting the VM", dir)
		} else if err != nil {
			v.add(errdefs.ErrInvalidArgument, "StateDir: %v: fix its permissions or choose another directory", err)
		} else if !fi.IsDir() {
			v.add(errdefs.ErrInvalidArgument, "StateDir %s is not a directory: point it at a per-VM directory", dir)
		}
		v.checkSocketPath(socketWhat, socketPath, "use a shorter StateDir such as /run/cc/<short-hash>")
	}
}

func (v *validator) checkBinary(what, path, fix string) {
	if _, err := exec.LookPath(path); err != nil {
		v.add(errdefs.ErrNotFound, "%s binary %s: %v: %s", what, path, err, fix)
	}
}

func (v *validator) checkVCPUs(n, max int) {
	if n < 1 || n > max {
		v.add(errdefs.ErrInvalidArgument, "VCPUs is %d, want 1 to %d: set the VM's vCPU count", n, max)
	}
}

func (v *validator) checkMemory(mib int) {
	if mib < MinMemoryMiB {
		v.add(errdefs.ErrInvalidArgument, "MemoryMiB is %d, want at least %d (the guest kernel alone needs more than 64 MiB): use 128 or more", mib, MinMemoryMiB)
	}
}

func (v *validator) checkSocketPath(what, path, fix string) {
	if len(path) > MaxSocketPathLen {
		v.add(errdefs.ErrInvalidArgument, "%s path %s is %d bytes, longer than the %d-byte limit of a unix socket path: %s", what, path, len(path), MaxSocketPathLen, fix)
	}
}

// checkFiles checks the kernel, initrd and firmware images.
func (v *validator) checkFiles(c *Config) {
	const guestFix = "run `make guest` or set %s in the shim config"
	v.checkImage("kernel", c.Kernel, fmt.Sprintf(guestFix, "kernel_path"))
	v.checkImage("initrd", c.Initrd, fmt.Sprintf(guestFix, "initrd_path"))
	if c.Firmware != "" {
		v.checkImage("firmware", c.Firmware, "install the firmware image or set firmware_path in the shim config")
	}
}

// checkImage checks that path names an existing regular file.
func (v *validator) checkImage(what, path, fix string) {
	if path == "" {
		v.add(errdefs.ErrInvalidArgument, "%s path is empty: %s", what, fix)
		return
	}
	if !filepath.IsAbs(path) {
		v.add(errdefs.ErrInvalidArgument, "%s %s is a relative path, want an absolute one (QEMU resolves it against the shim's working directory): %s", what, path, fix)
		return
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		v.add(errdefs.ErrNotFound, "%s %s: no such file: %s", what, path, fix)
	case err != nil:
		v.add(errdefs.ErrInvalidArgument, "%s %s: %v: %s", what, path, err, fix)
	case !fi.Mode().IsRegular():
		v.add(errdefs.ErrInvalidArgument, "%s %s is not a regular file (mode %s): %s", what, path, fi.Mode(), fix)
	}
}

// checkAccel checks Accel and returns the accelerator it resolves to.
func (v *validator) checkAccel(c *Config) Accel {
	switch c.Accel {
	case "", AccelAuto, AccelTCG:
	case AccelKVM:
		if !kvmUsable(kvmDevice) {
			_, err := os.OpenFile(kvmDevice, os.O_RDWR, 0)
			v.add(errdefs.ErrUnavailable, "accel kvm: %v: load the kvm module and give this user access to %s, or use accel tcg or auto", err, kvmDevice)
		}
	default:
		v.add(errdefs.ErrInvalidArgument, "Accel %q is unknown, want %q, %q or %q", c.Accel, AccelKVM, AccelTCG, AccelAuto)
	}
	return ResolveAccel(c.Accel)
}

func (v *validator) checkNetwork(n *Network) {
	switch n.Mode {
	case "", NetworkNone:
		if len(n.Forwards) > 0 {
			v.add(errdefs.ErrInvalidArgument, "Network.Forwards has %d entries but network mode is none: set mode %q or drop the forwards", len(n.Forwards), NetworkUser)
		}
		if n.Restrict {
			v.add(errdefs.ErrInvalidArgument, "Network.Restrict is set but network mode is none: set mode %q or clear Restrict", NetworkUser)
		}
		return
	case NetworkTap:
		v.checkTap(n)
		return
	case NetworkUser:
	default:
		v.add(errdefs.ErrInvalidArgument, "Network.Mode %q is unknown, want %q, %q or %q", n.Mode, NetworkNone, NetworkUser, NetworkTap)
		return
	}
	if n.Tap != nil {
		v.add(errdefs.ErrInvalidArgument, "Network.Tap %q is set but network mode is %q: set mode %q or drop the tap", n.Tap.Name, n.Mode, NetworkTap)
	}
	seen := map[string]bool{}
	for i, f := range n.Forwards {
		v.checkForward(i, &f, seen)
	}
}

// checkTap checks a NetworkTap network: a tap given by open file or by
// name, a MAC and MTU QEMU accepts, and none of the user-network settings.
func (v *validator) checkTap(n *Network) {
	if len(n.Forwards) > 0 || n.Restrict {
		v.add(errdefs.ErrInvalidArgument, "Network.Forwards and Network.Restrict are user-network settings but network mode is %q: drop them (filter a tap on the host instead)", NetworkTap)
	}
	t := n.Tap
	if t == nil {
		v.add(errdefs.ErrInvalidArgument, "network mode %q needs Network.Tap: give the open tap file (vmm/tapnet Setup) or the tap's name", NetworkTap)
		return
	}
	if t.File == nil && t.Name == "" {
		v.add(errdefs.ErrInvalidArgument, "Network.Tap has neither File nor Name: give the open tap file (vmm/tapnet Setup) or the tap's name")
	}
	v.checkTapFields(t)
}

// checkTapFields checks a tap's Name (when set), MAC and MTU.
func (v *validator) checkTapFields(t *Tap) {
	if len(t.Name) > MaxInterfaceNameLen || strings.ContainsAny(t.Name, "/ ,\t\n") {
		v.add(errdefs.ErrInvalidArgument, "Network.Tap.Name %q is not an interface name: use at most %d bytes without '/', ',' or spaces, such as \"tap0_cc\"", t.Name, MaxInterfaceNameLen)
	}
	if t.MAC != "" {
		if mac, err := net.ParseMAC(t.MAC); err != nil || len(mac) != 6 {
			v.add(errdefs.ErrInvalidArgument, "Network.Tap.MAC %q is not a 6-byte MAC address: use one such as \"0a:58:0a:58:00:05\", or none for the VMM's default", t.MAC)
		} else if mac[0]&1 != 0 {
			v.add(errdefs.ErrInvalidArgument, "Network.Tap.MAC %s is a multicast address (lowest bit of the first byte set): use a unicast one such as \"0a:58:0a:58:00:05\"", t.MAC)
		}
	}
	if t.MTU != 0 && (t.MTU < 68 || t.MTU > 65535) {
		v.add(errdefs.ErrInvalidArgument, "Network.Tap.MTU is %d, want 68 to 65535 bytes, or 0 to advertise none", t.MTU)
	}
}

func (v *validator) checkForward(i int, f *Forward, seen map[string]bool) {
	ip, err := netip.ParseAddr(f.GuestIP)
	switch {
	case err != nil || !ip.Is4():
		v.add(errdefs.ErrInvalidArgument, "Network.Forwards[%d].GuestIP %q is not an IPv4 address: use one in %s such as 10.0.2.100", i, f.GuestIP, slirpNet)
	case !slirpNet.Contains(ip):
		v.add(errdefs.ErrInvalidArgument, "Network.Forwards[%d].GuestIP %s is outside QEMU's user network %s: use an address such as 10.0.2.100", i, ip, slirpNet)
	default:
		switch ip.As4()[3] {
		case 0, 2, 3, 255:
			v.add(errdefs.ErrInvalidArgument, "Network.Forwards[%d].GuestIP %s is reserved by QEMU's user network (network, host 10.0.2.2, DNS 10.0.2.3, broadcast): use an address such as 10.0.2.100", i, ip)
		}
	}
	if f.GuestPort < 1 || f.GuestPort > 65535 {
		v.add(errdefs.ErrInvalidArgument, "Network.Forwards[%d].GuestPort is %d, want 1 to 65535", i, f.GuestPort)
	}
	key := fmt.Sprintf("%s:%d", f.GuestIP, f.GuestPort)
	if seen[key] {
		v.add(errdefs.ErrInvalidArgument, "Network.Forwards[%d] repeats guest address %s: each address can forward to one command", i, key)
	}
	seen[key] = true
	if len(f.Command) == 0 || f.Command[0] == "" {
		v.add(errdefs.ErrInvalidArgument, "Network.Forwards[%d].Command is empty: give the host command's argv, for example [\"nc\", \"127.0.0.1\", \"5000\"]", i)
	}
	for _, arg := range f.Command {
		if strings.ContainsRune(arg, 0) {
			v.add(errdefs.ErrInvalidArgument, "Network.Forwards[%d].Command argument %q contains a NUL byte", i, arg)
		}
	}
}

func (v *validator) checkAgent(a *Agent) {
	switch a.Kind {
	case "":
		if a.GuestCID != 0 || a.SocketPath != "" {
			v.add(errdefs.ErrInvalidArgument, "Agent.Kind is empty but GuestCID or SocketPath is set: set kind %q or %q", AgentVsock, AgentVirtioSerial)
		}
	case AgentVsock:
		v.checkGuestCID(a.GuestCID)
		if a.SocketPath != "" {
			v.add(errdefs.ErrInvalidArgument, "Agent.SocketPath %s is set but agent kind is vsock: clear it, or use kind %q", a.SocketPath, AgentVirtioSerial)
		}
		if _, err := os.Stat(vhostVsockDevice); err != nil {
			v.add(errdefs.ErrUnavailable, "agent vsock needs %s: %v: run `modprobe vhost_vsock`, or use agent kind %q", vhostVsockDevice, err, AgentVirtioSerial)
		}
	case AgentVirtioSerial:
		if a.GuestCID != 0 {
			v.add(errdefs.ErrInvalidArgument, "Agent.GuestCID %d is set but agent kind is virtio-serial: clear it, or use kind %q", a.GuestCID, AgentVsock)
		}
		v.checkAgentSocketPath(a.SocketPath, "/run/cc/<short-hash>/agent.sock")
	default:
		v.add(errdefs.ErrInvalidArgument, "Agent.Kind %q is unknown, want %q or %q", a.Kind, AgentVsock, AgentVirtioSerial)
	}
}

func (v *validator) checkGuestCID(cid uint32) {
	if cid < 3 || cid == 0xffffffff {
		v.add(errdefs.ErrInvalidArgument, "Agent.GuestCID is %d, want 3 to 4294967294 (0-2 are reserved, -1 is VMADDR_CID_ANY)", cid)
	}
}

// checkAgentSocketPath checks a host-side agent socket path: absolute, short
// enough, in an existing directory. example is a good path, for the fixes.
func (v *validator) checkAgentSocketPath(path, example string) {
	switch {
	case path == "":
		v.add(errdefs.ErrInvalidArgument, "Agent.SocketPath is empty: set it to a unix socket path in the state dir, such as %s", example)
	case !filepath.IsAbs(path):
		v.add(errdefs.ErrInvalidArgument, "Agent.SocketPath %s is relative: use an absolute path", path)
	default:
		v.checkSocketPath("Agent.SocketPath", path, "use a shorter path such as "+example)
		if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
			v.add(errdefs.ErrNotFound, "Agent.SocketPath %s: directory %s does not exist: create it first", path, filepath.Dir(path))
		}
	}
}

// checkTEE checks the TEE settings against the resolved accelerator.
func (v *validator) checkTEE(c *Config, accel Accel) {
	t := &c.TEE
	kind := t.Kind
	switch kind {
	case "", TEENone, TEESim, TEESNP, TEETDX:
	default:
		v.add(errdefs.ErrInvalidArgument, "TEE.Kind %q is unknown, want %q, %q, %q or %q", kind, TEENone, TEESim, TEESNP, TEETDX)
		return
	}
	v.checkTEESections(t)
	if t.Sim != nil && kind != TEESim {
		v.add(errdefs.ErrInvalidArgument, "TEE.Sim is set but TEE.Kind is %q: set kind %q or drop the sim settings", kind, TEESim)
	}
	if kind == TEESim {
		v.checkSim(c)
	}
	if kind != TEESNP && kind != TEETDX {
		return
	}
	firmware := map[TEEKind]string{TEESNP: "the AmdSevX64 OVMF build", TEETDX: "TDVF, the IntelTdx OVMF build"}[kind]
	if c.Firmware == "" {
		v.add(errdefs.ErrInvalidArgument, "tee %s needs Firmware (%s, passed as -bios): set firmware_path in the shim config", kind, firmware)
	}
	if accel != AccelKVM {
		how := ""
		if c.Accel == "" || c.Accel == AccelAuto {
			how = " (auto found /dev/kvm unusable, or this host is itself a VM)"
		}
		v.add(errdefs.ErrInvalidArgument, "tee %s needs accel kvm, got %s%s: run on a %s-capable host with KVM and set accel kvm or auto", kind, accel, how, strings.ToUpper(string(kind)))
	}
	if kind == TEESNP && t.SNP != nil {
		s := t.SNP
		if s.Policy != 0 && s.Policy&(1<<17) == 0 {
			v.add(errdefs.ErrInvalidArgument, "TEE.SNP.Policy %#x has bit 17 clear, but the SNP ABI requires it set: use %#x or add 0x20000", s.Policy, DefaultSNPPolicy)
		}
		if s.CBitPos != 0 && (s.CBitPos < 32 || s.CBitPos > 63) {
			v.add(errdefs.ErrInvalidArgument, "TEE.SNP.CBitPos is %d, want 32 to 63 (0 means %d)", s.CBitPos, DefaultCBitPos)
		}
		if s.ReducedPhysBits < 0 || s.ReducedPhysBits > 63 {
			v.add(errdefs.ErrInvalidArgument, "TEE.SNP.ReducedPhysBits is %d, want 1 to 63 (0 means %d)", s.ReducedPhysBits, DefaultReducedPhysBits)
		}
		v.checkSNPHostData(s.HostData)
	}
	if kind == TEETDX && t.TDX != nil {
		if id := t.TDX.MRConfigID; id != nil && len(id) != 48 {
			v.add(errdefs.ErrInvalidArgument, "TEE.TDX.MRConfigID is %d bytes, want exactly 48 (a SHA-384 digest) or none", len(id))
		}
	}
}

// checkTEESections checks that only the kind's own settings are set.
func (v *validator) checkTEESections(t *TEE) {
	if t.SNP != nil && t.Kind != TEESNP {
		v.add(errdefs.ErrInvalidArgument, "TEE.SNP is set but TEE.Kind is %q: set kind %q or drop the SNP settings", t.Kind, TEESNP)
	}
	if t.TDX != nil && t.Kind != TEETDX {
		v.add(errdefs.ErrInvalidArgument, "TEE.TDX is set but TEE.Kind is %q: set kind %q or drop the TDX settings", t.Kind, TEETDX)
	}
}

func (v *validator) checkSNPHostData(b []byte) {
	if b != nil && len(b) != snpHostDataSize {
		v.add(errdefs.ErrInvalidArgument, "TEE.SNP.HostData is %d bytes, want exactly %d (a SHA-256 digest, such as the init-data digest) or none", len(b), snpHostDataSize)
	}
}

// checkSim checks the sim TEE's chain directory, host data and that FWCfg
// leaves the sim's fw_cfg names free.
func (v *validator) checkSim(c *Config) {
	const fix = "set sim_chain_dir in the shim config to a directory written by `ccctl attest sim-chain` (attestation/sim Signer.WriteDir)"
	s := c.TEE.Sim
	switch {
	case s == nil || s.ChainDir == "":
		v.add(errdefs.ErrInvalidArgument, "tee sim needs TEE.Sim.ChainDir, the sim chain directory: %s", fix)
	case !filepath.IsAbs(s.ChainDir):
		v.add(errdefs.ErrInvalidArgument, "TEE.Sim.ChainDir %s is relative, want an absolute path: %s", s.ChainDir, fix)
	default:
		if fi, err := os.Stat(s.ChainDir); errors.Is(err, os.ErrNotExist) {
			v.add(errdefs.ErrNotFound, "TEE.Sim.ChainDir %s: no such directory: %s", s.ChainDir, fix)
		} else if err != nil || !fi.IsDir() {
			v.add(errdefs.ErrInvalidArgument, "TEE.Sim.ChainDir %s is not a readable directory (%v): %s", s.ChainDir, err, fix)
		} else if _, err := sim.LoadReporter(s.ChainDir); err != nil {
			v.add(errdefs.ErrInvalidArgument, "TEE.Sim.ChainDir %s: %v: %s", s.ChainDir, err, fix)
		}
	}
	if s != nil && s.HostData != nil && len(s.HostData) != SimHostDataSize {
		v.add(errdefs.ErrInvalidArgument, "TEE.Sim.HostData is %d bytes, want exactly %d (the init-data digest fitted to HOST_DATA) or none", len(s.HostData), SimHostDataSize)
	}
	reserved := map[string]bool{sim.FWCfgIdentity: true, sim.FWCfgMeasurement: true, sim.FWCfgHostData: true}
	for i, e := range c.FWCfg {
		if reserved[e.Name] {
			v.add(errdefs.ErrInvalidArgument, "FWCfg[%d].Name %q is reserved for the sim TEE, which sets it itself: rename or drop the entry", i, e.Name)
		}
	}
}

func (v *validator) checkFWCfg(entries []FWCfgEntry) {
	seen := map[string]bool{}
	for i, e := range entries {
		switch {
		case !strings.HasPrefix(e.Name, "opt/") || len(e.Name) == len("opt/"):
			v.add(errdefs.ErrInvalidArgument, "FWCfg[%d].Name %q is not under opt/: name it opt/cc/<name> (other fw_cfg names belong to QEMU)", i, e.Name)
		case len(e.Name) > maxFWCfgNameLen:
			v.add(errdefs.ErrInvalidArgument, "FWCfg[%d].Name %q is %d bytes, want at most %d (QEMU's fw_cfg name limit)", i, e.Name, len(e.Name), maxFWCfgNameLen)
		case strings.ContainsFunc(e.Name, isControl):
			v.add(errdefs.ErrInvalidArgument, "FWCfg[%d].Name %q contains control characters", i, e.Name)
		}
		if seen[e.Name] {
			v.add(errdefs.ErrInvalidArgument, "FWCfg[%d].Name %q appears twice: fw_cfg names must be unique", i, e.Name)
		}
		seen[e.Name] = true
		switch {
		case e.File != "" && e.String != "":
			v.add(errdefs.ErrInvalidArgument, "FWCfg[%d] (%s) sets both File and String: set exactly one", i, e.Name)
		case e.File == "" && e.String == "":
			v.add(errdefs.ErrInvalidArgument, "FWCfg[%d] (%s) sets neither File nor String: set exactly one", i, e.Name)
		case e.File != "":
			v.checkImage(fmt.Sprintf("FWCfg[%d] (%s) file", i, e.Name), e.File, "write the file before starting the VM")
		case strings.ContainsRune(e.String, 0):
			v.add(errdefs.ErrInvalidArgument, "FWCfg[%d] (%s) String contains a NUL byte: pass binary data as File", i, e.Name)
		}
	}
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
