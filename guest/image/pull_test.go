package image

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/log/logtest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// semanticsLayers builds three layers (gzip, zstd, uncompressed) that
// exercise every OCI layer feature Pull must honour.
func semanticsLayers(t *testing.T) []*testLayer {
	owned := func(e entry) entry { e.hdr.Uid, e.hdr.Gid = 1000, 1000; return e }
	attr := file("x/attr", 0o644, "xattr")
	attr.hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.coffer": "v"}
	null := entry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: epoch}}
	fifo := entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0o600, ModTime: epoch}}
	return []*testLayer{
		newLayer(t, types.OCILayer, tarOf(t,
			dir("etc/", 0o755),
			file("etc/keep", 0o644, "keep"),
			file("etc/remove-me", 0o644, "gone"),
			file("etc/config", 0o644, "v1"),
			dir("data/", 0o755),
			file("data/old1", 0o644, "old"),
			dir("data/sub/", 0o755),
			file("data/sub/old2", 0o644, "old"),
			dir("bin/", 0o755),
			file("bin/tool", 0o4755, "#!tool"),
			dir("tmp/", 0o1777),
			dir("home/", 0o755),
			owned(dir("home/user/", 0o700)),
			owned(file("home/user/f", 0o600, "u")),
			dir("a/", 0o755),
			file("a/target", 0o644, "hello"),
		)),
		newLayer(t, types.OCILayerZStd, tarOf(t,
			file("etc/.wh.remove-me", 0o644, ""),
			file("data/new", 0o644, "new"), // before the opaque marker: must survive it
			file("data/.wh..wh..opq", 0o644, ""),
			hardlink("a/hard", "a/target"),
			symlink("a/abs", "/a/target"),
			symlink("a/rel", "target"),
			dir("empty/", 0o755),
			attr,
			dir("dev/", 0o755),
			null,
			fifo,
		)),
		newLayer(t, types.OCIUncompressedLayer, tarOf(t,
			file("etc/config", 0o644, "v2"),
			dir("tmp/", 0o1777),
		)),
	}
}

