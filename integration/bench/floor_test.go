package bench

import (
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/shim"
	"github.com/cofferhq/coffer/vmm"
	"github.com/cofferhq/coffer/vmm/qemu"
)

func TestWriteFloorInitrd(t *testing.T) {
	dir := t.TempDir()
	initPath := filepath.Join(dir, "poweroff")
	require.NoError(t, os.WriteFile(initPath, []byte("\x7fELF fake init"), 0o755))
	out := filepath.Join(dir, "floor.img")
	require.NoError(t, writeFloorInitrd(out, initPath))

	f, err := os.Open(out)
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	r := cpio.NewReader(zr)
	got := map[string]*cpio.Header{}
	var initData []byte
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		got[h.Name] = h
		if h.Name == "init" {
			initData, err = io.ReadAll(r)
			require.NoError(t, err)
		}
	}
	require.Len(t, got, 3, "init, dev and dev/console: %v", got)
	require.Equal(t, "\x7fELF fake init", string(initData))
	require.Equal(t, cpio.FileMode(cpio.TypeReg|0o755), got["init"].Mode)
	require.Equal(t, cpio.FileMode(cpio.TypeChar|0o600), got["dev/console"].Mode)

	err = writeFloorInitrd(out, filepath.Join(dir, "missing"))
	require.ErrorContains(t, err, "build integration/bench/poweroff statically")
}

// testBench returns a Bench whose shim config mirrors the one scripts/*.sh
// write, with a fake guest dir, without containerd.
func testBench(t *testing.T, kernel string) *Bench {
	t.Helper()
	dir := t.TempDir()
	guest := filepath.Join(dir, "guest")
	require.NoError(t, os.MkdirAll(guest, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(guest, "manifest.json"),
		[]byte(`{"cmdline": "console=ttyS0 loglevel=6 panic=-1 reboot=t cc.net=10.0.2.15/24,10.0.2.2,10.0.2.3"}`), 0o644))
	kernelLine := ""
	if kernel != "" {
		kernelLine = "kernel_path = \"" + kernel + "\"\n"
	} else {
		require.NoError(t, os.WriteFile(filepath.Join(guest, "vmlinuz"), []byte("fake"), 0o644))
	}
	cfgPath := filepath.Join(dir, "cc.toml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(`[hypervisor]
accel = "tcg"
guest_dir = "`+guest+`"
`+kernelLine+`
[agent]
transport = "virtio-serial"

[network]
forwards = ["127.0.0.1:33743"]

[registry]
insecure = ["127.0.0.1:33743"]
`), 0o644))
	sc, err := shim.LoadConfig(cfgPath)
	require.NoError(t, err)
	cmdline, err := guestCmdline(sc)
	require.NoError(t, err)
	return &Bench{
		cfg:         Config{ShimBinary: "/work/main/build/bin/containerd-shim-cc-v2", WorkDir: dir},
		shimCfg:     sc,
		cmdline:     cmdline,
		accel:       vmm.ResolveAccel(vmm.Accel(sc.Hypervisor.Accel)),
		floorInitrd: filepath.Join(dir, "floor-initrd.img"),
	}
}

func TestFloorVMMatchesShimCommandLine(t *testing.T) {
	b := testBench(t, "")
	state := filepath.Join(b.cfg.WorkDir, "floor-1")
	args, err := qemu.Args(b.floorVM("coffer-dbg-1", state))
	require.NoError(t, err)

	// The shim's QEMU command line for container dbg-1, from /proc during
	// a run with the same shim config; only the initrd and the paths
	// differ for the floor.
	shimArgv := "-name coffer-dbg-1 -machine q35 -accel tcg -cpu max -smp 1 -m 512M -nodefaults -no-user-config -nographic -no-reboot " +
		"-kernel GUEST/vmlinuz -initrd GUEST/initrd.img " +
		"-append console=ttyS0 loglevel=6 panic=-1 reboot=t cc.net=10.0.2.15/24,10.0.2.2,10.0.2.3 " +
		"-chardev file,id=console,path=STATE/console.log -serial chardev:console " +
		"-qmp unix:STATE/qmp.sock,server=on,wait=off -pidfile STATE/qemu.pid " +
		"-netdev user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:33743-cmd:/work/main/build/bin/containerd-shim-cc-v2 forward 127.0.0.1:33743 " +
		"-device virtio-net-pci,netdev=net0,romfile= -device virtio-serial-pci " +
		"-chardev socket,id=agent,path=STATE/agent.sock,server=on,wait=off -device virtserialport,chardev=agent,name=agent.0"
	want := strings.NewReplacer("GUEST/initrd.img", b.floorInitrd, "GUEST", b.shimCfg.Hypervisor.GuestDir, "STATE", state).Replace(shimArgv)
	require.Equal(t, want, strings.Join(args, " "))
}

func TestGuestCmdlineErrors(t *testing.T) {
	sc := &shim.Config{}
	sc.Hypervisor.GuestDir = t.TempDir()
	_, err := guestCmdline(sc)
	require.ErrorContains(t, err, "run `make guest`")
	require.NoError(t, os.WriteFile(filepath.Join(sc.Hypervisor.GuestDir, "manifest.json"), []byte(`{}`), 0o644))
	_, err = guestCmdline(sc)
	require.ErrorContains(t, err, `has no "cmdline"`)
	sc.Hypervisor.KernelCmdline = "console=ttyS0"
	got, err := guestCmdline(sc)
	require.NoError(t, err)
	require.Equal(t, "console=ttyS0", got)
}

// TestRunFloorPowersOff boots the real floor VM once: the guest kernel
// from `make guest` with the poweroff init. It checks that the VM reached
// /init and QEMU exited, not how long it took.
func TestRunFloorPowersOff(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a QEMU VM (about 3-5 s under TCG); skipped with -short")
	}
	kernel, err := filepath.Abs("../../build/guest/vmlinuz")
	require.NoError(t, err)
	_, kerr := os.Stat(kernel)
	_, qerr := exec.LookPath(vmm.DefaultBinary)
	if kerr != nil || qerr != nil {
		msg := "needs build/guest/vmlinuz (`make guest`) and " + vmm.DefaultBinary + " on PATH"
		if os.Getenv("COFFER_REQUIRE_E2E") != "" {
			t.Fatalf("%s; COFFER_REQUIRE_E2E is set, so this is a failure (%v, %v)", msg, kerr, qerr)
		}
		t.Skip(msg)
	}
	b := testBench(t, kernel)
	initPath := filepath.Join(b.cfg.WorkDir, "poweroff")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", initPath, "./poweroff")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build the poweroff init: %s", out)
	require.NoError(t, writeFloorInitrd(b.floorInitrd, initPath))

	f, err := b.runFloor(context.Background(), 1)
	require.NoError(t, err)
	require.Contains(t, f.Console, MarkKernel)
	require.Contains(t, f.Console, MarkFloorInit)
	require.LessOrEqual(t, f.Console[MarkKernel], f.Console[MarkFloorInit])
	require.LessOrEqual(t, f.Console[MarkFloorInit], f.Total)
	require.Positive(t, f.QEMUPeak)
	_, err = os.Stat(filepath.Join(b.cfg.WorkDir, "floor-1"))
	require.ErrorIs(t, err, os.ErrNotExist, "the floor VM's state dir must be removed")
}
