package qemu

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/cofferhq/coffer/vmm"
	"github.com/containerd/errdefs"
)

// TapFD is the file descriptor number under which QEMU inherits
// vmm.Tap.File: the first of exec.Cmd.ExtraFiles, after stdin, stdout and
// stderr.
const TapFD = 3

// IDs of the QEMU objects Args creates.
const (
	consoleChardevID = "console"
	agentChardevID   = "agent"
	netdevID         = "net0"
	snpObjectID      = "sev0"
	tdxObjectID      = "tdx0"
	snpMemoryID      = "ram1"
)

// Args returns QEMU's argv (without the binary) for cfg. It builds every
// option from the typed fields and escapes values for QEMU's option parser
// (commas doubled). It does not touch the file system: call cfg.Validate
// first (New does). Its errors, which wrap errdefs.ErrInvalidArgument, cover
// only values it cannot encode.
//
// The command line, in order:
//   - -name, -machine q35 (plus kernel-irqchip=split and
//     confidential-guest-support for TEEs), -accel kvm|tcg (AccelAuto is
//     resolved with vmm.ResolveAccel).
//   - -cpu: "max" under TCG (every feature TCG emulates), "host" under KVM,
//     and "EPYC-v4" for SEV-SNP, the model AMD's own SNP launch scripts use:
//     the SNP firmware checks the guest's CPUID table, and a named model
//     keeps it to features the PSP accepts on Milan and Genoa.
//   - -smp, -m <MiB>M, -nodefaults -no-user-config -nographic -no-reboot
//     (so a guest reboot or poweroff ends QEMU), -bios when Firmware is set,
//     -kernel, -initrd, -append.
//   - The serial console into a file chardev, StateDir/console.log
//     (truncated at start); QMP on StateDir/qmp.sock; -pidfile
//     StateDir/qemu.pid.
//   - Network user: -netdev user with restrict=on|off and one guestfwd per
//     Forward, plus a virtio-net-pci NIC without option ROM.
//   - Network tap: -netdev tap with fd=TapFD when Tap.File is set (Start
//     passes the file), else ifname=<Tap.Name>,script=no,downscript=no;
//     the virtio-net-pci NIC takes mac=<Tap.MAC> and host_mtu=<Tap.MTU>
//     when set.
//   - Agent virtio-serial: virtio-serial-pci with a port named
//     vmm.VirtioSerialPortName on a server socket at Agent.SocketPath;
//     agent vsock: vhost-vsock-pci with guest-cid.
//   - SEV-SNP: RAM from a shared memfd backend and a sev-snp-guest object
//     (cbitpos, reduced-phys-bits, policy, kernel-hashes, host-data as
//     base64). TDX: a tdx-guest object in JSON form (mrconfigid as base64,
//     quote-generation-socket as a vsock address). TEESim adds nothing
//     here: New appends its fw_cfg items (vmm.Config.PrepareSim) to FWCfg. For both real TEEs, QEMU itself turns
//     on iommu_platform for virtio devices, which the guest needs for
//     bounce buffering.
//   - One -fw_cfg per FWCfg entry.
func Args(cfg *vmm.Config) ([]string, error) {
	b := &argBuilder{}
	accel := vmm.ResolveAccel(cfg.Accel)
	if accel != vmm.AccelKVM && accel != vmm.AccelTCG {
		return nil, invalid("accel %q is unknown, want %q, %q or %q", cfg.Accel, vmm.AccelKVM, vmm.AccelTCG, vmm.AccelAuto)
	}

	machine := []string{"q35"}
	cpu := map[vmm.Accel]string{vmm.AccelKVM: "host", vmm.AccelTCG: "max"}[accel]
	var teeArgs []string
	switch cfg.TEE.Kind {
	case "", vmm.TEENone, vmm.TEESim:
	case vmm.TEESNP:
		snp := cfg.TEE.SNP.WithDefaults()
		if snp.HostData != nil && len(snp.HostData) != 32 {
			return nil, invalid("SNP host data is %d bytes, want 32", len(snp.HostData))
		}
		cpu = "EPYC-v4"
		machine = append(machine, "confidential-guest-support="+snpObjectID, "memory-backend="+snpMemoryID)
		obj := []string{"sev-snp-guest", "id=" + snpObjectID,
			"cbitpos=" + strconv.Itoa(snp.CBitPos),
			"reduced-phys-bits=" + strconv.Itoa(snp.ReducedPhysBits),
			fmt.Sprintf("policy=%#x", snp.Policy)}
		if snp.KernelHashes {
			obj = append(obj, "kernel-hashes=on")
		}
		if snp.HostData != nil {
			obj = append(obj, "host-data="+base64.StdEncoding.EncodeToString(snp.HostData))
		}
		teeArgs = []string{
			"-object", fmt.Sprintf("memory-backend-memfd,id=%s,size=%dM,share=true,prealloc=false", snpMemoryID, cfg.MemoryMiB),
			"-object", strings.Join(obj, ","),
		}
	case vmm.TEETDX:
		obj, err := tdxObject(cfg.TEE.TDX)
		if err != nil {
			return nil, err
		}
		machine = append(machine, "kernel-irqchip=split", "confidential-guest-support="+tdxObjectID)
		teeArgs = []string{"-object", obj}
	default:
		return nil, invalid("tee kind %q is unknown", cfg.TEE.Kind)
	}

	b.add("-name", escape(cfg.Name))
	b.add("-machine", strings.Join(machine, ","))
	b.add("-accel", string(accel))
	b.add("-cpu", cpu)
	b.add("-smp", strconv.Itoa(cfg.VCPUs))
	b.add("-m", strconv.Itoa(cfg.MemoryMiB)+"M")
	b.add("-nodefaults", "-no-user-config", "-nographic", "-no-reboot")
	if cfg.Firmware != "" {
		b.add("-bios", cfg.Firmware)
	}
	b.add("-kernel", cfg.Kernel, "-initrd", cfg.Initrd, "-append", cfg.Cmdline)
	b.add("-chardev", "file,id="+consoleChardevID+",path="+escape(cfg.ConsoleLogPath()))
	b.add("-serial", "chardev:"+consoleChardevID)
	b.add("-qmp", "unix:"+escape(cfg.QMPSocketPath())+",server=on,wait=off")
	b.add("-pidfile", cfg.PIDFilePath())

	if err := b.network(&cfg.Network); err != nil {
		return nil, err
	}
	if err := b.agent(&cfg.Agent); err != nil {
		return nil, err
	}
	b.add(teeArgs...)
	for _, e := range cfg.FWCfg {
		switch {
		case e.File != "":
			b.add("-fw_cfg", "name="+escape(e.Name)+",file="+escape(e.File))
		default:
			b.add("-fw_cfg", "name="+escape(e.Name)+",string="+escape(e.String))
		}
	}
	return b.args, nil
}