func TestPullLayerSemantics(t *testing.T) {
	reg := startRegistry(t, false, "")
	layers := semanticsLayers(t)
	img := imageOf(t, "amd64", layers...)
	ref := reg.host + "/test/semantics:latest"
	digest := reg.push(t, ref, img)
	rootfs := filepath.Join(t.TempDir(), "rootfs")

	res, err := Pull(logtest.WithT(context.Background(), t), Request{
		Reference: ref,
		Platform:  "linux/amd64",
		Registry:  RegistryConfig{Insecure: []string{reg.host}},
	}, rootfs)
	require.NoError(t, err)

	// Result.
	assert.Equal(t, digest, res.ManifestDigest)
	assert.Empty(t, res.IndexDigest)
	var want []string
	var blobBytes int64
	for _, l := range layers {
		d, _ := l.Digest()
		want = append(want, d.String())
		blobBytes += int64(len(l.blob))
	}
	assert.Equal(t, want, res.LayerDigests)
	cfgName, err := img.ConfigName()
	require.NoError(t, err)
	sum := sha256.Sum256(res.ConfigJSON)
	assert.Equal(t, cfgName.Hex, hex.EncodeToString(sum[:]))
	assert.Greater(t, res.BytesFetched, blobBytes+int64(len(res.ConfigJSON)))
	assert.Positive(t, res.Duration)

	p := func(s string) string { return filepath.Join(rootfs, s) }
	read := func(s string) string {
		b, err := os.ReadFile(p(s))
		require.NoError(t, err, s)
		return string(b)
	}
	lstat := func(s string) (os.FileInfo, *syscall.Stat_t) {
		fi, err := os.Lstat(p(s))
		require.NoError(t, err, s)
		return fi, fi.Sys().(*syscall.Stat_t)
	}

	// Whiteout of a lower file; the marker itself is not written.
	assert.Equal(t, "keep", read("etc/keep"))
	assert.NoFileExists(t, p("etc/remove-me"))
	assert.NoFileExists(t, p("etc/.wh.remove-me"))
	// Upper layer replaces a file.
	assert.Equal(t, "v2", read("etc/config"))
	// Opaque directory: lower content gone, this layer's content kept.
	ents, err := os.ReadDir(p("data"))
	require.NoError(t, err)
	require.Len(t, ents, 1)
	assert.Equal(t, "new", ents[0].Name())
	// Hard link.
	tfi, tst := lstat("a/target")
	hfi, _ := lstat("a/hard")
	assert.True(t, os.SameFile(tfi, hfi), "a/hard must be a hard link of a/target")
	assert.EqualValues(t, 2, tst.Nlink)
	// Symlinks, absolute and relative, kept verbatim.
	abs, err := os.Readlink(p("a/abs"))
	require.NoError(t, err)
	assert.Equal(t, "/a/target", abs)
	rel, err := os.Readlink(p("a/rel"))
	require.NoError(t, err)
	assert.Equal(t, "target", rel)
	assert.Equal(t, "hello", read("a/rel"))
	// Modes: setuid and sticky.
	fi, _ := lstat("bin/tool")
	assert.Equal(t, os.ModeSetuid|0o755, fi.Mode())
	fi, _ = lstat("tmp")
	assert.Equal(t, os.ModeDir|os.ModeSticky|0o777, fi.Mode())
	// Ownership.
	fi, st := lstat("home/user")
	assert.Equal(t, os.ModeDir|0o700, fi.Mode())
	assert.EqualValues(t, 1000, st.Uid)
	assert.EqualValues(t, 1000, st.Gid)
	_, st = lstat("home/user/f")
	assert.EqualValues(t, 1000, st.Uid)
	assert.EqualValues(t, 1000, st.Gid)
	// Empty directory.
	ents, err = os.ReadDir(p("empty"))
	require.NoError(t, err)
	assert.Empty(t, ents)
	// Mtimes of files and of directories no later layer touched.
	fi, _ = lstat("bin/tool")
	assert.True(t, fi.ModTime().Equal(epoch), "bin/tool mtime %v", fi.ModTime())
	fi, _ = lstat("bin")
	assert.True(t, fi.ModTime().Equal(epoch), "bin mtime %v", fi.ModTime())
	// Xattrs (the test dir is on ext4, which has user.* xattrs).
	buf := make([]byte, 16)
	n, err := unix.Lgetxattr(p("x/attr"), "user.coffer", buf)
	require.NoError(t, err)
	assert.Equal(t, "v", string(buf[:n]))
	// FIFO, and a device node (we run as root, so mknod is permitted).
	fi, _ = lstat("dev/fifo")
	assert.Equal(t, os.ModeNamedPipe|0o600, fi.Mode())
	if os.Geteuid() != 0 {
		t.Skip("device node check needs root (CAP_MKNOD); everything else passed")
	}
	fi, st = lstat("dev/null")
	assert.Equal(t, os.ModeDevice|os.ModeCharDevice|0o666, fi.Mode())
	assert.EqualValues(t, 1, unix.Major(st.Rdev))
	assert.EqualValues(t, 3, unix.Minor(st.Rdev))
}

func TestPullByDigestIgnoresMovedTag(t *testing.T) {
	reg := startRegistry(t, false, "")
	ref := reg.host + "/test/moving:latest"
	first := reg.push(t, ref, imageOf(t, "amd64", newLayer(t, types.OCILayer, tarOf(t, file("which", 0o644, "first")))))
	reg.push(t, ref, imageOf(t, "amd64", newLayer(t, types.OCILayer, tarOf(t, file("which", 0o644, "second")))))
	rootfs := filepath.Join(t.TempDir(), "rootfs")

	res, err := Pull(logtest.WithT(context.Background(), t), Request{
		Reference: ref,
		Digest:    first,
		Registry:  RegistryConfig{Insecure: []string{reg.host}},
	}, rootfs)
	require.NoError(t, err)
	assert.Equal(t, first, res.ManifestDigest)
	b, err := os.ReadFile(filepath.Join(rootfs, "which"))
	require.NoError(t, err)
	assert.Equal(t, "first", string(b))
}

func TestPullDigestConflictsWithReference(t *testing.T) {
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	a := "sha256:" + hex.EncodeToString(make([]byte, 32))
	b := "sha256:" + hex.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: "127.0.0.1:1/x@" + a, Digest: b}, rootfs)
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	assert.ErrorContains(t, err, "pins digest "+a+" but Request.Digest is "+b)
}

