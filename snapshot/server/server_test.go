package server_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cofferhq/coffer/snapshot"
	"github.com/cofferhq/coffer/snapshot/guestpull"
	"github.com/cofferhq/coffer/snapshot/server"
)

// testDir returns a fresh directory short enough for unix socket paths,
// removed when the test ends.
func testDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "ccsn-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// instance is an in-process cc-snapshotter and containerd's proxy client
// for it, the same client containerd's [proxy_plugins] uses.
type instance struct {
	srv    *server.Server
	served chan error
	conn   *grpc.ClientConn
	sn     snapshots.Snapshotter
	cfg    server.Config
}

// start serves a cc-snapshotter for dir (root dir/root, socket dir/sn.sock).
func start(t *testing.T, dir string) *instance {
	t.Helper()
	cfg := server.Config{RootPath: filepath.Join(dir, "root"), Address: filepath.Join(dir, "sn.sock"), LogLevel: "warn"}
	srv, err := server.New(cfg)
	require.NoError(t, err)
	in := &instance{srv: srv, served: make(chan error, 1), cfg: cfg}
	go func() { in.served <- srv.Serve() }()
	conn, err := grpc.NewClient("unix://"+cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	in.conn = conn
	in.sn = proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "cc")
	t.Cleanup(in.stop)
	return in
}

// stop closes the client and stops the server; it is idempotent.
func (in *instance) stop() {
	if in.conn == nil {
		return
	}
	_ = in.conn.Close()
	in.conn = nil
	_ = in.srv.Stop(5 * time.Second)
	<-in.served
}

const (
	testRef      = "registry.example/app:1.2"
	testManifest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
)

// layerDigest returns a distinct well-formed digest for layer i.
func layerDigest(i int) string {
	return "sha256:" + strings.Repeat(string(rune('a'+i)), 64)
}

// chainID returns a fake chain ID for layer i.
func chainID(i int) string {
	return "sha256:" + strings.Repeat(string(rune('0'+i)), 64)
}

// unpackLabels returns the labels containerd's unpacker passes for layer i
// when pulling with AppendInfoHandlerWrapper.
func unpackLabels(i int) map[string]string {
	l := map[string]string{
		snapshots.LabelSnapshotRef:                chainID(i),
		snapshots.LabelSnapshotDiffID:             "sha256:" + strings.Repeat("d", 63) + string(rune('0'+i)),
		snapshotters.TargetRefLabel:               testRef,
		snapshotters.TargetLayerDigestLabel:       layerDigest(i),
		snapshotters.TargetManifestDigestLabel:    testManifest,
		snapshotters.TargetImageLayersLabel:       layerDigest(i),
		"containerd.io/snapshot/parent-chain-id":  "",
		"containerd.io/snapshot/unrelated-marker": "kept",
	}
	if i > 0 {
		l["containerd.io/snapshot/parent-chain-id"] = chainID(i - 1)
	} else {
		delete(l, "containerd.io/snapshot/parent-chain-id")
	}
	return l
}

// pullLayers records n layers as the unpacker would and returns the chain
// ID of the top one.
func pullLayers(t *testing.T, ctx context.Context, sn snapshots.Snapshotter, n int) string {
	t.Helper()
	parent := ""
	for i := 0; i < n; i++ {
		_, err := sn.Prepare(ctx, "extract-"+time.Now().Format("150405.000000000")+" "+chainID(i), parent, snapshots.WithLabels(unpackLabels(i)))
		require.Error(t, err)
		require.Truef(t, errdefs.IsAlreadyExists(err), "layer %d: want ErrAlreadyExists, got %v", i, err)
		parent = chainID(i)
	}
	return parent
}

// walk returns the names of all snapshots, sorted.
func walk(t *testing.T, ctx context.Context, sn snapshots.Snapshotter) []string {
	t.Helper()
	var names []string
	require.NoError(t, sn.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		names = append(names, i.Name)
		return nil
	}))
	sort.Strings(names)
	return names
}

