// Package build builds Coffer's guest: a Debian cloud kernel (vmlinuz) and a
// reproducible initramfs (initrd.img) holding the static cc-agent as /init,
// runc with its shared libraries, and the kernel modules the guest needs,
// described by manifest.json.
//
// Layout of the initramfs:
//
//	/init                              the agent (static, mode 0755)
//	/usr/bin/runc                      runc, with its interpreter and DT_NEEDED
//	/lib64/ld-linux-x86-64.so.2        libraries at the paths ld.so searches
//	/lib/x86_64-linux-gnu/*.so.*
//	/lib/modules/<release>/kernel/…    uncompressed .ko files
//	/lib/modules/<release>/coffer.load module paths in load order
//	/dev/console (c 5 1), /dev /proc /sys /run /tmp /etc /sbin /usr/bin
//
// No /etc/passwd or /etc/group: runc resolves users in the container's root,
// not in the guest's.
package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/cofferhq/coffer/guest/build/aptpkg"
	"github.com/cofferhq/coffer/guest/build/elfdeps"
	"github.com/cofferhq/coffer/guest/build/kmod"
	"github.com/cofferhq/coffer/guest/initramfs"
)

const (
	// DefaultKernelPackage is the pinned Debian kernel package: bookworm's
	// 6.12 cloud flavour (from bookworm-security), unsigned because direct
	// kernel boot uses no Secure Boot signature. Unlike bookworm's 6.1 it
	// can run as an SEV-SNP or TDX guest and get attestation reports:
	// CONFIG_INTEL_TDX_GUEST=y, CONFIG_AMD_MEM_ENCRYPT=y, and configfs,
	// configfs-tsm (tsm), sev-guest and tdx-guest as modules. virtio,
	// virtio_pci and virtio_console are built in; virtio_net, vsock,
	// overlay and qemu_fw_cfg are modules, stored as .ko.xz. Bump it
	// together with DefaultKernelVersion when bookworm-security moves on
	// (`apt-cache policy 'linux-image-6.12.*+deb12-cloud-amd64-unsigned'`).
	DefaultKernelPackage = "linux-image-6.12.117+deb12-cloud-amd64-unsigned"
	// DefaultKernelVersion is the pinned Debian version of DefaultKernelPackage.
	DefaultKernelVersion = "6.12.117-1~deb12u1"
	// DefaultRuncBinary is the host runc copied into the guest (Debian's
	// runc package).
	DefaultRuncBinary = "/usr/sbin/runc"

	// DefaultCmdline is the kernel command line for QEMU guests:
	//   - console=ttyS0: the kernel log and /init's stdout go to the first
	//     serial port, which the shim captures.
	//   - loglevel=6: messages up to KERN_NOTICE reach the serial console
	//     (about 30 lines per boot); measured under TCG, this costs nothing
	//     over loglevel=4; loglevel=7 would add about 340 info lines.
	//   - panic=-1 reboot=t: reboot at once on panic by triple fault, which
	//     QEMU -no-reboot turns into an exit, so a dead guest ends its VM.
	//   - cc.net: guest address, gateway and DNS for QEMU user networking
	//     (slirp's fixed 10.0.2.0/24 layout).
	// The shim appends cc.transport=… (see package sysinit).
	DefaultCmdline = "console=ttyS0 loglevel=6 panic=-1 reboot=t cc.net=10.0.2.15/24,10.0.2.2,10.0.2.3"

	// AgentPath is where the agent lives in the initramfs; the kernel runs it
	// as PID 1.
	AgentPath = "/init"
	// RuncPath is where runc lives in the initramfs.
	RuncPath = "/usr/bin/runc"
	// moduleList is the load-order file in /lib/modules/<release>; it must
	// match sysinit.ModuleListName (checked by a test).
	moduleList = "coffer.load"
)