func TestPullIndexPicksPlatform(t *testing.T) {
	reg := startRegistry(t, false, "")
	ref := reg.host + "/test/multi:latest"
	arm := imageOf(t, "arm64", newLayer(t, types.OCILayer, tarOf(t, file("arch", 0o644, "arm64"))))
	amd := imageOf(t, "amd64", newLayer(t, types.OCILayer, tarOf(t, file("arch", 0o644, "amd64"))))
	idx := reg.pushIndex(t, ref, map[string]v1.Image{"arm64": arm, "amd64": amd})
	armDigest, err := arm.Digest()
	require.NoError(t, err)
	cfg := RegistryConfig{Insecure: []string{reg.host}}

	for _, tc := range []struct{ platform, want string }{
		{"linux/arm64", "arm64"},
		{"linux/amd64", "amd64"},
		{"", "amd64"}, // runtime.GOARCH on this machine
	} {
		t.Run("platform="+tc.platform, func(t *testing.T) {
			if tc.platform == "" && runtime.GOARCH != "amd64" {
				t.Skipf("default-platform case expects an amd64 host, this is %s", runtime.GOARCH)
			}
			rootfs := filepath.Join(t.TempDir(), "rootfs")
			res, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, Digest: idx, Platform: tc.platform, Registry: cfg}, rootfs)
			require.NoError(t, err)
			assert.Equal(t, idx, res.IndexDigest)
			b, err := os.ReadFile(filepath.Join(rootfs, "arch"))
			require.NoError(t, err)
			assert.Equal(t, tc.want, string(b))
			if tc.want == "arm64" {
				assert.Equal(t, armDigest.String(), res.ManifestDigest)
			}
		})
	}

	t.Run("missing platform", func(t *testing.T) {
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, Platform: "linux/riscv64", Registry: cfg}, rootfs)
		require.Error(t, err)
		t.Logf("error: %v", err)
		assert.True(t, errdefs.IsNotFound(err), "%v", err)
		assert.ErrorContains(t, err, "has no image manifest for platform linux/riscv64 (it offers linux/arm64, linux/amd64)")
		requireEmptyDir(t, rootfs)
	})

	t.Run("single manifest of another platform", func(t *testing.T) {
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, Digest: armDigest.String(), Platform: "linux/amd64", Registry: cfg}, rootfs)
		require.Error(t, err)
		t.Logf("error: %v", err)
		assert.ErrorContains(t, err, "is for linux/arm64, want linux/amd64")
	})
}

func TestPullLayerDigestsMismatchRefused(t *testing.T) {
	reg := startRegistry(t, false, "")
	ref := reg.host + "/test/pinned:latest"
	l := newLayer(t, types.OCILayer, tarOf(t, file("f", 0o644, "x")))
	reg.push(t, ref, imageOf(t, "amd64", l))
	other := newLayer(t, types.OCILayer, tarOf(t, file("f", 0o644, "y")))
	wantD, _ := other.Digest()
	gotD, _ := l.Digest()
	cfg := RegistryConfig{Insecure: []string{reg.host}}

	for name, want := range map[string][]string{
		"different digest": {wantD.String()},
		"different count":  {gotD.String(), wantD.String()},
	} {
		t.Run(name, func(t *testing.T) {
			rootfs := filepath.Join(t.TempDir(), "rootfs")
			before := reg.blobGets.Load()
			_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, LayerDigests: want, Registry: cfg}, rootfs)
			require.Error(t, err)
			t.Logf("error: %v", err)
			assert.True(t, errdefs.IsFailedPrecondition(err), "%v", err)
			assert.ErrorContains(t, err, "Request.LayerDigests")
			// Only the config blob was fetched: no layer was downloaded.
			assert.EqualValues(t, 1, reg.blobGets.Load()-before)
			requireEmptyDir(t, rootfs)
		})
	}

	t.Run("matching", func(t *testing.T) {
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, LayerDigests: []string{gotD.String()}, Registry: cfg}, rootfs)
		require.NoError(t, err)
	})
}

