// Package sysinit is what the guest agent does first as PID 1: leave the
// initramfs root (SwitchRoot), then mount the kernel file systems, load the
// kernel modules, read the cc.* kernel command line and configure the
// network (Setup). PowerOff ends the VM.
//
// Typical use in the agent's main:
//
//	if !sysinit.RootSwitched() {
//		err := sysinit.SwitchRoot(ctx) // returns only on error
//		… report err, sysinit.PowerOff()
//	}
//	info, err := sysinit.Setup(ctx, sysinit.Options{})
package sysinit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// DefaultLinkTimeout is how long Setup waits for a network interface when
// Options.LinkTimeout is 0.
const DefaultLinkTimeout = 5 * time.Second

// defaultPath is the PATH Setup sets when the kernel passed none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Options configures Setup. The zero value is the normal configuration.
type Options struct {
	// LinkTimeout bounds the wait for a network interface to appear and
	// get its carrier when cc.net is set; DefaultLinkTimeout if 0.
	LinkTimeout time.Duration
	// Hostname, if set, becomes the kernel hostname and is added to
	// /etc/hosts.
	Hostname string
}

// Info describes the system Setup prepared.
type Info struct {
	// Cmdline holds the parsed cc.* kernel parameters; its Net is the
	// fw_cfg item FWCfgNet instead when that is present.
	Cmdline Cmdline
	// KernelRelease is `uname -r` ("6.12.117+deb12-cloud-amd64").
	KernelRelease string
	// Modules has one result per line of the module list, in load order.
	// FailedModules returns the failures; results with NoDevice set are
	// drivers whose hardware this VM lacks.
	Modules []ModuleResult
	// Link is the interface configured from cc.net ("eth0"); "" without cc.net.
	Link string
}

// FailedModules returns the results whose Err is set.
func (i *Info) FailedModules() []ModuleResult {
	var out []ModuleResult
	for _, m := range i.Modules {
		if m.Err != nil {
			out = append(out, m)
		}
	}
	return out
}

