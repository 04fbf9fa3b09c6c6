package server_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/platforms"
	ggcrname "github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/pelletier/go-toml/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cofferhq/coffer/snapshot"
	"github.com/cofferhq/coffer/snapshot/guestpull"
	"github.com/cofferhq/coffer/snapshot/pull"
)

// testContainerd is a containerd daemon private to one test, configured
// with configs/snapshotter/containerd.toml.
type testContainerd struct {
	t       *testing.T
	bin     string
	ctrBin  string
	dir     string
	address string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// startContainerd writes a containerd config (version 3) made of the
// shipped snippet configs/snapshotter/containerd.toml, with the proxy
// plugin pointed at snSocket, the unpack and CRI platforms set to the
// host's, and root, state and sockets under dir; then starts containerd.
// edit, when not nil, changes the parsed snippet first.
func startContainerd(t *testing.T, binDir, dir, snSocket string, edit func(cfg map[string]any)) *testContainerd {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "configs", "snapshotter", "containerd.toml"))
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, toml.Unmarshal(b, &cfg))

	host := platforms.DefaultString()
	cfg["proxy_plugins"].(map[string]any)["cc"].(map[string]any)["address"] = snSocket
	plugins := cfg["plugins"].(map[string]any)
	for _, uc := range plugins["io.containerd.transfer.v1.local"].(map[string]any)["unpack_config"].([]any) {
		uc.(map[string]any)["platform"] = host
	}
	plugins["io.containerd.cri.v1.images"].(map[string]any)["runtime_platforms"].(map[string]any)["cc"].(map[string]any)["platform"] = host
	if edit != nil {
		edit(cfg)
	}
	c := &testContainerd{
		t:       t,
		bin:     filepath.Join(binDir, "containerd"),
		ctrBin:  filepath.Join(binDir, "ctr"),
		dir:     dir,
		address: filepath.Join(dir, "containerd.sock"),
		logPath: filepath.Join(dir, "containerd.log"),
	}
	cfg["root"] = c.root()
	cfg["state"] = filepath.Join(dir, "containerd", "state")
	cfg["grpc"] = map[string]any{"address": c.address}
	cfg["ttrpc"] = map[string]any{"address": c.address + ".ttrpc"}
	cfg["debug"] = map[string]any{"level": "debug"}
	out, err := toml.Marshal(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "containerd.toml"), out, 0o644))
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(c.logPath)
			lines := strings.Split(string(b), "\n")
			if len(lines) > 120 {
				lines = lines[len(lines)-120:]
			}
			t.Logf("containerd log tail (%s):\n%s", c.logPath, strings.Join(lines, "\n"))
		}
		c.stop()
	})
	c.start()
	return c
}

// root is containerd's root directory.
func (c *testContainerd) root() string { return filepath.Join(c.dir, "containerd", "root") }

// start runs containerd and waits until its API answers (30 s at most).
func (c *testContainerd) start() {
	t := c.t
	t.Helper()
	logFile, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	defer logFile.Close()
	c.cmd = exec.Command(c.bin, "--config", filepath.Join(c.dir, "containerd.toml"))
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, c.cmd.Start())
	c.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(c.cmd, c.exited)

	deadline := time.Now().Add(30 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			t.Fatalf("containerd exited during start (%v); see its log", c.cmd.ProcessState)
		case <-time.After(100 * time.Millisecond):
		}
		client, err := containerd.New(c.address, containerd.WithTimeout(time.Second))
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = client.Version(ctx)
			cancel()
			_ = client.Close()
			if err == nil {
				return
			}
		}
		lastErr = err
	}
	t.Fatalf("containerd not serving %s after 30 s: %v", c.address, lastErr)
}

// stop sends SIGTERM, then SIGKILL to the process group after 10 s; it is
// idempotent.
func (c *testContainerd) stop() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.exited
	}
	c.cmd = nil
}

