package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/typeurl/v2"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/require"

	ccevents "github.com/cofferhq/coffer/api/events/v1"
	"github.com/cofferhq/coffer/integration/harness"
	"github.com/cofferhq/coffer/snapshot/guestpull"
)

// contentDigests returns the digests of every blob in containerd's
// content store.
func contentDigests(t *testing.T, e *env) map[string]bool {
	t.Helper()
	dir := filepath.Join(e.ctd.RootDir(), "io.containerd.content.v1.content", "blobs", "sha256")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	out := map[string]bool{}
	for _, en := range entries {
		out["sha256:"+en.Name()] = true
	}
	return out
}

// requireSnapshotterRootClean checks that cc-snapshotter's root holds its
// metadata and its empty directory, and no file from any image.
func requireSnapshotterRootClean(t *testing.T, e *env) {
	t.Helper()
	root := e.ctd.Snapshotter().Root()
	var found []string
	require.NoError(t, filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			rel, _ := filepath.Rel(root, p)
			found = append(found, rel)
		}
		return nil
	}))
	require.ElementsMatch(t, []string{"metadata.db", guestpull.EmptyDirName}, found,
		"cc-snapshotter's root must hold only its metadata and an empty directory")
}

// layerDigests returns the compressed layer digests of img, base first.
func layerDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	layers, err := img.Layers()
	require.NoError(t, err)
	var out []string
	for _, l := range layers {
		d, err := l.Digest()
		require.NoError(t, err)
		out = append(out, d.String())
	}
	return out
}

// TestGuestPullFetchesNoLayerOnHost: `ctr image pull --snapshotter cc` of a
// multi-layer image leaves the manifest and config in containerd's content
// store and no layer blob; cc-snapshotter's root holds no file from the
// image; and the guest then pulls exactly the manifest containerd
// resolved.
func TestGuestPullFetchesNoLayerOnHost(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	img, err := harness.WhiteoutImage()
	require.NoError(t, err)
	ref, digest := e.pushAndPull("layers", img)
	layers := layerDigests(t, img)
	require.Len(t, layers, 3)
	cfgName, err := img.ConfigName()
	require.NoError(t, err)

	blobs := contentDigests(t, e)
	require.True(t, blobs[digest], "the manifest %s must be in the content store", digest)
	require.True(t, blobs[cfgName.String()], "the config %s must be in the content store", cfgName)
	for _, l := range layers {
		require.False(t, blobs[l], "layer %s must not be fetched to the host", l)
	}
	require.Len(t, blobs, 2, "content store: %v", blobs)
	requireSnapshotterRootClean(t, e)

	out, err := e.run([]string{"--rm"}, ref, newID("guestpull"), "cat", "/data/b")
	require.NoError(t, err)
	require.Equal(t, "b\n", out)
	require.Contains(t, e.ctd.LogTail(400), `manifest="`+digest+`"`, "the guest must pull the manifest containerd resolved")
	require.False(t, contentDigests(t, e)[layers[0]], "running must not fetch layers to the host either")
}

// TestRestartBetweenPullAndRun: cc-snapshotter's metadata and containerd's
// records survive restarting both between the pull and the run.
func TestRestartBetweenPullAndRun(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	require.NoError(t, e.ctd.Snapshotter().Restart())
	e.ctd.Restart(t)
	out, err := e.run([]string{"--rm"}, ref, newID("restart"), "echo", "after-restart")
	require.NoError(t, err)
	require.Equal(t, "after-restart\n", out)
}

// TestRemoveLeavesNoSnapshots: removing the container and the image leaves
// no snapshot metadata and no directory behind.
func TestRemoveLeavesNoSnapshots(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	_, err := e.run([]string{"--rm"}, ref, newID("rm"), "true")
	require.NoError(t, err)
	_, err = e.ctd.Ctr(e.ctx, "image", "rm", "--sync", ref)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		out, err := e.ctd.Ctr(e.ctx, "snapshots", "--snapshotter", harness.CCSnapshotterName, "ls")
		return err == nil && len(strings.Split(strings.TrimSpace(out), "\n")) == 1
	}, 30*time.Second, 200*time.Millisecond, "cc-snapshotter must hold no snapshot after the image is removed")
	requireSnapshotterRootClean(t, e)
}

// runOverlayArgs is `ctr run` with the cc runtime but containerd's default
// (host-unpacking) snapshotter.
func (e *env) runOverlayArgs(ref, id string, cmd ...string) []string {
	args := []string{"run", "--rm", "--runtime", harness.RuntimeType, "--runtime-config-path", e.shimConfig,
		"--fifo-dir", e.ctd.FIFODir(), ref, id}
	return append(args, cmd...)
}

// TestHostUnpackedRootfsRefused: an image pulled with overlayfs (its layers
// fetched and unpacked on the host) is refused by the confidential
// runtime, with a message saying how to fix it.
func TestHostUnpackedRootfsRefused(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	img, err := harness.BusyboxImage()
	require.NoError(t, err)
	ref, _ := harness.Push(t, e.reg, "overlay", img)
	require.NoError(t, harness.ImagePull(e.ctx, e.ctd, ref))
	vmDirsBefore, err := harness.VMStateDirs()
	require.NoError(t, err)
	id := newID("refused")
	_, err = e.ctd.Ctr(e.ctx, e.runOverlayArgs(ref, id, "echo", "never")...)
	require.Error(t, err)
	msg := stderrOf(t, err)
	require.Contains(t, msg, "unpacked on the host")
	require.Contains(t, msg, "--snapshotter cc")
	require.Contains(t, msg, "force_guest_pull")
	requireFailedCreateClean(t, e, id, vmDirsBefore)
}

// TestForceGuestPull: with image.force_guest_pull the same host-unpacked
// image runs, pulled in the guest by name, and the shim publishes a
// /cc/warning event saying so.
func TestForceGuestPull(t *testing.T) {
	e := newEnv(t, shortTest, "[image]\nforce_guest_pull = true\n")
	img, err := harness.BusyboxImage()
	require.NoError(t, err)
	ref, _ := harness.Push(t, e.reg, "forced", img)
	require.NoError(t, harness.ImagePull(e.ctx, e.ctd, ref))

	c, err := client.New(e.ctd.Address())
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(e.ctx, e.ctd.Namespace()))
	defer cancel()
	envelopes, errs := c.EventService().Subscribe(ctx, `topic=="`+ccevents.TopicWarning+`"`)

	id := newID("forced")
	out, err := e.ctd.Ctr(e.ctx, e.runOverlayArgs(ref, id, "echo", "forced")...)
	require.NoError(t, err)
	require.Equal(t, "forced\n", out)

	select {
	case env := <-envelopes:
		v, err := typeurl.UnmarshalAny(env.Event)
		require.NoError(t, err)
		w, ok := v.(*ccevents.Warning)
		require.True(t, ok, "event type %T", v)
		require.Equal(t, id, w.GetContainerId())
		require.Equal(t, "ForceGuestPull", w.GetReason())
		require.Contains(t, w.GetMessage(), "force_guest_pull")
	case err := <-errs:
		t.Fatalf("event subscription: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no /cc/warning event within 30s")
	}
}