type argBuilder struct {
	args []string
}

func (b *argBuilder) add(args ...string) { b.args = append(b.args, args...) }

func (b *argBuilder) network(n *vmm.Network) error {
	switch n.Mode {
	case "", vmm.NetworkNone:
		if len(n.Forwards) > 0 {
			return invalid("network mode none cannot have %d forwards", len(n.Forwards))
		}
		return nil
	case vmm.NetworkTap:
		return b.tap(n.Tap)
	case vmm.NetworkUser:
	default:
		return invalid("network mode %q is unknown", n.Mode)
	}
	opts := []string{"user", "id=" + netdevID, "restrict=" + onOff(n.Restrict)}
	for i, f := range n.Forwards {
		if len(f.Command) == 0 {
			return invalid("network forward %d has no command", i)
		}
		rule := fmt.Sprintf("tcp:%s:%d-cmd:%s", f.GuestIP, f.GuestPort, shellJoin(f.Command))
		opts = append(opts, "guestfwd="+escape(rule))
	}
	b.add("-netdev", strings.Join(opts, ","))
	b.add("-device", "virtio-net-pci,netdev="+netdevID+",romfile=")
	return nil
}

// tap adds a tap netdev and its virtio-net NIC: fd=TapFD when the caller
// passes an open tap (QEMU inherits it, see QEMU.Start), else the tap by
// name without QEMU's ifup/ifdown scripts. vhost stays off: it needs
// /dev/vhost-net and KVM.
func (b *argBuilder) tap(t *vmm.Tap) error {
	if t == nil {
		return invalid("network mode tap needs Network.Tap")
	}
	netdev := []string{"tap", "id=" + netdevID}
	switch {
	case t.File != nil:
		netdev = append(netdev, "fd="+strconv.Itoa(TapFD))
	case t.Name != "":
		netdev = append(netdev, "ifname="+escape(t.Name), "script=no", "downscript=no")
	default:
		return invalid("network tap has neither File nor Name")
	}
	device := []string{"virtio-net-pci", "netdev=" + netdevID}
	if t.MAC != "" {
		device = append(device, "mac="+escape(t.MAC))
	}
	if t.MTU != 0 {
		device = append(device, "host_mtu="+strconv.Itoa(t.MTU))
	}
	b.add("-netdev", strings.Join(netdev, ","))
	b.add("-device", strings.Join(append(device, "romfile="), ","))
	return nil
}

