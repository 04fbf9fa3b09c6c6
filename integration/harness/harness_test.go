package harness

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	ggcrname "github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/pelletier/go-toml/v2"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// requireRoot skips tests that mount, run containerd or runc: they need
// root, which this machine has; elsewhere they cannot run at all.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mounts, containerd, runc)")
	}
}

// recorder is a testing.TB that records Errorf/Fatalf instead of failing,
// to test the assertion helpers themselves. Fatalf ends the calling
// goroutine, like testing.T; run code that may call it via r.run.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) {
	r.Errorf("%s", fmt.Sprint(args...))
	runtime.Goexit()
}

// run calls f in its own goroutine so that a Fatalf only ends f.
func (r *recorder) run(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

func (r *recorder) joined() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.errors, "\n")
}

var namespaceRule = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$`)

func TestNamespaceFor(t *testing.T) {
	for name, wantStem := range map[string]string{
		"TestEcho":                      "testecho",
		"TestLeftovers/after_shim_kill": "testleftovers-after-shim-kill",
		"Test__Weird//name--":           "test-weird-name",
		"///":                           "test",
		strings.Repeat("a", 100):        strings.Repeat("a", maxNamespaceStem),
	} {
		t.Run(name, func(t *testing.T) {
			ns := NamespaceFor(name)
			require.Regexp(t, namespaceRule, ns)
			require.LessOrEqual(t, len(ns), 76)
			require.True(t, strings.HasPrefix(ns, wantStem+"-"), "namespace %q should start with %q", ns, wantStem+"-")
			require.Len(t, strings.TrimPrefix(ns, wantStem+"-"), 8)
			require.NotEqual(t, ns, NamespaceFor(name), "two namespaces for the same test must differ")
		})
	}
}

func TestTailLines(t *testing.T) {
	require.Equal(t, "c\nd", tailLines([]byte("a\nb\nc\nd\n"), 2))
	require.Equal(t, "a\nb", tailLines([]byte("a\nb"), 5))
	require.Equal(t, "(empty)", tailLines(nil, 3))
	require.Contains(t, tailFile("/nonexistent/coffer.log", 3), "cannot read /nonexistent/coffer.log")
}

func TestShimProcsAndFlags(t *testing.T) {
	procs := []Proc{
		{PID: 10, PPID: 1, Cmdline: []string{"/b/containerd-shim-cc-v2", "-namespace", "ns", "-id", "c1", "-address", "/x/c.sock"}},
		{PID: 11, PPID: 10, Cmdline: []string{"qemu-system-x86_64", "-chardev", "socket,id=a,path=/run/cc/abc/agent.sock"}},
		{PID: 12, PPID: 11, Cmdline: []string{"helper"}},
		{PID: 13, PPID: 1, Cmdline: []string{"/b/containerd-shim-cc-v2", "-namespace", "ns", "-id", "c1", "-address", "/x/c.sock", "start"}},
		{PID: 14, PPID: 1, Cmdline: []string{"/b/containerd-shim-cc-v2", "-id=c2", "--address=/y/c.sock"}},
		{PID: 15, PPID: 1, Cmdline: []string{"/b/containerd-shim-runc-v2", "-id", "c1", "-address", "/x/c.sock"}},
	}
	pids := func(ps []Proc) []int {
		var out []int
		for _, p := range ps {
			out = append(out, p.PID)
		}
		sort.Ints(out)
		return out
	}
	require.Equal(t, []int{10}, pids(ShimProcs(procs, "c1", "/x/c.sock")))
	require.Empty(t, ShimProcs(procs, "c1", "/y/c.sock"))
	require.Equal(t, []int{14}, pids(ShimProcs(procs, "c2", "")))
	require.Equal(t, []int{10, 14}, pids(ShimProcs(procs, "", "")))
	require.Equal(t, []int{11, 12}, pids(Descendants(procs, 10)))
	require.True(t, procs[1].IsQEMU())
	require.False(t, procs[0].IsQEMU())
	require.Equal(t, []string{"/run/cc/abc"}, vmDirsOf(procs[1]))

	clh := Proc{PID: 16, PPID: 10, Cmdline: []string{"/usr/local/bin/cloud-hypervisor", "--api-socket", "path=/run/cc/def/clh-api.sock"}}
	require.True(t, clh.IsVMM())
	require.False(t, clh.IsQEMU())
	require.True(t, procs[1].IsVMM())
	require.False(t, procs[0].IsVMM())
	require.False(t, procs[2].IsVMM())
	require.Equal(t, []string{"/run/cc/def"}, vmDirsOf(clh))
}

func TestListProcsSeesSelf(t *testing.T) {
	procs, err := ListProcs()
	require.NoError(t, err)
	var self *Proc
	for i := range procs {
		if procs[i].PID == os.Getpid() {
			self = &procs[i]
		}
	}
	require.NotNil(t, self, "own pid %d not in /proc listing", os.Getpid())
	require.Equal(t, os.Getppid(), self.PPID)
	require.True(t, self.Alive())
	require.NotEmpty(t, self.Cmdline)
	gone := *self
	gone.StartTime++ // same PID, different start: a reused PID
	require.False(t, gone.Alive())
}

// startFakeQEMU runs coreutils sleep under the argv[0]
// "<dir>/qemu-system-fake", where dir holds cmdMarker, with envMarker in
// its environment: a process that looks like QEMU to IsQEMU.
func startFakeQEMU(t *testing.T, cmdMarker, envMarker string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/bin/sleep", "60")
	cmd.Args[0] = "/run/" + cmdMarker + "/qemu-system-fake"
	cmd.Env = []string{"MARKER=" + envMarker}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	require.Eventually(t, func() bool {
		p, err := readProc(cmd.Process.Pid)
		return err == nil && p.IsQEMU() && p.Mentions(envMarker)
	}, 5*time.Second, 10*time.Millisecond, "fake QEMU did not show up in /proc")
	return cmd
}

func TestNoQEMU(t *testing.T) {
	cmdMarker := "coffer-cmd-" + RandomSuffix()
	envMarker := "/tmp/coffer-env-" + RandomSuffix() + "/containerd.sock"
	cmd := startFakeQEMU(t, cmdMarker, envMarker)

	for _, marker := range []string{cmdMarker, envMarker} {
		r := &recorder{TB: t}
		require.False(t, NoQEMU(r, "unrelated-"+RandomSuffix(), marker))
		require.Contains(t, r.joined(), marker)
		require.Contains(t, r.joined(), fmt.Sprintf("pid %d", cmd.Process.Pid))
	}
	require.True(t, NoQEMU(t, "/tmp/no-such-marker-"+RandomSuffix()))
	r := &recorder{TB: t}
	require.False(t, NoQEMU(r), "with no markers every QEMU counts")

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	require.True(t, NoQEMU(t, cmdMarker, envMarker))
}

func TestNoMountsUnder(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "a", "b")
	require.NoError(t, os.MkdirAll(mnt, 0o755))
	require.True(t, NoMountsUnder(t, dir))

	require.NoError(t, unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	r := &recorder{TB: t}
	require.False(t, NoMountsUnder(r, dir))
	require.Contains(t, r.joined(), mnt)
	// A sibling whose name only shares the prefix string is not "under".
	require.True(t, NoMountsUnder(t, dir+"x"))

	require.NoError(t, unmountUnder(dir))
	require.True(t, NoMountsUnder(t, dir))
}

func TestNoSocketsUnder(t *testing.T) {
	dir := t.TempDir()
	require.True(t, NoSocketsUnder(t, dir))
	require.True(t, NoSocketsUnder(t, filepath.Join(dir, "missing")))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "vm"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "vm", "console.log"), []byte("x"), 0o644))
	require.True(t, NoSocketsUnder(t, dir), "a regular file is not a socket")

	sock := filepath.Join(dir, "vm", "agent.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	r := &recorder{TB: t}
	require.False(t, NoSocketsUnder(r, dir))
	require.Contains(t, r.joined(), sock)
}

func TestFootprintRequireGone(t *testing.T) {
	requireRoot(t)
	marker := "coffer-fp-" + RandomSuffix()
	qemu := startFakeQEMU(t, marker, marker)
	shim := exec.Command("/bin/sleep", "60")
	require.NoError(t, shim.Start())
	t.Cleanup(func() { _ = shim.Process.Kill(); _ = shim.Wait() })

	var shimProc, qemuProc Proc
	require.Eventually(t, func() bool {
		var err1, err2 error
		shimProc, err1 = readProc(shim.Process.Pid)
		qemuProc, err2 = readProc(qemu.Process.Pid)
		return err1 == nil && err2 == nil && qemuProc.IsQEMU()
	}, 5*time.Second, 10*time.Millisecond)

	vmDir := t.TempDir()
	bundle := t.TempDir()
	sockPath := filepath.Join(vmDir, "agent.sock")
	l, err := net.Listen("unix", sockPath)
	require.NoError(t, err)
	shimSocket := filepath.Join(t.TempDir(), "shim.sock")
	require.NoError(t, os.WriteFile(shimSocket, nil, 0o600))
	rootfs := filepath.Join(bundle, "rootfs")
	require.NoError(t, os.MkdirAll(rootfs, 0o755))
	require.NoError(t, unix.Mount("tmpfs", rootfs, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { _ = unix.Unmount(rootfs, unix.MNT_DETACH) })

	f := &Footprint{
		ContainerID: marker, Shim: shimProc, QEMU: []Proc{qemuProc},
		VMDirs: []string{vmDir}, BundleDir: bundle, ShimSockets: []string{shimSocket},
		Markers: []string{marker},
	}
	r := &recorder{TB: t}
	require.False(t, f.RequireGone(r, 200*time.Millisecond))
	got := r.joined()
	for _, want := range []string{
		fmt.Sprintf("shim process still running: pid %d", shim.Process.Pid),
		fmt.Sprintf("QEMU process still running: pid %d", qemu.Process.Pid),
		"socket " + sockPath,
		"mount " + rootfs,
		"shim socket " + shimSocket,
		"VM state dir " + vmDir,
	} {
		require.Contains(t, got, want)
	}

	// Remove everything while RequireGone polls: it must then pass.
	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = shim.Process.Kill()
		_ = qemu.Process.Kill()
		l.Close()
		_ = os.Remove(shimSocket)
		_ = unix.Unmount(rootfs, unix.MNT_DETACH)
		_ = os.RemoveAll(vmDir)
	}()
	require.True(t, f.RequireGone(t, 10*time.Second))
}

func TestShimConfig(t *testing.T) {
	t.Setenv(EnvVMM, "qemu")
	body := "[vm]\nmemory_mib = 128\n"
	path := ShimConfig(t, body)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, body, string(got))
	require.FileExists(t, ShimConfig(t, ""))

	r := &recorder{TB: t}
	r.run(func() { ShimConfig(r, "[vm\nmemory_mib = ") })
	require.Contains(t, r.joined(), "parse shim config body as TOML")
}

// TestShimConfigOnCloudHypervisor: under COFFER_VMM=cloud-hypervisor every
// config selects the VMM, and network.mode "none" (agent-channel forwards)
// unless the body sets a mode itself.
func TestShimConfigOnCloudHypervisor(t *testing.T) {
	t.Setenv(EnvVMM, "cloud-hypervisor")
	read := func(body string) map[string]any {
		b, err := os.ReadFile(ShimConfig(t, body))
		require.NoError(t, err)
		var got map[string]any
		require.NoError(t, toml.Unmarshal(b, &got))
		return got
	}
	got := read("[network]\nforwards = [\"127.0.0.1:5000\"]\n[hypervisor]\nmemory_mib = 256\n")
	require.Equal(t, map[string]any{"vmm": "cloud-hypervisor", "memory_mib": int64(256)}, got["hypervisor"])
	require.Equal(t, map[string]any{"mode": "none", "forwards": []any{"127.0.0.1:5000"}}, got["network"])

	got = read("[network]\nmode = \"user\"\n")
	require.Equal(t, map[string]any{"mode": "user"}, got["network"], "an explicit mode is kept (and the shim refuses it for Cloud Hypervisor)")
}

func TestRequireBinariesSkipsOrFails(t *testing.T) {
	t.Setenv(EnvBinDir, t.TempDir())
	t.Setenv(EnvRequireE2E, "1")
	r := &recorder{TB: t}
	r.run(func() { RequireBinaries(r, "containerd") })
	require.Contains(t, r.joined(), "missing binaries")
	require.Contains(t, r.joined(), EnvRequireE2E)
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	require.NoError(t, err)
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	require.Contains(t, string(mod), "module github.com/cofferhq/coffer")
}

func TestBusyboxImage(t *testing.T) {
	img, err := BusyboxImage()
	require.NoError(t, err)
	again, err := BusyboxImage()
	require.NoError(t, err)
	d1, err := img.Digest()
	require.NoError(t, err)
	d2, err := again.Digest()
	require.NoError(t, err)
	require.Equal(t, d1, d2, "building the image twice must give the same digest")

	m, err := img.Manifest()
	require.NoError(t, err)
	require.EqualValues(t, "application/vnd.oci.image.manifest.v1+json", m.MediaType)
	require.Len(t, m.Layers, 1)
	cfg, err := img.ConfigFile()
	require.NoError(t, err)
	require.Equal(t, []string{"/bin/sh"}, cfg.Config.Cmd)
	require.Equal(t, "linux", cfg.OS)
	require.Equal(t, runtime.GOARCH, cfg.Architecture)

	files := flatten(t, img)
	require.Equal(t, byte(tar.TypeReg), files["bin/busybox"].Typeflag)
	host, err := os.Stat(HostBusybox)
	require.NoError(t, err)
	require.Equal(t, host.Size(), files["bin/busybox"].Size)
	for _, applet := range []string{"sh", "echo", "cat", "sleep", "yes", "head", "find", "sort", "stty", "tee"} {
		h, ok := files["bin/"+applet]
		require.True(t, ok, "image lacks /bin/%s", applet)
		require.Equal(t, byte(tar.TypeSymlink), h.Typeflag)
		require.Equal(t, "busybox", h.Linkname)
	}
}

func TestWhiteoutImageFlattens(t *testing.T) {
	img, err := WhiteoutImage()
	require.NoError(t, err)
	m, err := img.Manifest()
	require.NoError(t, err)
	require.Len(t, m.Layers, 3)
	var data []string
	for name, h := range flatten(t, img) {
		if strings.HasPrefix(name, "data/") && h.Typeflag == tar.TypeReg {
			data = append(data, name)
		}
	}
	sort.Strings(data)
	require.Equal(t, []string{"data/b", "data/dir/y"}, data)
}

// flatten returns the headers of the image's merged filesystem
// (go-containerregistry applies whiteouts in mutate.Extract).
func flatten(t *testing.T, img v1.Image) map[string]*tar.Header {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		out[strings.TrimSuffix(strings.TrimPrefix(h.Name, "/"), "/")] = h
	}
}

func TestRegistryPushDelete(t *testing.T) {
	RequireBinaries(t, "registry")
	reg := StartRegistry(t)
	require.Regexp(t, `^127\.0\.0\.1:\d+$`, reg.Addr())

	resp, err := http.Get("http://" + reg.Addr() + "/v2/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	img, err := BusyboxImage()
	require.NoError(t, err)
	ref, digest := Push(t, reg, "coffer/busybox", img)
	require.Equal(t, reg.Addr()+"/coffer/busybox:latest", ref)
	want, err := img.Digest()
	require.NoError(t, err)
	require.Equal(t, want.String(), digest)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tag, err := ggcrname.ParseReference(ref, ggcrname.Insecure)
	require.NoError(t, err)
	desc, err := remote.Head(tag, remote.WithContext(ctx))
	require.NoError(t, err)
	require.Equal(t, digest, desc.Digest.String())

	DeleteManifest(t, ref, digest)
	_, err = remote.Head(tag, remote.WithContext(ctx))
	require.Error(t, err, "tag must be gone after deleting its manifest")
	byDigest, err := ggcrname.ParseReference(tag.Context().Name()+"@"+digest, ggcrname.Insecure)
	require.NoError(t, err)
	_, err = remote.Head(byDigest, remote.WithContext(ctx))
	require.Error(t, err, "manifest must be gone by digest")

	reg.Stop()
	reg.Stop() // idempotent
	_, err = (&http.Client{Timeout: 2 * time.Second}).Get("http://" + reg.Addr() + "/v2/")
	require.ErrorIs(t, err, syscall.ECONNREFUSED, "a stopped registry must refuse connections")
}

// startPulled starts a registry and a containerd, pushes img as name and
// pulls it into containerd.
func startPulled(t *testing.T, name string, img v1.Image, opts ContainerdOptions) (*Containerd, string) {
	t.Helper()
	requireRoot(t)
	RequireBinaries(t, "registry", "containerd", "ctr")
	reg := StartRegistry(t)
	ctd := StartContainerd(t, opts)
	ref, _ := Push(t, reg, name, img)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, ImagePull(ctx, ctd, ref))
	return ctd, ref
}

func TestContainerdVersionAndPull(t *testing.T) {
	img, err := BusyboxImage()
	require.NoError(t, err)
	ctd, ref := startPulled(t, "busybox", img, ContainerdOptions{})
	require.Less(t, len(ctd.Address()+".ttrpc"), 108, "socket path must fit sun_path")
	require.Regexp(t, namespaceRule, ctd.Namespace())

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := ctd.Ctr(ctx, "version")
	require.NoError(t, err)
	require.Regexp(t, `(?s)Server:.*Version:\s+2\.`, out)

	out, err = ctd.Ctr(ctx, "image", "ls", "-q")
	require.NoError(t, err)
	require.Equal(t, []string{ref}, strings.Fields(out))
	out, err = ctd.Ctr(ctx, "namespaces", "ls", "-q")
	require.NoError(t, err)
	require.Contains(t, strings.Fields(out), ctd.Namespace())

	_, err = ctd.Ctr(ctx, "image", "pull", "--plain-http", "127.0.0.1:1/none:latest")
	var ce *CtrError
	require.ErrorAs(t, err, &ce)
	require.NotZero(t, ce.ExitCode)
	require.Contains(t, ce.Error(), "127.0.0.1:1")
}

func TestContainerdConfigRegistersCC(t *testing.T) {
	requireRoot(t)
	RequireBinaries(t, "containerd", "ctr")
	shimCfg := ShimConfig(t, "")
	ctd := StartContainerd(t, ContainerdOptions{ShimConfigPath: shimCfg})

	// containerd's own view of the merged config.
	out, err := exec.Command(filepath.Join(ctd.BinDir(), "containerd"), "--config", ctd.ConfigPath(), "config", "dump").Output()
	require.NoError(t, err)
	var cfg struct {
		Version int                       `toml:"version"`
		Imports []string                  `toml:"imports"`
		Plugins map[string]map[string]any `toml:"plugins"`
	}
	require.NoError(t, toml.Unmarshal(out, &cfg))
	require.Equal(t, 4, cfg.Version)
	cri := cfg.Plugins["io.containerd.cri.v1.runtime"]
	cc := cri["containerd"].(map[string]any)["runtimes"].(map[string]any)[CRIRuntimeName].(map[string]any)
	require.Equal(t, RuntimeType, cc["runtime_type"])
	require.Equal(t, shimCfg, cc["options"].(map[string]any)["ConfigPath"])
	require.Equal(t, ctd.Address(), cfg.Plugins["io.containerd.server.v1.grpc"]["address"])
	require.Equal(t, ctd.Address()+".ttrpc", cfg.Plugins["io.containerd.server.v1.ttrpc"]["address"])

	// The CRI plugin loads without CNI.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	plugins, err := ctd.Ctr(ctx, "plugins", "ls")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^io\.containerd\.grpc\.v1\s+cri\s+.*\sok\s*$`, plugins)
	require.Regexp(t, `(?m)^io\.containerd\.cri\.v1\s+runtime\s+.*\sok\s*$`, plugins)
}