// filesUnder returns every path under root, relative to it, sorted.
func filesUnder(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	}))
	sort.Strings(out)
	return out
}

// payloadOf decodes the single guest-pull mount in mounts.
func payloadOf(t *testing.T, mounts []mount.Mount) *guestpull.Payload {
	t.Helper()
	require.Len(t, mounts, 1, "want exactly one guest-pull mount")
	p, ok, err := guestpull.FromMount(mounts[0].Options)
	require.NoError(t, err)
	require.True(t, ok, "mount %+v carries no guest-pull payload", mounts[0])
	assert.Equal(t, guestpull.MountType, mounts[0].Type)
	assert.True(t, strings.HasSuffix(mounts[0].Source, "/"+guestpull.EmptyDirName), "source %q is not the empty dir", mounts[0].Source)
	return p
}

func TestLayerPrepareRecordsWithoutContent(t *testing.T) {
	ctx := context.Background()
	dir := testDir(t)
	in := start(t, dir)

	top := pullLayers(t, ctx, in.sn, 3)
	assert.Equal(t, chainID(2), top)
	// Only the committed layers exist: no extraction snapshot is left.
	assert.Equal(t, []string{chainID(0), chainID(1), chainID(2)}, walk(t, ctx, in.sn))

	for i := 0; i < 3; i++ {
		info, err := in.sn.Stat(ctx, chainID(i))
		require.NoError(t, err)
		assert.Equal(t, snapshots.KindCommitted, info.Kind)
		assert.Equal(t, layerDigest(i), info.Labels[snapshot.LabelLayerDigest])
		assert.Equal(t, testRef, info.Labels[snapshot.LabelImageRef])
		assert.Equal(t, testManifest, info.Labels[snapshot.LabelManifestDigest])
		// containerd's metadata layer finds the snapshot by this label.
		assert.Equal(t, chainID(i), info.Labels[snapshots.LabelSnapshotRef])
		assert.Equal(t, "kept", info.Labels["containerd.io/snapshot/unrelated-marker"])
		if i > 0 {
			assert.Equal(t, chainID(i-1), info.Parent)
		} else {
			assert.Empty(t, info.Parent)
		}
		u, err := in.sn.Usage(ctx, chainID(i))
		require.NoError(t, err)
		assert.Equal(t, snapshots.Usage{}, u)
	}

	// Pulling again: the target exists, so ErrAlreadyExists without a change.
	_, err := in.sn.Prepare(ctx, "extract-again "+chainID(0), "", snapshots.WithLabels(unpackLabels(0)))
	require.True(t, errdefs.IsAlreadyExists(err), "got %v", err)
	assert.Len(t, walk(t, ctx, in.sn), 3)

	// View with the ref label is a layer request too.
	_, err = in.sn.View(ctx, "extract-view "+chainID(3), chainID(2), snapshots.WithLabels(unpackLabels(3)))
	require.True(t, errdefs.IsAlreadyExists(err), "got %v", err)
	info, err := in.sn.Stat(ctx, chainID(3))
	require.NoError(t, err)
	assert.Equal(t, snapshots.KindCommitted, info.Kind)

	assert.Equal(t, []string{guestpull.EmptyDirName, snapshot.MetadataFile}, filesUnder(t, in.cfg.RootPath))
}

