package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
)

// defaultShimSocketDir is where containerd's shims put their sockets
// (containerd's defaults.DefaultStateDir + "/s").
const defaultShimSocketDir = "/run/containerd/s"

// observeTimeout bounds how long Observe waits for the shim and QEMU of a
// container that containerd reports as created or running.
const observeTimeout = 10 * time.Second

// Footprint is what one Coffer container occupies on the host while its
// task exists, recorded by Observe so that RequireGone can later check
// that all of it went away.
type Footprint struct {
	// ContainerID is the container the footprint belongs to.
	ContainerID string
	// Shim is the long-running containerd-shim-cc-v2 process for it.
	Shim Proc
	// QEMU are the qemu-system processes found for it: descendants of Shim,
	// or processes naming the container ID, containerd's socket or the
	// test's namespace. Observe fails the test if there are none.
	QEMU []Proc
	// VMDirs are the VMStateRoot/<name> directories named on those QEMU
	// command lines.
	VMDirs []string
	// BundleDir is containerd's bundle directory for the task (holds the
	// rootfs mount and bootstrap.json).
	BundleDir string
	// ShimSockets are the socket paths the shim may have created: its
	// TTRPC socket from bootstrap.json (after Observe), plus the paths that
	// containerd's pkg/shim.CreateSocketAddress gives for the container,
	// plain and debug, under the same directory (default
	// /run/containerd/s). A shim that does not follow that convention
	// never creates the latter, so they cannot cause false alarms.
	ShimSockets []string
	// Markers are the strings NoQEMU looks for after the container is gone:
	// the container ID, containerd's socket path, the namespace, VMDirs.
	Markers []string

	// address is the containerd socket the shim serves.
	address string
}

// FootprintOf returns the part of container id's footprint that is known
// without observing it: BundleDir and the Markers (id, containerd socket,
// namespace). RequireGone on it checks that no shim serves id for this
// containerd, that no QEMU names a marker, and that nothing is mounted and
// no socket is left under the bundle; use it after a create that failed,
// when there was never a running VM to Observe.
func (c *Containerd) FootprintOf(id string) *Footprint {
	f := &Footprint{
		ContainerID: id,
		BundleDir:   c.BundleDir(id),
		Markers:     []string{id, c.address, c.namespace},
		address:     c.address,
	}
	f.addShimSockets(c, defaultShimSocketDir)
	return f
}

// addShimSockets adds the conventional shim socket paths under dir to
// ShimSockets and tells c to remove them at cleanup if they are left.
func (f *Footprint) addShimSockets(c *Containerd, dir string) {
	ctx := namespaces.WithNamespace(context.Background(), c.namespace)
	for _, debug := range []bool{false, true} {
		addr, err := shim.CreateSocketAddress(ctx, dir, c.address, f.ContainerID, debug)
		if err != nil {
			continue // only fails without a namespace, which ctx has
		}
		if p, ok := strings.CutPrefix(addr, "unix://"); ok && !slices.Contains(f.ShimSockets, p) {
			f.ShimSockets = append(f.ShimSockets, p)
		}
	}
	c.noteShimSockets(f.ShimSockets...)
}

