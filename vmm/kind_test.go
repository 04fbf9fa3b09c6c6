package vmm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{"": KindQEMU, "qemu": KindQEMU, "cloud-hypervisor": KindCloudHypervisor} {
		got, err := ParseKind(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	_, err := ParseKind("firecracker")
	require.EqualError(t, err, `parse vmm kind: "firecracker" is not a VMM, want "qemu" or "cloud-hypervisor"`)
}

func TestCheckImageFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "x.igvm")
	require.NoError(t, os.WriteFile(f, []byte("x"), 0o644))
	require.NoError(t, CheckImageFile("igvm", f, "fix it"))

	err := CheckImageFile("igvm", filepath.Join(dir, "missing"), "fix it")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	require.EqualError(t, err, "igvm "+filepath.Join(dir, "missing")+": no such file: fix it")

	require.ErrorIs(t, CheckImageFile("igvm", "rel/x", "fix it"), errdefs.ErrInvalidArgument)
	require.ErrorIs(t, CheckImageFile("igvm", dir, "fix it"), errdefs.ErrInvalidArgument)
	require.ErrorIs(t, CheckImageFile("igvm", "", "fix it"), errdefs.ErrInvalidArgument)
}

func TestCheckSocketPath(t *testing.T) {
	require.NoError(t, CheckSocketPath("api socket", "/run/cc/abc/api.sock", "shorten it"))
	long := "/" + strings.Repeat("a", MaxSocketPathLen)
	err := CheckSocketPath("api socket", long, "shorten it")
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	require.ErrorContains(t, err, "api socket path "+long+" is 108 bytes, longer than the 107-byte limit of a unix socket path: shorten it")
}

func TestErrorf(t *testing.T) {
	err := Errorf(errdefs.ErrUnavailable, "no %s here", "kvm")
	require.EqualError(t, err, "no kvm here")
	require.ErrorIs(t, err, errdefs.ErrUnavailable)
}