// DefaultModules returns the kernel modules a guest loads by default, in
// this order (Build adds their dependencies first and skips the ones built
// into the kernel):
//   - virtio_pci, virtio_console: the virtio PCI transport and
//     virtio-serial ports (built into the 6.12 cloud kernel, modules in
//     older ones);
//   - virtio_net, overlay (container layers), qemu_fw_cfg (fw_cfg items);
//   - vmw_vsock_virtio_transport: vsock, for hosts with /dev/vhost-vsock;
//   - configfs, tsm: configfs-tsm attestation reports, mounted at
//     /sys/kernel/config (tsm needs configfs);
//   - sev_guest, tdx_guest: the SEV-SNP and TDX guest drivers behind
//     configfs-tsm, /dev/sev-guest and /dev/tdx_guest. Outside such a guest
//     their init finds no device and fails with ENODEV, which package
//     sysinit reports as "no device", not as a failure.
func DefaultModules() []string {
	return []string{
		"virtio_pci", "virtio_console", "virtio_net", "overlay", "qemu_fw_cfg", "vmw_vsock_virtio_transport",
		"configfs", "tsm", "sev_guest", "tdx_guest",
	}
}

// Options configures Build. OutDir, CacheDir and AgentBinary are required.
type Options struct {
	// OutDir receives vmlinuz, initrd.img and manifest.json (created if
	// missing; existing files are replaced atomically).
	OutDir string
	// CacheDir holds the downloaded kernel .deb between builds and scratch
	// space for unpacking it (the 6.12 cloud kernel: a 34 MB .deb, about
	// 40 MB unpacked, removed afterwards).
	CacheDir string
	// AgentBinary is the host path of the static cc-agent binary.
	AgentBinary string
	// RuncBinary is the host runc; DefaultRuncBinary if empty.
	RuncBinary string
	// KernelPackage and KernelVersion pin the Debian kernel package;
	// DefaultKernelPackage and DefaultKernelVersion if empty.
	KernelPackage, KernelVersion string
	// Modules are the modules to load at boot, by name; DefaultModules() if
	// nil. Dependencies are added; built-in ones are skipped.
	Modules []string
	// Cmdline is recorded in the manifest; DefaultCmdline if empty.
	Cmdline string
	// SourceDateEpoch is the mtime of every initramfs entry, in seconds since
	// the Unix epoch (SOURCE_DATE_EPOCH); 0 by default.
	SourceDateEpoch int64
	// ExtraFiles are added to the initramfs as is (for example a baked-in
	// image or test data). A path that collides with a built-in entry is an
	// error.
	ExtraFiles []initramfs.Entry
}

func (o *Options) setDefaults() error {
	if o.OutDir == "" || o.CacheDir == "" || o.AgentBinary == "" {
		return fmt.Errorf("build guest: OutDir %q, CacheDir %q and AgentBinary %q must all be set: %w", o.OutDir, o.CacheDir, o.AgentBinary, errdefs.ErrInvalidArgument)
	}
	if o.RuncBinary == "" {
		o.RuncBinary = DefaultRuncBinary
	}
	if o.KernelPackage == "" {
		o.KernelPackage = DefaultKernelPackage
	}
	if o.KernelVersion == "" {
		o.KernelVersion = DefaultKernelVersion
	}
	if o.Modules == nil {
		o.Modules = DefaultModules()
	}
	if o.Cmdline == "" {
		o.Cmdline = DefaultCmdline
	}
	return nil
}

