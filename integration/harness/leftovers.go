package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// NoQEMU reports, with t.Errorf, every live VMM process (qemu-system or
// cloud-hypervisor, IsVMM) whose command line or environment contains one
// of markers (for example a container ID, a containerd socket path, a
// namespace or a /run/cc/<hash> directory; a VMM started by the shim
// inherits the shim's environment, which holds containerd's GRPC_ADDRESS
// and NAMESPACE, unless the shim clears it, and carries
// COFFER_VM_NAME=coffer-<sandbox id>). With no markers every VMM process
// counts. It returns true when there is none.
func NoQEMU(t testing.TB, markers ...string) bool {
	t.Helper()
	return report(t, qemuProblems(markers, nil))
}

// NoMountsUnder reports, with t.Errorf, every mount point in
// /proc/self/mountinfo equal to prefix or below it (prefix + "/..."), and
// returns true when there is none.
func NoMountsUnder(t testing.TB, prefix string) bool {
	t.Helper()
	return report(t, mountProblems(prefix))
}

// NoSocketsUnder reports, with t.Errorf, every unix socket file in the
// tree at dir, and returns true when there is none. A missing dir has no
// sockets.
func NoSocketsUnder(t testing.TB, dir string) bool {
	t.Helper()
	return report(t, socketProblems(dir))
}

func report(t testing.TB, problems []string) bool {
	t.Helper()
	for _, p := range problems {
		t.Errorf("leftover: %s", p)
	}
	return len(problems) == 0
}

// qemuProblems lists live VMM processes (IsVMM) naming a marker, leaving
// out the PIDs in skip.
func qemuProblems(markers []string, skip map[int]bool) []string {
	procs, err := ListProcs()
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, p := range procs {
		if !p.IsVMM() || p.State == 'Z' || skip[p.PID] {
			continue
		}
		if len(markers) == 0 {
			out = append(out, fmt.Sprintf("VMM process %s", p))
			continue
		}
		for _, m := range markers {
			if m != "" && p.Mentions(m) {
				out = append(out, fmt.Sprintf("VMM process mentioning %q: %s", m, p))
				break
			}
		}
	}
	return out
}

func mountProblems(prefix string) []string {
	prefix = filepath.Clean(prefix)
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(prefix))
	if err != nil {
		return []string{fmt.Sprintf("read /proc/self/mountinfo: %v", err)}
	}
	var out []string
	for _, m := range mounts {
		out = append(out, fmt.Sprintf("mount %s (type %s, source %s) under %s", m.Mountpoint, m.FSType, m.Source, prefix))
	}
	return out
}

func socketProblems(dir string) []string {
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type()&fs.ModeSocket != 0 {
			out = append(out, fmt.Sprintf("socket %s", path))
		}
		return nil
	})
	if err != nil {
		out = append(out, fmt.Sprintf("walk %s: %v", dir, err))
	}
	return out
}

// unmountUnder lazily unmounts (MNT_DETACH) every mount at or below dir,
// deepest first.
func unmountUnder(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(filepath.Clean(dir)))
	if err != nil {
		return fmt.Errorf("read /proc/self/mountinfo: %w", err)
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Mountpoint) > len(mounts[j].Mountpoint) })
	var errs []error
	for _, m := range mounts {
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m.Mountpoint, err))
		}
	}
	return errors.Join(errs...)
}

// vmDirPattern matches a VM state directory named in a VMM argument
// (QEMU's chardev socket paths, -pidfile, console log, ...; Cloud
// Hypervisor's --api-socket path=...).
var vmDirPattern = regexp.MustCompile(regexp.QuoteMeta(VMStateRoot) + `/[^/,=:\s"']+`)

// vmDirsOf returns the distinct VMStateRoot/<name> directories named on
// p's command line.
func vmDirsOf(p Proc) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range p.Cmdline {
		for _, m := range vmDirPattern.FindAllString(a, -1) {
			if !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	return out
}

// shimSocketFromBootstrap reads the shim's socket path from a bundle's
// bootstrap.json (containerd's JSON of the shim's BootstrapResult, written
// after `shim start`); the address "unix:///run/containerd/s/<hash>"
// yields "/run/containerd/s/<hash>". Non-unix addresses yield "".
func shimSocketFromBootstrap(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var params struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(data, &params); err != nil {
		return "", fmt.Errorf("parse %s: %w", path, err)
	}
	if s, ok := strings.CutPrefix(params.Address, "unix://"); ok {
		return s, nil
	}
	return "", nil
}

// VMStateDirs returns the entries of VMStateRoot (/run/cc/<name>), sorted;
// none if it does not exist. Compare the lists from before and after a
// failed create to find a VM directory the shim left behind.
func VMStateDirs() ([]string, error) {
	entries, err := os.ReadDir(VMStateRoot)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list VM state dirs: %w", err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, filepath.Join(VMStateRoot, e.Name()))
	}
	return out, nil
}

// LiveQEMU lists the live VMM processes (QEMU or Cloud Hypervisor) whose
// command line or environment mentions a marker (see NoQEMU), without failing the test, for polling.
func LiveQEMU(markers ...string) []string { return qemuProblems(markers, nil) }