func (b *argBuilder) agent(a *vmm.Agent) error {
	switch a.Kind {
	case "":
	case vmm.AgentVirtioSerial:
		b.add("-device", "virtio-serial-pci")
		b.add("-chardev", "socket,id="+agentChardevID+",path="+escape(a.SocketPath)+",server=on,wait=off")
		b.add("-device", "virtserialport,chardev="+agentChardevID+",name="+vmm.VirtioSerialPortName)
	case vmm.AgentVsock:
		b.add("-device", "vhost-vsock-pci,guest-cid="+strconv.FormatUint(uint64(a.GuestCID), 10))
	default:
		return invalid("agent kind %q is unknown", a.Kind)
	}
	return nil
}

// tdxObject returns the tdx-guest object in QEMU's JSON -object syntax, the
// only syntax that can express quote-generation-socket (a SocketAddress).
func tdxObject(c *vmm.TDXConfig) (string, error) {
	type vsock struct {
		Type string `json:"type"`
		CID  string `json:"cid"`
		Port string `json:"port"`
	}
	obj := struct {
		QOMType    string `json:"qom-type"`
		ID         string `json:"id"`
		MRConfigID string `json:"mrconfigid,omitempty"`
		QGS        *vsock `json:"quote-generation-socket,omitempty"`
	}{QOMType: "tdx-guest", ID: tdxObjectID}
	if c != nil {
		if c.MRConfigID != nil {
			if len(c.MRConfigID) != 48 {
				return "", invalid("TDX MRConfigID is %d bytes, want 48", len(c.MRConfigID))
			}
			obj.MRConfigID = base64.StdEncoding.EncodeToString(c.MRConfigID)
		}
		if q := c.QuoteGenerationSocket; q != nil {
			obj.QGS = &vsock{Type: "vsock", CID: strconv.FormatUint(uint64(q.CID), 10), Port: strconv.FormatUint(uint64(q.Port), 10)}
		}
	}
	js, err := json.Marshal(obj)
	if err != nil {
		return "", fmt.Errorf("encode tdx-guest object: %w", err)
	}
	return string(js), nil
}

// escape doubles commas, which QEMU's option parser (QemuOpts) reads as
// option separators, so that v reaches QEMU as one literal value.
func escape(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// shellJoin quotes argv for glib's g_shell_parse_argv, which libslirp uses
// to split a guestfwd "cmd:" string: safe words stay bare, everything else is
// wrapped in single quotes, an embedded quote becoming close-quote,
// backslash-quote, open-quote.
func shellJoin(argv []string) string {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = shellQuote(a)
	}
	return strings.Join(quoted, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_@%+=:,./-", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("build qemu arguments: "+format+": %w", append(args, errdefs.ErrInvalidArgument)...)
}
