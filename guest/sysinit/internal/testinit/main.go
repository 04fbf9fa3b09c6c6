// Command testinit is the /init of the guest boot test (boot_test.go in
// package sysinit): it runs the sysinit steps as PID 1, checks their effect
// through /proc and /sys, runs a busybox container with runc, prints one
// marker line to the console and powers off.
//
// Marker lines (the test looks for them):
//
//	COFFER-TESTINIT PASS <details>
//	COFFER-TESTINIT FAIL <step>: <error>
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/guest/sysinit"
)

const (
	bundleDir  = "/bundle"
	marker     = "COFFER-TESTINIT"
	helloWorld = "hello from runc"
	runcPath   = "/usr/bin/runc"
)

func main() {
	ctx := context.Background()
	if err := log.SetLevel("debug"); err != nil {
		fail("log level", err)
	}
	if !sysinit.RootSwitched() {
		// Only for the uptime below; SwitchRoot accepts an existing /proc.
		_ = unix.Mount("proc", "/proc", "proc", 0, "")
		fmt.Printf("testinit: up %s, switching root\n", uptime())
		fail("switch root", sysinit.SwitchRoot(ctx))
	}
	fmt.Printf("testinit: up %s, root switched\n", uptime())
	info, err := sysinit.Setup(ctx, sysinit.Options{Hostname: "coffer-test"})
	if err != nil {
		fail("setup", err)
	}
	fmt.Printf("testinit: up %s, setup done: %s\n", uptime(), info)
	for _, check := range []struct {
		name string
		fn   func(*sysinit.Info) error
	}{
		{"pid 1", checkPID1},
		{"root", checkRoot},
		{"mounts", checkMounts},
		{"modules", checkModules},
		{"network", checkNetwork},
		{"virtio-serial", checkVirtioSerial},
	} {
		if err := check.fn(info); err != nil {
			fail(check.name, err)
		}
	}
	start := time.Now()
	out, err := runContainer()
	if err != nil {
		fail("runc", err)
	}
	fmt.Printf("%s PASS container said %q; runc took %v; up %s\n", marker, out, time.Since(start).Round(time.Millisecond), uptime())
	powerOff()
}

// fail prints the FAIL marker and powers off when err is set.
func fail(step string, err error) {
	if err == nil {
		return
	}
	fmt.Printf("%s FAIL %s: %v\n", marker, step, err)
	powerOff()
}

func powerOff() {
	if err := sysinit.PowerOff(); err != nil {
		fmt.Printf("%s FAIL power off: %v\n", marker, err)
	}
	select {} // PID 1 must not exit: the kernel would panic
}

func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	up, _, _ := strings.Cut(string(b), " ")
	return up + "s"
}

func checkPID1(*sysinit.Info) error {
	if pid := os.Getpid(); pid != 1 {
		return fmt.Errorf("running as PID %d, want 1 (the re-exec must keep the PID)", pid)
	}
	if !sysinit.RootSwitched() {
		return errors.New("RootSwitched is false after the re-exec")
	}
	return nil
}

// checkRoot checks that "/" is the tmpfs SwitchRoot made and that the
// initramfs content came along.
func checkRoot(*sysinit.Info) error {
	var sfs unix.Statfs_t
	if err := unix.Statfs("/", &sfs); err != nil {
		return err
	}
	if sfs.Type != unix.TMPFS_MAGIC {
		return fmt.Errorf("/ has magic %#x, want tmpfs %#x", sfs.Type, unix.TMPFS_MAGIC)
	}
	m, err := mountAt("/")
	if err != nil {
		return err
	}
	if m.fstype != "tmpfs" {
		return fmt.Errorf("mountinfo lists / as %q, want tmpfs", m.fstype)
	}
	for _, p := range []string{"/init", runcPath, "/bundle/rootfs/bin/busybox"} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("initramfs file missing on the new root: %w", err)
		}
	}
	st, err := os.Stat("/tmp")
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSticky == 0 || st.Mode().Perm() != 0o777 {
		return fmt.Errorf("/tmp mode is %v after the move, want drwxrwxrwt", st.Mode())
	}
	return nil
}

type mountEntry struct{ point, fstype string }

// mountAt returns the last mountinfo entry for the mount point p.
func mountAt(p string) (mountEntry, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return mountEntry{}, err
	}
	var found *mountEntry
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 1 || f[4] != p {
			continue
		}
		found = &mountEntry{point: f[4], fstype: g[0]}
	}
	if found == nil {
		return mountEntry{}, fmt.Errorf("nothing mounted at %s:\n%s", p, b)
	}
	return *found, nil
}

func checkMounts(*sysinit.Info) error {
	for p, want := range map[string]string{"/dev": "devtmpfs", "/proc": "proc", "/sys": "sysfs", "/sys/fs/cgroup": "cgroup2", "/sys/kernel/config": "configfs"} {
		m, err := mountAt(p)
		if err != nil {
			return err
		}
		if m.fstype != want {
			return fmt.Errorf("%s is %s, want %s", p, m.fstype, want)
		}
	}
	return nil
}

// noDeviceUnderTCG are the modules whose driver finds no device in a plain
// QEMU TCG VM (no SEV-SNP, no TDX): they must be reported as NoDevice.
var noDeviceUnderTCG = map[string]bool{"sev_guest": true, "tdx_guest": true}