// Setup prepares the guest for the agent and runc, in this order:
//
//  1. mounts devtmpfs /dev, proc /proc, sysfs /sys and cgroup2
//     /sys/fs/cgroup (already mounted is fine);
//  2. sets PATH to a standard value if the kernel passed none;
//  3. parses /proc/cmdline (ParseCmdline);
//  4. loads the modules in /lib/modules/<release>/coffer.load in order,
//     then mounts configfs at /sys/kernel/config (for configfs-tsm);
//  5. reads the fw_cfg item FWCfgNet, which replaces cc.net when present
//     (Info.Cmdline.Net holds the one used); without it, cc.net is ignored
//     (Info.Cmdline.Net is nil) when the VM's virtio devices include no
//     network card, which is how the shim starts a VM with network.mode
//     "none";
//  6. sets the hostname if Options.Hostname is set, and writes /etc/hosts;
//  7. brings lo up and, with a network configuration, waits for the first
//     other interface, picks the one with the configured MAC (or gives it
//     that MAC), sets its MTU, adds its addresses, sets it up, adds its
//     routes and the default route, waits for its carrier (IFF_LOWER_UP)
//     and writes /etc/resolv.conf.
//
// A module that fails to load does not fail Setup: it is logged once and
// reported in Info.Modules, and the caller decides whether it matters. A
// module whose driver finds no device (ENODEV: sev-guest and tdx-guest in
// a VM that is not an SEV-SNP or TDX guest) is not a failure: the modules
// are named in one info line and marked NoDevice. Nor is a configfs mount
// that fails: it is logged as a warning, since only configfs-tsm
// attestation needs it.
//
// Setup returns an error naming the step for everything else: a failed
// mount, a bad cc.* key or fw_cfg network item
// (errdefs.ErrInvalidArgument), a missing module list, or a network
// interface that does not appear in time (errdefs.ErrUnavailable, listing
// module failures).
func Setup(ctx context.Context, opts Options) (*Info, error) {
	if opts.LinkTimeout == 0 {
		opts.LinkTimeout = DefaultLinkTimeout
	}
	logger := log.G(ctx)
	if err := mountEarly(); err != nil {
		return nil, fmt.Errorf("system setup: %w", err)
	}
	if err := cgroupMount().do(); err != nil {
		return nil, fmt.Errorf("system setup: %w", err)
	}
	if os.Getenv("PATH") == "" {
		if err := os.Setenv("PATH", defaultPath); err != nil {
			return nil, fmt.Errorf("system setup: set PATH: %w", err)
		}
	}

	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil, fmt.Errorf("system setup: read kernel command line: %w", err)
	}
	cmdline, err := ParseCmdline(string(raw))
	if err != nil {
		return nil, fmt.Errorf("system setup: %w", err)
	}
	info := &Info{Cmdline: cmdline}

	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return nil, fmt.Errorf("system setup: uname: %w", err)
	}
	info.KernelRelease = unix.ByteSliceToString(uts.Release[:])
	start := time.Now()
	info.Modules, err = loadModules(filepath.Join("/lib/modules", info.KernelRelease), finitModule)
	if err != nil {
		return nil, fmt.Errorf("system setup: %w", err)
	}
	for _, m := range info.FailedModules() {
		logger.WithError(m.Err).WithField("module", m.Path).Warn("kernel module failed to load")
	}
	if names := noDeviceModules(info.Modules); len(names) > 0 {
		logger.WithField("modules", strings.Join(names, ",")).Info("kernel modules found no device and were not loaded: expected unless this VM is an SEV-SNP or TDX guest (sev_guest, tdx_guest)")
	}
	logger.WithField("count", len(info.Modules)).WithField("elapsed", time.Since(start)).Debug("kernel modules loaded")
	// After the modules: configfs is one in the Debian cloud kernel, and
	// its mount point /sys/kernel/config exists only once it is loaded.
	if err := configfsMount().do(); err != nil {
		// Only attestation through configfs-tsm needs it; the attester
		// falls back to /dev/sev-guest or /dev/tdx_guest and says so.
		logger.WithError(err).Warn("configfs not mounted at /sys/kernel/config: configfs-tsm attestation reports are unavailable; check that the configfs module loaded (or is built in)")
	}
	fwNet, err := readNetFWCfg(fwCfgRoot)
	if err != nil {
		return nil, fmt.Errorf("system setup: %w", err)
	}
	if fwNet != nil {
		info.Cmdline.Net = fwNet
	}
	if fwNet == nil && info.Cmdline.Net != nil && lacksNetworkDevice(sysVirtioDevices) {
		// The guest build's default command line carries cc.net for
		// QEMU user networking; a VM started without a network card has
		// no use for it, and the command line stays the measured one.
		logger.WithField("net", info.Cmdline.Net.String()).Info("cc.net is set but the VM has no network card (network.mode \"none\"): running without a network; network.forwards reach the host over the agent transport")
		info.Cmdline.Net = nil
	}

	if opts.Hostname != "" {
		if err := unix.Sethostname([]byte(opts.Hostname)); err != nil {
			return nil, fmt.Errorf("system setup: set hostname %q: %w", opts.Hostname, err)
		}
	}
	if err := writeHosts(opts.Hostname); err != nil {
		return nil, fmt.Errorf("system setup: %w", err)
	}
	netStart := time.Now()
	info.Link, err = setupNetwork(ctx, info.Cmdline.Net, opts.LinkTimeout, info.Modules)
	if err != nil {
		return nil, fmt.Errorf("system setup: network: %w", err)
	}
	if err := writeResolvConf(info.Cmdline.Net); err != nil {
		return nil, fmt.Errorf("system setup: %w", err)
	}
	if info.Link != "" {
		logger.WithField("link", info.Link).WithField("net", info.Cmdline.Net.String()).WithField("elapsed", time.Since(netStart)).Debug("network configured")
	}
	return info, nil
}

// String summarises i in one line for logs, e.g. "kernel
// 6.12.117+deb12-cloud-amd64, 12 modules (0 failed, 2 without device),
// link eth0, transport vsock:1024".
func (i *Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kernel %s, %d modules (%d failed, %d without device)", i.KernelRelease, len(i.Modules), len(i.FailedModules()), len(noDeviceModules(i.Modules)))
	if i.Link != "" {
		fmt.Fprintf(&b, ", link %s", i.Link)
	}
	if t := i.Cmdline.Transport.String(); t != "" {
		fmt.Fprintf(&b, ", transport %s", t)
	}
	return b.String()
}

// PowerOff flushes file system buffers and powers the machine off with
// reboot(LINUX_REBOOT_CMD_POWER_OFF); QEMU then exits. It returns only on
// failure, with the error (EPERM when not root or not in the initial user
// namespace).
func PowerOff() error {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("power off: %w", err)
	}
	return nil
}
