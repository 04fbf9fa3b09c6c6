package aptpkg

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

const showOutput = `Package: linux-image-6.1.0-57-cloud-amd64
Source: linux-signed-amd64 (6.1.192+3)
Version: 6.1.192-2
Filename: pool/main/l/old.deb
SHA256: 1111111111111111111111111111111111111111111111111111111111111111

Package: linux-image-6.1.0-57-cloud-amd64
Version: 6.1.192-3
Depends: kmod
Description: Linux 6.1 for x86-64 cloud
 This package contains the Linux kernel, modules and corresponding other
 Filename: pool/fake/continuation.deb
Filename: pool/updates/main/l/linux-signed-amd64/linux-image-6.1.0-57-cloud-amd64_6.1.192-3_amd64.deb
Size: 26705532
SHA256: 4FDD0172A8C3F41A97E92465B2AC1867E1C10D82D7AEED3D26EE7A5D14DF1754
`

func TestParseShow(t *testing.T) {
	info, err := parseShow([]byte(showOutput), "linux-image-6.1.0-57-cloud-amd64", "6.1.192-3")
	require.NoError(t, err)
	require.Equal(t, &Info{
		Package:  "linux-image-6.1.0-57-cloud-amd64",
		Version:  "6.1.192-3",
		Filename: "pool/updates/main/l/linux-signed-amd64/linux-image-6.1.0-57-cloud-amd64_6.1.192-3_amd64.deb",
		SHA256:   "4fdd0172a8c3f41a97e92465b2ac1867e1c10d82d7aeed3d26ee7a5d14df1754",
		Size:     26705532,
	}, info)

	_, err = parseShow([]byte(showOutput), "linux-image-6.1.0-57-cloud-amd64", "9.9")
	require.ErrorIs(t, err, errdefs.ErrNotFound)

	_, err = parseShow([]byte("Package: p\nVersion: 1\nFilename: x.deb\nSHA256: abc\n"), "p", "1")
	require.ErrorContains(t, err, `SHA256 field is "abc", want 64 hex characters`)
}

func requireApt(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("apt-cache"); err != nil {
		t.Skip("apt-cache is not installed: this host is not Debian-based")
	}
}

func TestShowUnknownVersion(t *testing.T) {
	requireApt(t)
	_, err := Show(context.Background(), "busybox-static", "0.0.0-coffer-none")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	require.ErrorContains(t, err, "run `apt-get update`")

	_, err = Show(context.Background(), "coffer-no-such-package", "1")
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	require.ErrorContains(t, err, "run `apt-get update`")
}

// TestFetchRejectsCorruptCache plants a file with the expected name but the
// wrong content in the cache and checks that Fetch refuses it rather than
// downloading or using it.
func TestFetchRejectsCorruptCache(t *testing.T) {
	requireApt(t)
	ctx := context.Background()
	// busybox-static is installed here, so apt knows its version.
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "busybox-static").Output()
	if err != nil {
		t.Skip("busybox-static is not installed, so no known package version to look up")
	}
	info, err := Show(ctx, "busybox-static", string(out))
	require.NoError(t, err)

	cache := t.TempDir()
	bad := filepath.Join(cache, filepath.Base(info.Filename))
	require.NoError(t, os.WriteFile(bad, []byte("tampered"), 0o644))
	_, _, err = Fetch(ctx, cache, "busybox-static", string(out))
	require.ErrorIs(t, err, errdefs.ErrDataLoss)
	require.ErrorContains(t, err, "delete it and rerun")
	require.ErrorContains(t, err, info.SHA256)
}

// TestFetchDownloadsThenReuses downloads a small package (busybox-static,
// about 1 MB) from the apt mirror into an empty cache, checks it against
// apt's hash, and checks that a second Fetch reuses the cached file.
func TestFetchDownloadsThenReuses(t *testing.T) {
	requireApt(t)
	if testing.Short() {
		t.Skip("downloads about 1 MB from the apt mirror; skipped in -short mode")
	}
	ctx := context.Background()
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "busybox-static").Output()
	if err != nil {
		t.Skip("busybox-static is not installed, so no known package version to fetch")
	}
	cache := t.TempDir()
	deb, info, err := Fetch(ctx, cache, "busybox-static", string(out))
	require.NoError(t, err)
	require.Equal(t, filepath.Join(cache, filepath.Base(info.Filename)), deb)
	sum, err := FileSHA256(deb)
	require.NoError(t, err)
	require.Equal(t, info.SHA256, sum)
	st1, err := os.Stat(deb)
	require.NoError(t, err)
	require.Equal(t, info.Size, st1.Size())

	again, _, err := Fetch(ctx, cache, "busybox-static", string(out))
	require.NoError(t, err)
	require.Equal(t, deb, again)
	st2, err := os.Stat(again)
	require.NoError(t, err)
	require.Equal(t, st1.ModTime(), st2.ModTime(), "second Fetch replaced the cached file")
	entries, err := os.ReadDir(cache)
	require.NoError(t, err)
	require.Len(t, entries, 1, "scratch download directories were left behind")

	dir := t.TempDir()
	require.NoError(t, Extract(ctx, deb, dir))
	_, err = os.Stat(filepath.Join(dir, "bin/busybox"))
	require.NoError(t, err)
}
