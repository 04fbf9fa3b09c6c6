package sysinit_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/guest/build"
	"github.com/cofferhq/coffer/guest/initramfs"
	"github.com/cofferhq/coffer/guest/sysinit"
)

const (
	qemuBinary  = "qemu-system-x86_64"
	passMarker  = "COFFER-TESTINIT PASS"
	failMarker  = "COFFER-TESTINIT FAIL"
	bootTimeout = 120 * time.Second
)

// cacheDir returns the kernel package cache shared by tests and builds:
// $COFFER_BUILD_CACHE, else build/cache at the module root (gitignored).
func cacheDir(t *testing.T) string {
	if d := os.Getenv("COFFER_BUILD_CACHE"); d != "" {
		return d
	}
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "module root not found two levels above the test")
	return filepath.Join(root, "build", "cache")
}

// buildTestGuest compiles internal/testinit as a static /init and builds a
// guest around it with a busybox bundle.
func buildTestGuest(t *testing.T) *build.Manifest {
	t.Helper()
	dir := t.TempDir()
	initBin := filepath.Join(dir, "testinit")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", initBin, "./internal/testinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "build testinit: %s", out)

	m, err := build.Build(context.Background(), build.Options{
		OutDir:      filepath.Join(dir, "guest"),
		CacheDir:    cacheDir(t),
		AgentBinary: initBin,
		ExtraFiles: []initramfs.Entry{
			initramfs.File("/bundle/rootfs/bin/busybox", 0o755, "/bin/busybox"),
			initramfs.Dir("/bundle/rootfs/proc", 0o555),
			initramfs.Dir("/bundle/rootfs/dev", 0o755),
			initramfs.Dir("/bundle/rootfs/sys", 0o555),
		},
	})
	require.NoError(t, err)
	return m
}

// bootResult is what one QEMU run produced.
type bootResult struct {
	console    string
	toMarker   time.Duration // QEMU start to the PASS/FAIL line (±20 ms polling)
	toExit     time.Duration // QEMU start to QEMU exit
	markerSeen bool
}

// boot runs the guest under TCG with memMiB of RAM until it powers off.
func boot(t *testing.T, m *build.Manifest, memMiB int, cmdline string) bootResult {
	t.Helper()
	log := filepath.Join(t.TempDir(), "console.log")
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuBinary,
		"-machine", "q35", "-accel", "tcg", "-cpu", "max",
		"-m", fmt.Sprint(memMiB), "-smp", "1",
		"-nodefaults", "-nographic", "-no-reboot",
		"-kernel", m.KernelPath(), "-initrd", m.InitrdPath(), "-append", cmdline,
		"-serial", "file:"+log,
		"-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,romfile=",
		"-device", "virtio-serial-pci", "-chardev", "null,id=agent",
		"-device", "virtserialport,chardev=agent,name="+sysinit.DefaultVirtioSerialPort,
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var r bootResult
	checkMarker := func() {
		if b, _ := os.ReadFile(log); !r.markerSeen && (bytes.Contains(b, []byte(passMarker)) || bytes.Contains(b, []byte(failMarker))) {
			r.markerSeen, r.toMarker = true, time.Since(start)
		}
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case err := <-done:
			r.toExit = time.Since(start)
			checkMarker() // printed in the last poll interval
			require.NoError(t, err, "qemu: %s", stderr.String())
			waiting = false
		case <-tick.C:
			checkMarker()
		}
	}
	b, err := os.ReadFile(log)
	require.NoError(t, err)
	r.console = string(b)
	return r
}

// TestBootGuest builds a guest whose /init runs the sysinit steps and a runc
// container, boots it under QEMU TCG at 256 and 128 MiB, and checks the
// markers init printed on the serial console.
func TestBootGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU twice (about 10 s each under TCG); skipped in -short mode")
	}
	if _, err := exec.LookPath(qemuBinary); err != nil {
		t.Skipf("%s is not installed: install Debian's qemu-system-x86", qemuBinary)
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("/bin/busybox is missing: install busybox-static for the container's rootfs")
	}
	m := buildTestGuest(t)
	t.Logf("initrd %d bytes, kernel %s, modules %v", m.Initrd.Size, m.KernelVersion, m.Modules)

	cmdline := m.Cmdline + " cc.transport=virtio-serial"
	for _, mem := range []int{256, 128} {
		t.Run(fmt.Sprintf("%dMiB", mem), func(t *testing.T) {
			r := boot(t, m, mem, cmdline)
			if !strings.Contains(r.console, passMarker) {
				t.Fatalf("no %q on the console after %v; console log:\n%s", passMarker, r.toExit, r.console)
			}
			require.NotContains(t, r.console, failMarker)
			require.Contains(t, r.console, `container said "hello from runc"`)
			require.True(t, r.markerSeen)
			t.Logf("console log:\n%s", r.console)
			t.Logf("QEMU start to PASS marker %v, to exit %v", r.toMarker.Round(time.Millisecond), r.toExit.Round(time.Millisecond))
		})
	}
}