func TestLayerPrepareMissingLabel(t *testing.T) {
	ctx := context.Background()
	in := start(t, testDir(t))
	for _, missing := range []string{snapshotters.TargetRefLabel, snapshotters.TargetLayerDigestLabel, snapshotters.TargetManifestDigestLabel} {
		t.Run(missing, func(t *testing.T) {
			labels := unpackLabels(0)
			delete(labels, missing)
			_, err := in.sn.Prepare(ctx, "extract-x "+chainID(0), "", snapshots.WithLabels(labels))
			require.Error(t, err)
			assert.True(t, errdefs.IsInvalidArgument(err), "want ErrInvalidArgument, got %v", err)
			msg := err.Error()
			assert.Contains(t, msg, `missing label "`+missing+`"`)
			assert.Contains(t, msg, "enable_remote_snapshot_annotations = \"true\"")
			assert.Contains(t, msg, "unpack_config")
			assert.Contains(t, msg, "ccctl image pull")
			assert.Empty(t, walk(t, ctx, in.sn), "nothing may be created for a refused layer")
		})
	}
	t.Run("client-side unpack without any label", func(t *testing.T) {
		// containerd's client Image.Unpack (ctr image pull --local) uses
		// this key and passes no label at all.
		for _, parent := range []string{"", chainID(0)} {
			_, err := in.sn.Prepare(ctx, "ns/3/extract-123-abc "+chainID(1), parent)
			require.Error(t, err)
			assert.True(t, errdefs.IsInvalidArgument(err), "got %v", err)
			assert.Contains(t, err.Error(), `missing labels "containerd.io/snapshot.ref" and "containerd.io/snapshot/cri.image-ref"`)
			assert.Contains(t, err.Error(), "ccctl image pull")
		}
		assert.Empty(t, walk(t, ctx, in.sn))
	})
	t.Run("empty ref label", func(t *testing.T) {
		labels := unpackLabels(0)
		labels[snapshots.LabelSnapshotRef] = ""
		_, err := in.sn.Prepare(ctx, "extract-x "+chainID(0), "", snapshots.WithLabels(labels))
		require.Error(t, err)
		assert.True(t, errdefs.IsInvalidArgument(err), "got %v", err)
		assert.Contains(t, err.Error(), snapshots.LabelSnapshotRef)
		assert.Empty(t, walk(t, ctx, in.sn))
	})
}

func TestLayerPrepareMalformedLabel(t *testing.T) {
	ctx := context.Background()
	in := start(t, testDir(t))
	for _, tc := range []struct{ label, value string }{
		{snapshotters.TargetLayerDigestLabel, "sha256:xyz"},
		{snapshotters.TargetLayerDigestLabel, "not-a-digest"},
		{snapshotters.TargetManifestDigestLabel, "md5:0000"},
		{snapshotters.TargetRefLabel, "Not A Reference"},
	} {
		t.Run(tc.label+"="+tc.value, func(t *testing.T) {
			labels := unpackLabels(0)
			labels[tc.label] = tc.value
			_, err := in.sn.Prepare(ctx, "extract-x "+chainID(0), "", snapshots.WithLabels(labels))
			require.Error(t, err)
			assert.True(t, errdefs.IsInvalidArgument(err), "got %v", err)
			assert.Contains(t, err.Error(), tc.label)
			assert.Contains(t, err.Error(), tc.value)
			assert.Empty(t, walk(t, ctx, in.sn))
		})
	}
}

func TestParentNotGuestPull(t *testing.T) {
	ctx := context.Background()
	in := start(t, testDir(t))
	top := pullLayers(t, ctx, in.sn, 1)
	_, err := in.sn.Prepare(ctx, "rootfs", top)
	require.NoError(t, err)

	t.Run("layer on missing parent", func(t *testing.T) {
		_, err := in.sn.Prepare(ctx, "extract-x "+chainID(5), "sha256:overlayfs-parent", snapshots.WithLabels(unpackLabels(5)))
		require.Error(t, err)
		assert.True(t, errdefs.IsNotFound(err), "got %v", err)
		assert.Contains(t, err.Error(), `parent "sha256:overlayfs-parent"`)
	})
	t.Run("layer on active parent", func(t *testing.T) {
		_, err := in.sn.Prepare(ctx, "extract-x "+chainID(5), "rootfs", snapshots.WithLabels(unpackLabels(5)))
		require.Error(t, err)
		assert.True(t, errdefs.IsFailedPrecondition(err), "got %v", err)
		assert.Contains(t, err.Error(), `parent "rootfs"`)
	})
	t.Run("rootfs on missing parent", func(t *testing.T) {
		_, err := in.sn.Prepare(ctx, "rootfs2", "sha256:overlayfs-parent")
		require.Error(t, err)
		assert.True(t, errdefs.IsNotFound(err), "got %v", err)
		assert.Contains(t, err.Error(), `parent "sha256:overlayfs-parent"`)
		assert.Contains(t, err.Error(), "not pulled with the cc snapshotter")
		assert.Contains(t, err.Error(), "ctr image pull --snapshotter cc")
		assert.Contains(t, err.Error(), "ccctl image pull")
	})
	t.Run("rootfs on active parent", func(t *testing.T) {
		_, err := in.sn.View(ctx, "view2", "rootfs")
		require.Error(t, err)
		assert.True(t, errdefs.IsFailedPrecondition(err), "got %v", err)
		assert.Contains(t, err.Error(), `parent "rootfs"`)
	})
	t.Run("rootfs without parent", func(t *testing.T) {
		_, err := in.sn.Prepare(ctx, "scratch", "")
		require.Error(t, err)
		assert.True(t, errdefs.IsInvalidArgument(err), "got %v", err)
		assert.Contains(t, err.Error(), "no parent image")
	})
	assert.Equal(t, []string{"rootfs", top}, walk(t, ctx, in.sn), "refused requests must create nothing")
}