func TestPullTamperedLayer(t *testing.T) {
	for _, tc := range []struct {
		name string
		mt   types.MediaType
		at   int64 // offset of the flipped bit in the blob
	}{
		// A flipped bit in deflate data breaks decompression mid-stream.
		{"gzip", types.OCILayer, 60},
		// A flipped bit in file content applies cleanly: only the digest
		// at the end of the stream catches it, after the content landed.
		{"uncompressed", types.OCIUncompressedLayer, 512 + 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := startRegistry(t, false, "")
			ref := reg.host + "/test/tampered:latest"
			good := newLayer(t, types.OCILayer, tarOf(t, dir("lower/", 0o755), file("lower/ok", 0o644, "fine")))
			body := make([]byte, 4096)
			for i := range body {
				body[i] = byte('a' + i%26)
			}
			bad := newLayer(t, tc.mt, tarOf(t, file("payload", 0o755, string(body))))
			reg.push(t, ref, imageOf(t, "amd64", good, bad))
			badD, _ := bad.Digest()
			reg.tamperBlob.Store(tamper{digest: badD.String(), at: tc.at})
			rootfs := filepath.Join(t.TempDir(), "rootfs")

			_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, Registry: RegistryConfig{Insecure: []string{reg.host}}}, rootfs)
			require.Error(t, err)
			t.Logf("error: %v", err)
			var dm *DigestMismatchError
			require.ErrorAs(t, err, &dm, "%v", err)
			assert.Equal(t, "digest", dm.Kind)
			assert.Equal(t, badD.String(), dm.Want)
			assert.NotEqual(t, dm.Want, dm.Got)
			assert.True(t, errdefs.IsDataLoss(err))
			assert.ErrorContains(t, err, "layer "+badD.String()+": digest mismatch: expected "+badD.String()+", actual sha256:")
			requireEmptyDir(t, rootfs)
		})
	}
}

func TestPullDiffIDMismatchRefused(t *testing.T) {
	reg := startRegistry(t, false, "")
	ref := reg.host + "/test/diffid:latest"
	l := newLayer(t, types.OCILayer, tarOf(t, file("f", 0o644, "content")))
	l.diffID = hashOf([]byte("not the tar")) // the config will list this
	reg.push(t, ref, imageOf(t, "amd64", l))
	rootfs := filepath.Join(t.TempDir(), "rootfs")

	_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, Registry: RegistryConfig{Insecure: []string{reg.host}}}, rootfs)
	require.Error(t, err)
	t.Logf("error: %v", err)
	var dm *DigestMismatchError
	require.ErrorAs(t, err, &dm, "%v", err)
	assert.Equal(t, "diff_id", dm.Kind)
	assert.Equal(t, l.diffID.String(), dm.Want)
	assert.Equal(t, hashOf(l.tar).String(), dm.Got)
	assert.ErrorContains(t, err, "diff_id mismatch")
	requireEmptyDir(t, rootfs)
}

func TestPullRefusesLayerMediaTypes(t *testing.T) {
	for mt, tc := range map[types.MediaType]struct {
		want  string
		class func(error) bool
	}{
		// No Request.Decrypt: refused before any layer is fetched.
		"application/vnd.oci.image.layer.v1.tar+gzip+encrypted":  {"is encrypted (media type \"application/vnd.oci.image.layer.v1.tar+gzip+encrypted\") but no decryption source is configured (Request.Decrypt): encrypted layers need the attestation path", errdefs.IsFailedPrecondition},
		"application/vnd.oci.image.layer.v1.tar+bzip2":           {"is not supported", errdefs.IsNotImplemented},
		"application/vnd.oci.image.layer.v1.tar+bzip2+encrypted": {"is not supported", errdefs.IsNotImplemented},
	} {
		t.Run(string(mt), func(t *testing.T) {
			reg := startRegistry(t, false, "")
			ref := reg.host + "/test/mt:latest"
			l := newLayer(t, types.OCILayer, tarOf(t, file("f", 0o644, "x")))
			l.mt = mt
			reg.push(t, ref, imageOf(t, "amd64", l))
			rootfs := filepath.Join(t.TempDir(), "rootfs")
			before := reg.blobGets.Load()
			_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, Registry: RegistryConfig{Insecure: []string{reg.host}}}, rootfs)
			require.Error(t, err)
			t.Logf("error: %v", err)
			assert.ErrorContains(t, err, tc.want)
			assert.True(t, tc.class(err), "%v", err)
			assert.EqualValues(t, 1, reg.blobGets.Load()-before, "only the config blob may be fetched")
			requireEmptyDir(t, rootfs)
		})
	}
}