// ctr runs build/bin/ctr against this containerd in namespace ns.
func (c *testContainerd) ctr(ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.ctrBin, append([]string{"--address", c.address, "--namespace", ns}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// client returns a containerd client for namespace ns, closed when t ends.
func (c *testContainerd) client(t *testing.T, ns string) (*containerd.Client, context.Context) {
	client, err := containerd.New(c.address, containerd.WithDefaultNamespace(ns), containerd.WithTimeout(5*time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	return client, namespaces.WithNamespace(context.Background(), ns)
}

// blobs returns the digests of the blobs in containerd's content store.
func (c *testContainerd) blobs(t *testing.T) []string {
	entries, err := os.ReadDir(filepath.Join(c.root(), "io.containerd.content.v1.content", "blobs", "sha256"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		out = append(out, "sha256:"+e.Name())
	}
	sort.Strings(out)
	return out
}

// testImage is an image pushed to the test registry.
type testImage struct {
	ref      string
	index    string // empty when the reference names the manifest
	manifest string
	config   string
	layers   []string
}

// pushImage pushes an OCI image with n random layers (linux, host
// architecture) as reg/<name>:latest; withIndex wraps it in an OCI index.
func pushImage(t *testing.T, reg *testRegistry, name string, n int, withIndex bool) testImage {
	t.Helper()
	spec := platforms.DefaultSpec()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for i := 0; i < n; i++ {
		l, err := random.Layer(512, types.OCILayer)
		require.NoError(t, err)
		img, err = mutate.AppendLayers(img, l)
		require.NoError(t, err)
	}
	cf, err := img.ConfigFile()
	require.NoError(t, err)
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = spec.OS, spec.Architecture, spec.Variant
	cf.Config.Cmd = []string{"/bin/true"}
	img, err = mutate.ConfigFile(img, cf)
	require.NoError(t, err)

	var ti testImage
	md, err := img.Digest()
	require.NoError(t, err)
	ti.manifest = md.String()
	cd, err := img.ConfigName()
	require.NoError(t, err)
	ti.config = cd.String()
	ls, err := img.Layers()
	require.NoError(t, err)
	for _, l := range ls {
		d, err := l.Digest()
		require.NoError(t, err)
		ti.layers = append(ti.layers, d.String())
	}

	tag, err := ggcrname.NewTag(reg.addr+"/cc/"+name+":latest", ggcrname.Insecure)
	require.NoError(t, err)
	ti.ref = tag.Name()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !withIndex {
		require.NoError(t, remote.Write(tag, img, remote.WithContext(ctx)))
		return ti
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{
		Add:        img,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: spec.OS, Architecture: spec.Architecture, Variant: spec.Variant}},
	})
	id, err := idx.Digest()
	require.NoError(t, err)
	ti.index = id.String()
	require.NoError(t, remote.WriteIndex(tag, idx, remote.WithContext(ctx)))
	return ti
}

// requireBinaries returns build/bin (or $COFFER_BIN_DIR), skipping the
// test when containerd, ctr or the registry is not built there (failing
// instead when $COFFER_REQUIRE_E2E is set, as in CI).
func requireBinaries(t *testing.T) string {
	t.Helper()
	binDir := os.Getenv("COFFER_BIN_DIR")
	if binDir == "" {
		binDir = filepath.Join(repoRoot(t), "build", "bin")
	}
	var missing []string
	for _, b := range []string{"containerd", "ctr", "registry"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			missing = append(missing, filepath.Join(binDir, b))
		}
	}
	if len(missing) > 0 {
		if os.Getenv("COFFER_REQUIRE_E2E") != "" {
			t.Fatalf("missing binaries %v (build them with `make tools`)", missing)
		}
		t.Skipf("containerd 2.4 test binaries not built: %v missing (build them with `make tools`)", missing)
	}
	return binDir
}

// guestPullState checks what a guest pull leaves on the host: the content
// store holds exactly want (plus what was there before) and none of the
// image's layers, and the snapshotter root holds only metadata.db.
func guestPullState(t *testing.T, c *testContainerd, snRoot string, img testImage, before []string) {
	t.Helper()
	blobs := c.blobs(t)
	for _, l := range img.layers {
		assert.NotContains(t, blobs, l, "layer blob %s was fetched to the host", l)
	}
	want := append([]string{}, before...)
	for _, d := range []string{img.index, img.manifest, img.config} {
		if d != "" {
			want = append(want, d)
		}
	}
	sort.Strings(want)
	assert.Equal(t, want, blobs, "content store: want exactly the previous blobs plus index/manifest/config")
	assert.Equal(t, []string{guestpull.EmptyDirName, snapshot.MetadataFile}, filesUnder(t, snRoot), "snapshotter root must hold only its metadata")
}

// TestContainerdGuestPull runs containerd 2.4 with the shipped config
// snippet against an in-process cc-snapshotter and a local registry, and
// checks every pull path: ctr (transfer service), the Go client
// (snapshot/pull, as `ccctl image pull`), CRI with runtime handler "cc",
// and the refusals (`ctr --local`, an image first unpacked with overlayfs);
// then restarts and removal.
func TestContainerdGuestPull(t *testing.T) {
	binDir := requireBinaries(t)
	dir := testDir(t)
	reg := startRegistry(t, binDir)
	in := start(t, dir)
	ctrd := startContainerd(t, binDir, dir, in.cfg.Address, nil)

	imgCtr := pushImage(t, reg, "ctr", 3, true)
	imgGo := pushImage(t, reg, "goclient", 2, true)
	imgCRI := pushImage(t, reg, "cri", 2, true)
	imgLocal := pushImage(t, reg, "local", 1, false)
	imgOverlay := pushImage(t, reg, "overlay", 1, false)

	// createContainer creates container id with a rootfs snapshot in cc,
	// as ctr run and CRI do, but without their spec options: those mount
	// the rootfs on the host to read /etc/group (docs/snapshotter.md).
	createContainer := func(t *testing.T, ns, id string, img testImage) {
		t.Helper()
		client, ctx := ctrd.client(t, ns)
		image, err := client.GetImage(ctx, img.ref)
		require.NoError(t, err)
		unpacked, err := image.IsUnpacked(ctx, "cc")
		require.NoError(t, err)
		require.True(t, unpacked, "image %s must be unpacked in cc", img.ref)
		_, err = client.NewContainer(ctx, id, containerd.WithSnapshotter("cc"), containerd.WithNewSnapshot(id, image))
		require.NoError(t, err)
	}
	checkMount := func(t *testing.T, ns, key string, img testImage) {
		t.Helper()
		client, ctx := ctrd.client(t, ns)
		mounts, err := client.SnapshotService("cc").Mounts(ctx, key)
		require.NoError(t, err)
		p := payloadOf(t, mounts)
		assert.Equal(t, img.ref, p.ImageRef)
		assert.Equal(t, img.manifest, p.ManifestDigest)
		assert.Equal(t, img.layers, p.Layers, "payload layers must be the manifest's, base first")
	}

	t.Run("ctr transfer pull", func(t *testing.T) {
		before := ctrd.blobs(t)
		_, err := ctrd.ctr("ns1", "image", "pull", "--plain-http", "--snapshotter", "cc", imgCtr.ref)
		require.NoError(t, err)
		guestPullState(t, ctrd, in.cfg.RootPath, imgCtr, before)

		var recorded []string
		require.NoError(t, in.srv.Snapshotter().Walk(context.Background(), func(_ context.Context, i snapshots.Info) error {
			recorded = append(recorded, i.Labels[snapshot.LabelLayerDigest])
			assert.Equal(t, imgCtr.ref, i.Labels[snapshot.LabelImageRef])
			assert.Equal(t, imgCtr.manifest, i.Labels[snapshot.LabelManifestDigest])
			return nil
		}))
		sort.Strings(recorded)
		want := append([]string{}, imgCtr.layers...)
		sort.Strings(want)
		assert.Equal(t, want, recorded)

		createContainer(t, "ns1", "c1", imgCtr)
		checkMount(t, "ns1", "c1", imgCtr)
	})

	t.Run("go client pull", func(t *testing.T) {
		before := ctrd.blobs(t)
		client, ctx := ctrd.client(t, "ns2")
		res, err := pull.Pull(ctx, client, imgGo.ref, pull.Options{PlainHTTP: true})
		require.NoError(t, err)
		assert.Empty(t, res.OnHost)
		assert.Equal(t, imgGo.manifest, res.Manifest.String())
		assert.Equal(t, imgGo.index, res.Target.String())
		assert.Len(t, res.Layers, 2)
		assert.Contains(t, res.String(), "none fetched or unpacked on the host")
		guestPullState(t, ctrd, in.cfg.RootPath, imgGo, before)

		createContainer(t, "ns2", "c2", imgGo)
		checkMount(t, "ns2", "c2", imgGo)
	})

	t.Run("cri pull with runtime handler", func(t *testing.T) {
		before := ctrd.blobs(t)
		criPull(t, ctrd, imgCRI.ref)
		guestPullState(t, ctrd, in.cfg.RootPath, imgCRI, before)
		createContainer(t, "k8s.io", "c3", imgCRI)
		checkMount(t, "k8s.io", "c3", imgCRI)
	})

	t.Run("ctr --local is refused", func(t *testing.T) {
		out, err := ctrd.ctr("ns3", "image", "pull", "--local", "--plain-http", "--snapshotter", "cc", imgLocal.ref)
		require.Error(t, err, "output: %s", out)
		assert.Contains(t, err.Error(), `missing labels "containerd.io/snapshot.ref" and "containerd.io/snapshot/cri.image-ref"`)
		assert.Contains(t, err.Error(), "ctr image pull --local")
		assert.Contains(t, err.Error(), "ccctl image pull")
	})

	t.Run("image first unpacked with overlayfs", func(t *testing.T) {
		_, err := ctrd.ctr("ns4", "image", "pull", "--plain-http", "--snapshotter", "overlayfs", imgOverlay.ref)
		require.NoError(t, err)
		out, err := ctrd.ctr("ns4", "container", "create", "--snapshotter", "cc", imgOverlay.ref, "c4")
		require.Error(t, err, "output: %s", out)
		assert.Contains(t, err.Error(), "missing labels")
		assert.Contains(t, err.Error(), "pulled with another snapshotter")
		assert.Contains(t, err.Error(), "enable_remote_snapshot_annotations")
		// Remove the overlayfs image so removal below checks only cc.
		_, err = ctrd.ctr("ns4", "image", "rm", "--sync", imgOverlay.ref)
		require.NoError(t, err)
	})

	// Restart cc-snapshotter and containerd between pull and run. Not a
	// subtest: the new instances must outlive it.
	ctrd.stop()
	in.stop()
	in = start(t, dir)
	ctrd.start()
	t.Run("after restart", func(t *testing.T) {
		createContainer(t, "ns1", "c5", imgCtr)
		checkMount(t, "ns1", "c5", imgCtr)
		checkMount(t, "ns1", "c1", imgCtr)
	})

	t.Run("remove leaves no metadata", func(t *testing.T) {
		for ns, ids := range map[string][]string{"ns1": {"c1", "c5"}, "ns2": {"c2"}, "k8s.io": {"c3"}} {
			for _, id := range ids {
				_, err := ctrd.ctr(ns, "container", "rm", id)
				require.NoError(t, err)
			}
		}
		for _, ns := range []string{"ns1", "ns2", "ns3", "k8s.io"} {
			out, err := ctrd.ctr(ns, "image", "ls", "-q")
			require.NoError(t, err)
			if refs := strings.Fields(out); len(refs) > 0 {
				_, err = ctrd.ctr(ns, append([]string{"image", "rm", "--sync"}, refs...)...)
				require.NoError(t, err)
			}
		}
		// containerd's garbage collector removes the backend snapshots.
		deadline := time.Now().Add(20 * time.Second)
		for {
			left := walk(t, context.Background(), in.sn)
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("snapshots left in cc-snapshotter after removing every image: %v", left)
			}
			time.Sleep(100 * time.Millisecond)
		}
		assert.Equal(t, []string{guestpull.EmptyDirName, snapshot.MetadataFile}, filesUnder(t, in.cfg.RootPath))
	})
}

// criPull pulls ref through containerd's CRI image service for the runtime
// handler "cc", as kubelet does.
func criPull(t *testing.T, c *testContainerd, ref string) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+c.address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = runtimeapi.NewImageServiceClient(conn).PullImage(ctx, &runtimeapi.PullImageRequest{
		Image: &runtimeapi.ImageSpec{Image: ref, RuntimeHandler: "cc"},
		// containerd ignores the runtime handler without a sandbox config
		// (kubelet always sends one).
		SandboxConfig: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "default", Uid: "u1"}},
	})
	require.NoError(t, err)
}