func TestRootfsMount(t *testing.T) {
	ctx := context.Background()
	in := start(t, testDir(t))
	top := pullLayers(t, ctx, in.sn, 3)

	mounts, err := in.sn.Prepare(ctx, "ns/1/rootfs", top, snapshots.WithLabels(map[string]string{"containerd.io/gc.root": "x"}))
	require.NoError(t, err)
	p := payloadOf(t, mounts)
	assert.Equal(t, guestpull.Version, p.Version)
	assert.Equal(t, testRef, p.ImageRef)
	assert.Equal(t, testManifest, p.ManifestDigest)
	assert.Equal(t, []string{layerDigest(0), layerDigest(1), layerDigest(2)}, p.Layers, "layers base first")

	again, err := in.sn.Mounts(ctx, "ns/1/rootfs")
	require.NoError(t, err)
	assert.Equal(t, mounts, again)

	info, err := in.sn.Stat(ctx, "ns/1/rootfs")
	require.NoError(t, err)
	assert.Equal(t, snapshots.KindActive, info.Kind)
	assert.Equal(t, top, info.Parent)
	assert.Equal(t, "x", info.Labels["containerd.io/gc.root"])

	// A view on a lower layer carries only the layers below it.
	vm, err := in.sn.View(ctx, "view", chainID(1))
	require.NoError(t, err)
	vp := payloadOf(t, vm)
	assert.Equal(t, []string{layerDigest(0), layerDigest(1)}, vp.Layers)
	info, err = in.sn.Stat(ctx, "view")
	require.NoError(t, err)
	assert.Equal(t, snapshots.KindView, info.Kind)
	vm2, err := in.sn.Mounts(ctx, "view")
	require.NoError(t, err)
	assert.Equal(t, vm, vm2)

	_, err = in.sn.Mounts(ctx, top)
	assert.True(t, errdefs.IsFailedPrecondition(err), "Mounts of a committed layer: got %v", err)
	_, err = in.sn.Mounts(ctx, "missing")
	assert.True(t, errdefs.IsNotFound(err), "Mounts of a missing key: got %v", err)
	_, err = in.sn.Prepare(ctx, "ns/1/rootfs", top)
	assert.True(t, errdefs.IsAlreadyExists(err), "Prepare of an existing key: got %v", err)
}

