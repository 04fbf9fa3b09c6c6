package build

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/guest/initramfs"
	"github.com/cofferhq/coffer/guest/sysinit"
)

// A static ELF program stands in for cc-agent: Build only checks that the
// agent is static and copies it.
const fakeAgent = "/bin/busybox"

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

func requireHostTools(t *testing.T) {
	t.Helper()
	for _, p := range []string{fakeAgent, DefaultRuncBinary, "/usr/bin/apt-get", "/usr/bin/dpkg-deb"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s is missing: the guest build needs a Debian host with runc, apt, dpkg and busybox-static", p)
		}
	}
}

func TestModuleListNameMatchesSysinit(t *testing.T) {
	require.Equal(t, sysinit.ModuleListName, moduleList)
}

func TestBuildRejectsBadOptions(t *testing.T) {
	ctx := context.Background()
	_, err := Build(ctx, Options{OutDir: t.TempDir()})
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)

	if _, err := os.Stat(DefaultRuncBinary); err != nil {
		t.Skip("runc is not installed, so there is no dynamically linked binary to offer as agent")
	}
	_, err = Build(ctx, Options{OutDir: t.TempDir(), CacheDir: t.TempDir(), AgentBinary: DefaultRuncBinary})
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	require.ErrorContains(t, err, "dynamically linked")
	require.ErrorContains(t, err, "CGO_ENABLED=0")
}

// listInitrd decompresses and lists an initrd: mode and body by path.
func listInitrd(t *testing.T, p string) (map[string]cpio.FileMode, map[string][]byte, []string) {
	t.Helper()
	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	r := cpio.NewReader(zr)
	modes, bodies := map[string]cpio.FileMode{}, map[string][]byte{}
	var order []string
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		b, err := io.ReadAll(r)
		require.NoError(t, err)
		modes["/"+h.Name], bodies["/"+h.Name] = h.Mode, b
		order = append(order, "/"+h.Name)
	}
	return modes, bodies, order
}

// TestBuildIsReproducible builds the guest twice from the same inputs and
// compares the outputs byte for byte, then checks the initramfs layout.
func TestBuildIsReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads a ~34 MB kernel package on first use and builds twice; skipped in -short mode")
	}
	requireHostTools(t)
	ctx := context.Background()
	opts := func(out string) Options {
		return Options{
			OutDir:      out,
			CacheDir:    cacheDir(t),
			AgentBinary: fakeAgent,
			// ipv6 is built into the Debian cloud kernel (modules.builtin): it
			// must be skipped, as virtio_pci and virtio_console are.
			Modules:    append(DefaultModules(), "ipv6"),
			ExtraFiles: []initramfs.Entry{initramfs.FileBytes("/etc/coffer-test", 0o600, []byte("extra"))},
		}
	}
	outA, outB := t.TempDir(), t.TempDir()
	a, err := Build(ctx, opts(outA))
	require.NoError(t, err)
	b, err := Build(ctx, opts(outB))
	require.NoError(t, err)

	for _, name := range []string{"initrd.img", "vmlinuz", ManifestFile} {
		x, err := os.ReadFile(filepath.Join(outA, name))
		require.NoError(t, err)
		y, err := os.ReadFile(filepath.Join(outB, name))
		require.NoError(t, err)
		require.True(t, bytes.Equal(x, y), "%s differs between two builds", name)
	}
	require.Equal(t, a.Initrd, b.Initrd)

	require.Equal(t, DefaultCmdline, a.Cmdline)
	require.Equal(t, DefaultKernelPackage, a.KernelPackage)
	require.Equal(t, DefaultKernelVersion, a.KernelPackageVersion)
	require.Equal(t, "6.12.117+deb12-cloud-amd64", a.KernelVersion)
	require.Len(t, a.KernelPackageSHA256, 64)
	require.NotEmpty(t, a.RuncVersion)
	// Built into the 6.12 cloud kernel, so skipped.
	for _, m := range []string{"ipv6", "virtio_pci", "virtio_console", "virtio"} {
		require.NotContains(t, a.Modules, m)
	}
	// Dependencies precede the modules needing them.
	pos := map[string]int{}
	for i, m := range a.Modules {
		pos[m] = i
	}
	for _, pair := range [][2]string{
		{"net_failover", "virtio_net"}, {"failover", "net_failover"}, {"vsock", "vmw_vsock_virtio_transport"},
		{"configfs", "tsm"}, {"tsm", "sev_guest"}, {"tsm", "tdx_guest"},
	} {
		require.Contains(t, pos, pair[0])
		require.Less(t, pos[pair[0]], pos[pair[1]], "%s must load before %s", pair[0], pair[1])
	}

	modes, bodies, order := listInitrd(t, filepath.Join(outA, "initrd.img"))
	agent, err := os.ReadFile(fakeAgent)
	require.NoError(t, err)
	require.Equal(t, agent, bodies["/init"])
	require.Equal(t, cpio.FileMode(0o100755), modes["/init"])
	require.Equal(t, cpio.FileMode(0o020600), modes["/dev/console"])
	require.Equal(t, cpio.FileMode(0o041777), modes["/tmp"])
	require.Equal(t, "extra", string(bodies["/etc/coffer-test"]))
	for _, p := range []string{RuncPath, "/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libseccomp.so.2"} {
		require.True(t, modes[p].IsRegular(), "%s is %v in the initrd, want a regular file", p, modes[p])
	}
	for i := 1; i < len(order); i++ {
		require.Less(t, order[i-1], order[i], "initrd entries are not sorted")
	}

	modDir := "/lib/modules/" + a.KernelVersion
	var listed []string
	for _, line := range strings.Split(string(bodies[modDir+"/"+moduleList]), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		require.Contains(t, bodies, modDir+"/"+line, "listed module not in the initrd")
		require.True(t, strings.HasSuffix(line, ".ko"), line)
		// Stored decompressed (the package has .ko.xz): an ELF object.
		require.True(t, bytes.HasPrefix(bodies[modDir+"/"+line], []byte("\x7fELF")), "%s is not an uncompressed ELF module", line)
		listed = append(listed, strings.ReplaceAll(strings.TrimSuffix(filepath.Base(line), ".ko"), "-", "_"))
	}
	require.Equal(t, a.Modules, listed)

	// ReadManifest and Verify round-trip; a changed initrd is caught.
	m, err := ReadManifest(outA)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(outA, "vmlinuz"), m.KernelPath())
	require.NoError(t, m.Verify())
	require.NoError(t, os.WriteFile(m.InitrdPath(), []byte("tampered"), 0o644))
	require.ErrorIs(t, m.Verify(), errdefs.ErrDataLoss)
}

func TestReadManifestErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := ReadManifest(dir)
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	require.ErrorContains(t, err, "ccctl guest build")

	require.NoError(t, os.WriteFile(filepath.Join(dir, ManifestFile), []byte("{"), 0o644))
	_, err = ReadManifest(dir)
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)

	require.NoError(t, os.WriteFile(filepath.Join(dir, ManifestFile), []byte(`{"kernel":{"path":"vmlinuz"}}`), 0o644))
	_, err = ReadManifest(filepath.Join(dir, ManifestFile))
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
}