// TestContainerdCRIVariants checks the CRI alternatives the snippet's
// comments name: a local (non-transfer) CRI pull that adds the labels
// itself, and a runtime snapshotter without runtime_platforms.
func TestContainerdCRIVariants(t *testing.T) {
	binDir := requireBinaries(t)
	reg := startRegistry(t, binDir)
	for _, tc := range []struct {
		name string
		edit func(cfg map[string]any)
	}{
		{
			name: "local pull with disable_snapshot_annotations false and no export",
			edit: func(cfg map[string]any) {
				delete(cfg["proxy_plugins"].(map[string]any)["cc"].(map[string]any), "exports")
				images := cfg["plugins"].(map[string]any)["io.containerd.cri.v1.images"].(map[string]any)
				images["disable_snapshot_annotations"] = false
			},
		},
		{
			name: "runtime snapshotter without runtime_platforms",
			edit: func(cfg map[string]any) {
				images := cfg["plugins"].(map[string]any)["io.containerd.cri.v1.images"].(map[string]any)
				delete(images, "runtime_platforms")
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testDir(t)
			in := start(t, dir)
			ctrd := startContainerd(t, binDir, dir, in.cfg.Address, tc.edit)
			img := pushImage(t, reg, "cri-variant", 2, true)
			criPull(t, ctrd, img.ref)
			guestPullState(t, ctrd, in.cfg.RootPath, img, nil)
			var layers []string
			require.NoError(t, in.srv.Snapshotter().Walk(context.Background(), func(_ context.Context, i snapshots.Info) error {
				layers = append(layers, i.Labels[snapshot.LabelLayerDigest])
				return nil
			}))
			assert.ElementsMatch(t, img.layers, layers)
		})
	}
}