func TestCommitRefused(t *testing.T) {
	ctx := context.Background()
	in := start(t, testDir(t))
	top := pullLayers(t, ctx, in.sn, 1)
	_, err := in.sn.Prepare(ctx, "rootfs", top)
	require.NoError(t, err)

	err = in.sn.Commit(ctx, "committed", "rootfs")
	require.Error(t, err)
	assert.True(t, errdefs.IsNotImplemented(err), "got %v", err)
	assert.Contains(t, err.Error(), "exist only inside the confidential guest")
	info, err := in.sn.Stat(ctx, "rootfs")
	require.NoError(t, err)
	assert.Equal(t, snapshots.KindActive, info.Kind, "a refused commit leaves the snapshot as it was")
	_, err = in.sn.Stat(ctx, "committed")
	assert.True(t, errdefs.IsNotFound(err), "got %v", err)

	_, err = in.sn.View(ctx, "view", top)
	require.NoError(t, err)
	err = in.sn.Commit(ctx, "committed", "view")
	assert.True(t, errdefs.IsFailedPrecondition(err), "commit of a view: got %v", err)
	err = in.sn.Commit(ctx, "committed", "missing")
	assert.True(t, errdefs.IsNotFound(err), "commit of a missing key: got %v", err)
}

func TestUpdateKeepsOwnLabels(t *testing.T) {
	ctx := context.Background()
	in := start(t, testDir(t))
	top := pullLayers(t, ctx, in.sn, 1)

	// containerd's GC and CRI set labels one by one.
	info, err := in.sn.Update(ctx, snapshots.Info{Name: top, Labels: map[string]string{"containerd.io/gc.root": "now"}}, "labels.containerd.io/gc.root")
	require.NoError(t, err)
	assert.Equal(t, "now", info.Labels["containerd.io/gc.root"])
	assert.Equal(t, layerDigest(0), info.Labels[snapshot.LabelLayerDigest])

	// Replacing all labels keeps cc-snapshotter's.
	info, err = in.sn.Update(ctx, snapshots.Info{Name: top, Labels: map[string]string{"a": "b"}})
	require.NoError(t, err)
	assert.Equal(t, "b", info.Labels["a"])
	assert.Equal(t, layerDigest(0), info.Labels[snapshot.LabelLayerDigest])
	assert.Equal(t, testRef, info.Labels[snapshot.LabelImageRef])
	assert.Equal(t, testManifest, info.Labels[snapshot.LabelManifestDigest])

	// Changing or removing one explicitly fails.
	_, err = in.sn.Update(ctx, snapshots.Info{Name: top, Labels: map[string]string{snapshot.LabelLayerDigest: layerDigest(7)}}, "labels."+snapshot.LabelLayerDigest)
	require.Error(t, err)
	assert.True(t, errdefs.IsInvalidArgument(err), "got %v", err)
	assert.Contains(t, err.Error(), snapshot.LabelLayerDigest)
	_, err = in.sn.Update(ctx, snapshots.Info{Name: top}, "labels."+snapshot.LabelImageRef)
	assert.True(t, errdefs.IsInvalidArgument(err), "got %v", err)
	_, err = in.sn.Update(ctx, snapshots.Info{Name: top, Labels: map[string]string{snapshot.LabelImageRef: "evil.example/x:1"}})
	assert.True(t, errdefs.IsInvalidArgument(err), "got %v", err)

	info, err = in.sn.Stat(ctx, top)
	require.NoError(t, err)
	assert.Equal(t, testRef, info.Labels[snapshot.LabelImageRef])

	_, err = in.sn.Update(ctx, snapshots.Info{Name: "missing"})
	assert.True(t, errdefs.IsNotFound(err), "got %v", err)
	_, err = in.sn.Usage(ctx, "missing")
	assert.True(t, errdefs.IsNotFound(err), "got %v", err)
}