// checkModules checks that every listed module loaded and is in
// /proc/modules, except the SEV-SNP and TDX guest drivers, which must be
// reported as finding no device and be absent; and that configfs-tsm's
// report directory exists (tsm loaded, configfs mounted).
func checkModules(info *sysinit.Info) error {
	if len(info.Modules) == 0 {
		return errors.New("no modules in the module list")
	}
	if failed := info.FailedModules(); len(failed) > 0 {
		return fmt.Errorf("modules failed: %v", failed)
	}
	b, err := os.ReadFile("/proc/modules")
	if err != nil {
		return err
	}
	loaded := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			loaded[f[0]] = true
		}
	}
	seen := map[string]bool{}
	for _, m := range info.Modules {
		name := m.Name()
		seen[name] = true
		switch {
		case noDeviceUnderTCG[name] && !m.NoDevice:
			return fmt.Errorf("module %s loaded, want ENODEV (no SEV-SNP or TDX under TCG)", name)
		case noDeviceUnderTCG[name] && loaded[name]:
			return fmt.Errorf("module %s found no device but is in /proc/modules", name)
		case !noDeviceUnderTCG[name] && m.NoDevice:
			return fmt.Errorf("module %s found no device", name)
		case !noDeviceUnderTCG[name] && !loaded[name]:
			return fmt.Errorf("module %s is not in /proc/modules", name)
		}
	}
	for name := range noDeviceUnderTCG {
		if !seen[name] {
			return fmt.Errorf("module %s is not in the module list", name)
		}
	}
	const reports = "/sys/kernel/config/tsm/report"
	if st, err := os.Stat(reports); err != nil || !st.IsDir() {
		return fmt.Errorf("configfs-tsm report directory: %v (is a directory: %v)", err, err == nil && st.IsDir())
	}
	// Without a provider (no SNP, no TDX) the kernel refuses report entries
	// with ENXIO; guest/attester relies on that to fall through to sim.
	if err := os.Mkdir(reports+"/probe", 0o755); !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("creating a configfs-tsm report without a provider: got %v, want ENXIO", err)
	}
	return nil
}

// checkNetwork compares the kernel's view in /proc and /sys with cc.net.
func checkNetwork(info *sysinit.Info) error {
	n := info.Cmdline.Net
	if n == nil || info.Link == "" {
		return fmt.Errorf("cc.net missing (%v) or no link configured (%q)", n, info.Link)
	}
	carrier, err := os.ReadFile("/sys/class/net/" + info.Link + "/carrier")
	if err != nil {
		return err
	}
	if s := strings.TrimSpace(string(carrier)); s != "1" {
		return fmt.Errorf("%s carrier is %q, want 1", info.Link, s)
	}
	trie, err := os.ReadFile("/proc/net/fib_trie")
	if err != nil {
		return err
	}
	if !strings.Contains(string(trie), n.Address.Addr().String()+"\n") {
		return fmt.Errorf("/proc/net/fib_trie lacks %s:\n%s", n.Address.Addr(), trie)
	}
	route, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return err
	}
	// /proc/net/route prints IPv4 addresses as host-order (little-endian) hex.
	gw := n.Gateway.As4()
	want := fmt.Sprintf("%s\t00000000\t%08X", info.Link, binary.LittleEndian.Uint32(gw[:]))
	if !strings.Contains(string(route), want) {
		return fmt.Errorf("/proc/net/route has no default route %q:\n%s", want, route)
	}
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return err
	}
	if string(resolv) != "nameserver "+n.DNS.String()+"\n" {
		return fmt.Errorf("/etc/resolv.conf is %q", resolv)
	}
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return err
	}
	if !strings.Contains(string(hosts), "127.0.0.1\tlocalhost") || !strings.Contains(string(hosts), "coffer-test") {
		return fmt.Errorf("/etc/hosts is %q", hosts)
	}
	return nil
}

// checkVirtioSerial checks that virtio_console and devtmpfs expose the
// agent.0 port.
func checkVirtioSerial(*sysinit.Info) error {
	names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, p := range names {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) == sysinit.DefaultVirtioSerialPort {
			dev := "/dev/" + filepath.Base(filepath.Dir(p))
			if _, err := os.Stat(dev); err != nil {
				return fmt.Errorf("port %s exists but its device node is missing: %w", sysinit.DefaultVirtioSerialPort, err)
			}
			return nil
		}
	}
	return fmt.Errorf("no virtio-serial port named %s among %v", sysinit.DefaultVirtioSerialPort, names)
}

// runContainer writes a bundle config with `runc spec`, adjusts it and runs
// busybox echo in it, returning the container's output.
func runContainer() (string, error) {
	if out, err := exec.Command(runcPath, "spec", "--bundle", bundleDir).CombinedOutput(); err != nil {
		return "", fmt.Errorf("runc spec: %w: %s", err, out)
	}
	cfgPath := filepath.Join(bundleDir, "config.json")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return "", err
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return "", err
	}
	spec.Process.Terminal = false
	spec.Process.Args = []string{"/bin/busybox", "echo", helloWorld}
	if b, err = json.Marshal(&spec); err != nil {
		return "", err
	}
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(runcPath, "--log-format", "json", "run", "--bundle", bundleDir, "hello")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("runc run: %w: stdout %q stderr %q", err, stdout.String(), stderr.String())
	}
	out := strings.TrimSpace(stdout.String())
	if out != helloWorld {
		return "", fmt.Errorf("container printed %q (stderr %q), want %q", out, stderr.String(), helloWorld)
	}
	return out, nil
}