// TestContainerdMisconfigured checks that a containerd missing one of the
// snippet's settings still fetches no layer: without the export the
// snapshotter refuses the layer naming the label and the fix; without the
// transfer unpack_config entry containerd refuses to pull.
func TestContainerdMisconfigured(t *testing.T) {
	binDir := requireBinaries(t)
	reg := startRegistry(t, binDir)
	for _, tc := range []struct {
		name    string
		edit    func(cfg map[string]any)
		wantErr []string
	}{
		{
			name: "no enable_remote_snapshot_annotations export",
			edit: func(cfg map[string]any) {
				delete(cfg["proxy_plugins"].(map[string]any)["cc"].(map[string]any), "exports")
			},
			wantErr: []string{`missing label "containerd.io/snapshot/cri.image-ref"`, "enable_remote_snapshot_annotations", "ccctl image pull"},
		},
		{
			name: "no cc entry in the transfer unpack_config",
			edit: func(cfg map[string]any) {
				delete(cfg["plugins"].(map[string]any), "io.containerd.transfer.v1.local")
			},
			wantErr: []string{"no unpack platforms defined"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testDir(t)
			in := start(t, dir)
			ctrd := startContainerd(t, binDir, dir, in.cfg.Address, tc.edit)
			img := pushImage(t, reg, "misconfigured", 2, false)
			out, err := ctrd.ctr("ns", "image", "pull", "--plain-http", "--snapshotter", "cc", img.ref)
			require.Error(t, err, "pull must fail; output:\n%s", out)
			for _, w := range tc.wantErr {
				assert.Contains(t, err.Error(), w)
			}
			for _, l := range img.layers {
				assert.NotContains(t, ctrd.blobs(t), l, "layer %s fetched to the host", l)
			}
			assert.Empty(t, walk(t, context.Background(), in.sn))
			assert.Equal(t, []string{guestpull.EmptyDirName, snapshot.MetadataFile}, filesUnder(t, in.cfg.RootPath))
		})
	}
}