// TestCtrRuntimeConfigPath pins down how ctr hands a config path to a
// non-runc shim: `--runtime-config-path P` on `ctr run` / `ctr container
// create` stores runtimeoptions.v1.Options{ConfigPath: P} as the
// container's runtime options, which containerd passes to the shim at
// start (bootstrap) and in CreateTaskRequest.Options.
func TestCtrRuntimeConfigPath(t *testing.T) {
	img, err := BusyboxImage()
	require.NoError(t, err)
	ctd, ref := startPulled(t, "busybox", img, ContainerdOptions{})
	shimCfg := ShimConfig(t, "")
	id := "cfgpath-" + RandomSuffix()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = ctd.Ctr(ctx, "container", "create", "--runtime", RuntimeType, "--runtime-config-path", shimCfg, ref, id)
	require.NoError(t, err)
	out, err := ctd.Ctr(ctx, "container", "info", id)
	require.NoError(t, err)
	var info struct {
		Runtime struct {
			Name    string
			Options struct {
				TypeURL string `json:"type_url"`
				Value   []byte `json:"value"`
			}
		}
	}
	require.NoError(t, json.Unmarshal([]byte(out), &info), "ctr container info output:\n%s", out)
	require.Equal(t, RuntimeType, info.Runtime.Name)
	require.True(t, strings.HasSuffix(info.Runtime.Options.TypeURL, "runtimeoptions.v1.Options"), "type_url %q", info.Runtime.Options.TypeURL)
	var opts runtimeoptions.Options
	require.NoError(t, proto.Unmarshal(info.Runtime.Options.Value, &opts))
	require.Equal(t, shimCfg, opts.ConfigPath)
	require.Empty(t, opts.ConfigBody)
	_, err = ctd.Ctr(ctx, "container", "rm", id)
	require.NoError(t, err)
}