func TestPullPathTraversalNeutralised(t *testing.T) {
	reg := startRegistry(t, false, "")
	outside := t.TempDir()
	rootfs := filepath.Join(outside, "rootfs")
	ref := reg.host + "/test/escape:latest"
	reg.push(t, ref, imageOf(t, "amd64", newLayer(t, types.OCILayer, tarOf(t,
		file("../escape-dotdot", 0o644, "x"),
		symlink("evil", "../../../.."),
		file("evil/via-rel-link", 0o644, "x"),
		symlink("abs", outside),
		file("abs/via-abs-link", 0o644, "x"),
	))))

	_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, Registry: RegistryConfig{Insecure: []string{reg.host}}}, rootfs)
	require.NoError(t, err)
	// Nothing was written next to rootfs…
	ents, err := os.ReadDir(outside)
	require.NoError(t, err)
	require.Len(t, ents, 1)
	assert.Equal(t, "rootfs", ents[0].Name())
	// …everything landed inside it, links resolved against the rootfs root.
	assert.FileExists(t, filepath.Join(rootfs, "escape-dotdot"))
	assert.FileExists(t, filepath.Join(rootfs, "via-rel-link"))
	assert.FileExists(t, filepath.Join(rootfs, outside, "via-abs-link"))
}

func TestPullHardlinkOutsideRefused(t *testing.T) {
	reg := startRegistry(t, false, "")
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	require.NoError(t, os.WriteFile(secret, []byte("s"), 0o600))
	rootfs := filepath.Join(outside, "rootfs")
	ref := reg.host + "/test/hardlink:latest"
	reg.push(t, ref, imageOf(t, "amd64", newLayer(t, types.OCILayer, tarOf(t,
		hardlink("hl", "../secret"),
	))))

	_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, Registry: RegistryConfig{Insecure: []string{reg.host}}}, rootfs)
	require.Error(t, err, "a hard link to ../secret resolves to <rootfs>/secret, which does not exist")
	t.Logf("error: %v", err)
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(secret, &st))
	assert.EqualValues(t, 1, st.Nlink, "the file outside rootfs must not gain a link")
	requireEmptyDir(t, rootfs)
}

func TestPullRefusesNonEmptyRootfs(t *testing.T) {
	rootfs := t.TempDir()
	keep := filepath.Join(rootfs, "precious")
	require.NoError(t, os.WriteFile(keep, []byte("x"), 0o644))
	_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: "127.0.0.1:1/x:y"}, rootfs)
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.True(t, errdefs.IsFailedPrecondition(err), "%v", err)
	assert.ErrorContains(t, err, "is not empty")
	assert.FileExists(t, keep, "a refused pull must not touch existing content")
}

// TestPullTamperedMetadata alters, in transit, a manifest named by digest, a
// platform manifest named by its index, and a config blob. go-containerregistry
// catches these first (its by-digest and blob checks); Pull re-checks them
// itself. Either way the error names the digest expected and the one found.
func TestPullTamperedMetadata(t *testing.T) {
	reg := startRegistry(t, false, "")
	img := imageOf(t, "amd64", newLayer(t, types.OCILayer, tarOf(t, file("f", 0o644, "x"))))
	mref := reg.host + "/test/meta:single"
	manifest := reg.push(t, mref, img)
	iref := reg.host + "/test/meta:index"
	index := reg.pushIndex(t, iref, map[string]v1.Image{"amd64": img})
	cfg, err := img.ConfigName()
	require.NoError(t, err)
	rc := RegistryConfig{Insecure: []string{reg.host}}

	for _, tc := range []struct {
		name, tamper string
		req          Request
	}{
		{"manifest by digest", manifest, Request{Reference: mref, Digest: manifest, Registry: rc}},
		{"platform manifest from index", manifest, Request{Reference: iref, Digest: index, Platform: "linux/amd64", Registry: rc}},
		{"config", cfg.String(), Request{Reference: mref, Digest: manifest, Registry: rc}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg.tamperBlob.Store(tamper{digest: tc.tamper, at: 20})
			defer reg.tamperBlob.Store(tamper{})
			rootfs := filepath.Join(t.TempDir(), "rootfs")
			_, err := Pull(logtest.WithT(context.Background(), t), tc.req, rootfs)
			require.Error(t, err)
			t.Logf("error: %v", err)
			assert.ErrorContains(t, err, tc.tamper)
			assert.Regexp(t, `sha256:[0-9a-f]{64}.*sha256:[0-9a-f]{64}`, err.Error(), "expected and actual digests")
			requireEmptyDir(t, rootfs)
		})
	}
}