// Observe records the host footprint of container id, whose task must
// exist (created or running, e.g. after `ctr run -d` returned). It waits up
// to 10 s for the shim and a QEMU to show up in /proc, then fails the test
// (t.Fatal) naming what it looked for and every qemu-system process it saw.
func (c *Containerd) Observe(t testing.TB, id string) *Footprint {
	t.Helper()
	f := c.FootprintOf(id)
	deadline := time.Now().Add(observeTimeout)
	for {
		procs, err := ListProcs()
		if err != nil {
			t.Fatal(err)
		}
		shims := ShimProcs(procs, id, c.address)
		var qemus []Proc
		if len(shims) == 1 {
			f.Shim = shims[0]
			for _, d := range Descendants(procs, f.Shim.PID) {
				if d.IsQEMU() {
					qemus = append(qemus, d)
				}
			}
		}
		for _, p := range procs {
			if p.IsQEMU() && !slices.ContainsFunc(qemus, func(q Proc) bool { return q.PID == p.PID }) &&
				(p.Mentions(id) || p.Mentions(c.address) || p.Mentions(c.namespace)) {
				qemus = append(qemus, p)
			}
		}
		if len(shims) == 1 && len(qemus) > 0 {
			f.QEMU = qemus
			break
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, p := range procs {
				if p.IsQEMU() {
					seen = append(seen, p.String())
				}
			}
			t.Fatalf("observe container %s: found %d %s processes with -id %s -address %s (want 1) and %d QEMU processes for it (want at least 1: a descendant of the shim, or naming the id, address or namespace %s); qemu-system processes on the host: %v",
				id, len(shims), ShimBinary, id, c.address, len(qemus), c.namespace, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, q := range f.QEMU {
		f.VMDirs = append(f.VMDirs, vmDirsOf(q)...)
	}
	slices.Sort(f.VMDirs)
	f.VMDirs = slices.Compact(f.VMDirs)
	f.Markers = append(f.Markers, f.VMDirs...)
	sock, err := shimSocketFromBootstrap(filepath.Join(f.BundleDir, "bootstrap.json"))
	if err != nil {
		t.Fatalf("observe container %s: read shim address: %v", id, err)
	}
	if sock != "" {
		if !slices.Contains(f.ShimSockets, sock) {
			f.ShimSockets = append([]string{sock}, f.ShimSockets...)
		}
		f.addShimSockets(c, filepath.Dir(sock))
	}
	return f
}

// String summarises the footprint for test logs.
func (f *Footprint) String() string {
	var qemu []string
	for _, q := range f.QEMU {
		qemu = append(qemu, fmt.Sprint(q.PID))
	}
	return fmt.Sprintf("container %s: shim pid %d, QEMU pids [%s], VM dirs %v, bundle %s, shim sockets %v",
		f.ContainerID, f.Shim.PID, strings.Join(qemu, " "), f.VMDirs, f.BundleDir, f.ShimSockets)
}

// RequireGone checks, polling for up to within (processes exit and
// sockets vanish asynchronously even after `ctr task rm` returned), that
// nothing of the footprint is left:
//   - the shim process and every recorded QEMU process have exited (a
//     zombie counts as exited), and no other shim serves ContainerID for
//     the same containerd;
//   - no live qemu-system process names any of Markers (NoQEMU);
//   - nothing is mounted under BundleDir or any VM dir (NoMountsUnder);
//   - there is no socket under BundleDir or any VM dir (NoSocketsUnder),
//     and none of ShimSockets exists;
//   - the VM dirs themselves are removed.
//
// When the deadline passes it reports every remaining item with t.Errorf
// and returns false.
func (f *Footprint) RequireGone(t testing.TB, within time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		problems := f.problems()
		if len(problems) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			t.Logf("footprint: %s", f)
			t.Logf("still present %s after removal:", within)
			return report(t, problems)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (f *Footprint) problems() []string {
	var out []string
	if f.Shim.PID != 0 && f.Shim.Alive() {
		out = append(out, fmt.Sprintf("shim process still running: %s", f.Shim))
	}
	if procs, err := ListProcs(); err != nil {
		out = append(out, err.Error())
	} else {
		for _, p := range ShimProcs(procs, f.ContainerID, f.address) {
			if p.PID != f.Shim.PID && p.State != 'Z' {
				out = append(out, fmt.Sprintf("shim process serving %s still running: %s", f.ContainerID, p))
			}
		}
	}
	reported := map[int]bool{}
	for _, q := range f.QEMU {
		if q.Alive() {
			reported[q.PID] = true
			out = append(out, fmt.Sprintf("QEMU process still running: %s", q))
		}
	}
	out = append(out, qemuProblems(f.Markers, reported)...)
	for _, d := range append([]string{f.BundleDir}, f.VMDirs...) {
		out = append(out, mountProblems(d)...)
		out = append(out, socketProblems(d)...)
	}
	for _, sock := range f.ShimSockets {
		if _, err := os.Lstat(sock); err == nil {
			out = append(out, fmt.Sprintf("shim socket %s still exists", sock))
		}
	}
	for _, d := range f.VMDirs {
		if _, err := os.Lstat(d); err == nil {
			out = append(out, fmt.Sprintf("VM state dir %s still exists", d))
		}
	}
	return out
}