// requireRunc skips when the host has no runc for containerd-shim-runc-v2.
func requireRunc(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("host has no runc on PATH; it is needed to run the test image with containerd-shim-runc-v2")
	}
	RequireBinaries(t, "containerd-shim-runc-v2")
}

// TestBusyboxImageRunsUnderRunc checks the test image itself, without the
// Coffer shim: containerd's runc shim runs it from the local registry.
func TestBusyboxImageRunsUnderRunc(t *testing.T) {
	requireRoot(t)
	requireRunc(t)
	img, err := BusyboxImage()
	require.NoError(t, err)
	ctd, ref := startPulled(t, "busybox", img, ContainerdOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := ctd.Ctr(ctx, "run", "--rm", ref, "echo-"+RandomSuffix(), "echo", "hello-coffer")
	require.NoError(t, err)
	require.Equal(t, "hello-coffer\n", out)

	_, err = ctd.Ctr(ctx, "run", "--rm", ref, "exit-"+RandomSuffix(), "sh", "-c", "exit 3")
	var ce *CtrError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, 3, ce.ExitCode, "ctr run exits with the task's status")
}

func TestWhiteoutImageUnderRunc(t *testing.T) {
	requireRoot(t)
	requireRunc(t)
	img, err := WhiteoutImage()
	require.NoError(t, err)
	ctd, ref := startPulled(t, "whiteout", img, ContainerdOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := ctd.Ctr(ctx, "run", "--rm", ref, "wh-"+RandomSuffix(), "find", "/data", "-type", "f")
	require.NoError(t, err)
	lines := strings.Fields(out)
	sort.Strings(lines)
	require.Equal(t, []string{"/data/b", "/data/dir/y"}, lines)
}

func TestPTYResize(t *testing.T) {
	cmd := exec.Command(HostBusybox, "sh", "-c", `stty size; read line; stty size`)
	p, err := StartWithPTY(cmd, 37, 101)
	require.NoError(t, err)
	defer p.Close()
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	off, err := p.WaitFor(0, "37 101", 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, p.Resize(50, 132))
	_, err = p.Write([]byte("go\n"))
	require.NoError(t, err)
	_, err = p.WaitFor(off, "50 132", 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, cmd.Wait())
}