func TestRemoveAndCleanupLeaveNothing(t *testing.T) {
	ctx := context.Background()
	in := start(t, testDir(t))
	top := pullLayers(t, ctx, in.sn, 3)
	_, err := in.sn.Prepare(ctx, "rootfs", top)
	require.NoError(t, err)
	_, err = in.sn.View(ctx, "view", top)
	require.NoError(t, err)

	err = in.sn.Remove(ctx, chainID(0))
	assert.True(t, errdefs.IsFailedPrecondition(err), "removing a layer with children: got %v", err)

	for _, k := range []string{"rootfs", "view", chainID(2), chainID(1), chainID(0)} {
		require.NoError(t, in.sn.Remove(ctx, k), "remove %s", k)
	}
	err = in.sn.Remove(ctx, "rootfs")
	assert.True(t, errdefs.IsNotFound(err), "second remove: got %v", err)

	cleaner, ok := in.sn.(snapshots.Cleaner)
	require.True(t, ok, "the proxy client exposes Cleanup")
	require.NoError(t, cleaner.Cleanup(ctx))
	assert.Empty(t, walk(t, ctx, in.sn))
	assert.Equal(t, []string{guestpull.EmptyDirName, snapshot.MetadataFile}, filesUnder(t, in.cfg.RootPath))
	stray, err := in.srv.Snapshotter().StrayEntries()
	require.NoError(t, err)
	assert.Empty(t, stray)
}

func TestMetadataSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := testDir(t)
	in := start(t, dir)
	top := pullLayers(t, ctx, in.sn, 2)
	before, err := in.sn.Prepare(ctx, "rootfs", top)
	require.NoError(t, err)
	in.stop()
	_, err = os.Stat(in.cfg.Address)
	assert.True(t, errors.Is(err, fs.ErrNotExist), "socket must be removed at stop: %v", err)

	in2 := start(t, dir)
	assert.Equal(t, []string{"rootfs", chainID(0), chainID(1)}, walk(t, ctx, in2.sn))
	after, err := in2.sn.Mounts(ctx, "rootfs")
	require.NoError(t, err)
	assert.Equal(t, before, after)
	_, err = in2.sn.Prepare(ctx, "extract-y "+chainID(1), chainID(0), snapshots.WithLabels(unpackLabels(1)))
	assert.True(t, errdefs.IsAlreadyExists(err), "got %v", err)
}

func TestStaleAndLiveSocket(t *testing.T) {
	dir := testDir(t)
	sock := filepath.Join(dir, "sn.sock")

	// A socket whose server died without unlinking it.
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, l.Close())
	in := start(t, dir)

	// A second instance must not steal the live socket.
	_, err = server.New(server.Config{RootPath: filepath.Join(dir, "root2"), Address: sock, LogLevel: "info"})
	require.Error(t, err)
	assert.True(t, errdefs.IsAlreadyExists(err), "got %v", err)
	assert.Contains(t, err.Error(), "another process serves this socket")
	in.stop()

	// A path that is not a socket is never removed.
	require.NoError(t, os.WriteFile(sock, []byte("keep"), 0o600))
	_, err = server.New(server.Config{RootPath: filepath.Join(dir, "root"), Address: sock, LogLevel: "info"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not a socket")
	b, err := os.ReadFile(sock)
	require.NoError(t, err)
	assert.Equal(t, "keep", string(b))
}

func TestSecondInstanceOnSameRoot(t *testing.T) {
	dir := testDir(t)
	start(t, dir)
	start2 := time.Now()
	_, err := server.New(server.Config{RootPath: filepath.Join(dir, "root"), Address: filepath.Join(dir, "other.sock"), LogLevel: "info"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is another cc-snapshotter using root")
	assert.Less(t, time.Since(start2), 30*time.Second)
}

func TestRunStopsOnCancel(t *testing.T) {
	dir := testDir(t)
	cfg := server.Config{RootPath: filepath.Join(dir, "root"), Address: filepath.Join(dir, "sn.sock"), LogLevel: "warn"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, cfg) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(cfg.Address); err == nil && fi.Mode()&fs.ModeSocket != 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "socket %s not created", cfg.Address)
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(server.DefaultShutdownTimeout + 5*time.Second):
		t.Fatal("Run did not return after cancel")
	}
	_, err := os.Stat(cfg.Address)
	assert.True(t, errors.Is(err, fs.ErrNotExist), "socket left after Run: %v", err)
	// The metadata was closed: a new instance can open it at once.
	sn, err := snapshot.NewSnapshotter(cfg.RootPath)
	require.NoError(t, err)
	require.NoError(t, sn.Close())
}