// Build fetches the kernel package, assembles the initramfs and writes
// OutDir/vmlinuz, OutDir/initrd.img and OutDir/manifest.json, returning the
// manifest (with Dir set to OutDir). The same inputs give byte-identical
// outputs.
//
// It needs apt-cache, apt-get and dpkg-deb on the host. Errors name the
// failing step and input: apt not knowing the pinned kernel
// (errdefs.ErrNotFound, with advice), a .deb whose SHA-256 differs from apt's
// (errdefs.ErrDataLoss), a dynamically linked agent
// (errdefs.ErrInvalidArgument), a module that is neither a file nor built in,
// or a runc library that cannot be found.
func Build(ctx context.Context, opts Options) (*Manifest, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	logger := log.G(ctx).WithField("kernel", opts.KernelPackage+"="+opts.KernelVersion)

	agentSum, err := checkAgent(opts.AgentBinary)
	if err != nil {
		return nil, err
	}
	runcVersion, err := runcVersion(ctx, opts.RuncBinary)
	if err != nil {
		return nil, err
	}
	runcLibs, err := elfdeps.Closure(opts.RuncBinary, elfdeps.DebianLibDirs())
	if err != nil {
		return nil, fmt.Errorf("build guest: collect runc libraries: %w", err)
	}

	logger.Info("fetching kernel package")
	deb, debInfo, err := aptpkg.Fetch(ctx, opts.CacheDir, opts.KernelPackage, opts.KernelVersion)
	if err != nil {
		return nil, fmt.Errorf("build guest: %w", err)
	}
	scratch, err := os.MkdirTemp(opts.CacheDir, ".unpack-")
	if err != nil {
		return nil, fmt.Errorf("build guest: create unpack dir: %w", err)
	}
	defer os.RemoveAll(scratch)
	if err := aptpkg.Extract(ctx, deb, scratch); err != nil {
		return nil, fmt.Errorf("build guest: %w", err)
	}
	kernel, release, err := findKernel(scratch)
	if err != nil {
		return nil, fmt.Errorf("build guest: %s: %w", deb, err)
	}
	tree, err := kmod.OpenTree(filepath.Join(scratch, "lib/modules", release))
	if err != nil {
		return nil, fmt.Errorf("build guest: %w", err)
	}
	mods, builtin, err := tree.Resolve(opts.Modules)
	if err != nil {
		return nil, fmt.Errorf("build guest: %w", err)
	}
	if len(builtin) > 0 {
		logger.WithField("modules", builtin).Info("skipping modules built into the kernel")
	}

	entries, err := initramfsEntries(opts, release, runcLibs, mods)
	if err != nil {
		return nil, fmt.Errorf("build guest: %w", err)
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("build guest: create output dir: %w", err)
	}
	m := &Manifest{
		Cmdline:              opts.Cmdline,
		KernelVersion:        release,
		KernelPackage:        opts.KernelPackage,
		KernelPackageVersion: opts.KernelVersion,
		KernelPackageSHA256:  debInfo.SHA256,
		RuncVersion:          runcVersion,
		AgentSHA256:          agentSum,
		Dir:                  opts.OutDir,
	}
	for _, mod := range mods {
		m.Modules = append(m.Modules, mod.Name)
	}
	m.Initrd, err = writeOutput(opts.OutDir, "initrd.img", func(w io.Writer) error {
		return initramfs.Write(w, entries, initramfs.Options{ModTime: opts.SourceDateEpoch})
	})
	if err != nil {
		return nil, fmt.Errorf("build guest: write initrd: %w", err)
	}
	m.Kernel, err = writeOutput(opts.OutDir, "vmlinuz", func(w io.Writer) error {
		f, err := os.Open(kernel)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("build guest: write kernel: %w", err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("build guest: encode manifest: %w", err)
	}
	if _, err := writeOutput(opts.OutDir, ManifestFile, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	}); err != nil {
		return nil, fmt.Errorf("build guest: write manifest: %w", err)
	}
	logger.WithField("initrd_bytes", m.Initrd.Size).Info("guest built")
	return m, nil
}

// checkAgent returns the agent's SHA-256 and checks that it is a static ELF
// program, since the initramfs carries no libraries for it.
func checkAgent(p string) (string, error) {
	interp, err := elfdeps.Interpreter(p)
	if err != nil {
		return "", fmt.Errorf("build guest: check agent: %w", err)
	}
	if interp != "" {
		return "", fmt.Errorf("build guest: agent %s is dynamically linked (interpreter %s): build it with CGO_ENABLED=0: %w", p, interp, errdefs.ErrInvalidArgument)
	}
	sum, err := aptpkg.FileSHA256(p)
	if err != nil {
		return "", fmt.Errorf("build guest: hash agent: %w", err)
	}
	return sum, nil
}

// runcVersion runs `runc --version` and returns the version from its first
// line ("runc version 1.1.5+ds1").
func runcVersion(ctx context.Context, runc string) (string, error) {
	out, err := exec.CommandContext(ctx, runc, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("build guest: run %s --version: %w: install runc or pass its path", runc, err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	v, ok := strings.CutPrefix(first, "runc version ")
	if !ok || v == "" {
		return "", fmt.Errorf("build guest: %s --version printed %q, want \"runc version X\" on the first line", runc, first)
	}
	return strings.TrimSpace(v), nil
}

// findKernel returns the one boot/vmlinuz-<release> in an unpacked kernel
// package and its release.
func findKernel(root string) (string, string, error) {
	matches, err := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if err != nil {
		return "", "", err
	}
	if len(matches) != 1 {
		return "", "", fmt.Errorf("package holds %d boot/vmlinuz-* files (%v), want exactly 1: is it a linux-image package?", len(matches), matches)
	}
	release := strings.TrimPrefix(filepath.Base(matches[0]), "vmlinuz-")
	if _, err := os.Stat(filepath.Join(root, "lib/modules", release)); err != nil {
		return "", "", fmt.Errorf("package has kernel %s but no lib/modules/%s: %w", release, release, err)
	}
	return matches[0], release, nil
}

// initramfsEntries lists the files of the initramfs.
func initramfsEntries(opts Options, release string, libs []elfdeps.File, mods []kmod.Module) ([]initramfs.Entry, error) {
	entries := []initramfs.Entry{
		initramfs.Dir("/dev", 0o755),
		initramfs.CharDevice("/dev/console", 0o600, 5, 1),
		initramfs.Dir("/proc", 0o555),
		initramfs.Dir("/sys", 0o555),
		initramfs.Dir("/run", 0o755),
		initramfs.Dir("/tmp", 0o1777),
		initramfs.Dir("/etc", 0o755),
		initramfs.Dir("/sbin", 0o755),
		initramfs.Dir("/usr/bin", 0o755),
		initramfs.File(AgentPath, 0o755, opts.AgentBinary),
		initramfs.File(RuncPath, 0o755, opts.RuncBinary),
	}
	for _, l := range libs {
		st, err := os.Stat(l.Source)
		if err != nil {
			return nil, fmt.Errorf("stat runc library: %w", err)
		}
		entries = append(entries, initramfs.File(l.Path, st.Mode().Perm(), l.Source))
	}
	modDir := path.Join("/lib/modules", release)
	var list strings.Builder
	list.WriteString("# Kernel modules in load order, relative to this directory. Written by coffer guest/build.\n")
	for _, m := range mods {
		entries = append(entries, initramfs.FileBytes(path.Join(modDir, m.Path), 0o644, m.Data))
		list.WriteString(m.Path + "\n")
	}
	entries = append(entries, initramfs.FileBytes(path.Join(modDir, moduleList), 0o644, []byte(list.String())))
	return append(entries, opts.ExtraFiles...), nil
}

// writeOutput writes dir/name through fill via a temporary file renamed into
// place, and returns its artifact record.
func writeOutput(dir, name string, fill func(io.Writer) error) (a Artifact, err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-")
	if err != nil {
		return Artifact{}, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	cw := &countWriter{}
	if err := fill(io.MultiWriter(f, h, cw)); err != nil {
		return Artifact{}, err
	}
	if err := f.Chmod(0o644); err != nil {
		return Artifact{}, err
	}
	if err := f.Sync(); err != nil {
		return Artifact{}, err
	}
	if err := f.Close(); err != nil {
		return Artifact{}, err
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return Artifact{}, err
	}
	return Artifact{Path: name, SHA256: hex.EncodeToString(h.Sum(nil)), Size: cw.n}, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
