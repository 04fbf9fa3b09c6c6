package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/cofferhq/coffer/guest/image"
	"github.com/containerd/cgroups/v3"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

const (
	testRunc    = "/usr/sbin/runc"
	testBusybox = "/bin/busybox"
)

// fakePuller writes a rootfs with the host's static busybox and records
// the request.
type fakePuller struct {
	mu   sync.Mutex
	reqs []image.Request
}

var busyboxApplets = []string{"sh", "cat", "echo", "sleep", "head", "stty", "true", "read", "dd", "sha256sum", "wc"}

func (f *fakePuller) Pull(_ context.Context, req image.Request, rootfs string) (*image.Result, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		return nil, err
	}
	for _, d := range []string{"proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return nil, err
		}
	}
	b, err := os.ReadFile(testBusybox)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), b, 0o755); err != nil {
		return nil, err
	}
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			return nil, err
		}
	}
	return &image.Result{
		ManifestDigest: "sha256:" + strings.Repeat("ab", 32),
		LayerDigests:   []string{"sha256:" + strings.Repeat("cd", 32)},
		BytesFetched:   int64(len(b)),
		Duration:       1500 * time.Millisecond,
		ConfigJSON:     []byte(`{"config":{"Env":["PATH=/bin"]}}`),
	}, nil
}

// syncBuffer collects the agent log; it is printed when a test fails.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// errTestDial is returned by the harness agent's Options.Dial.
var errTestDial = errors.New("test dialer")

type harness struct {
	t        *testing.T
	a        *Agent
	dir      string
	sock     string
	client   agent.TTRPCAgentService
	puller   *fakePuller
	powerOff chan struct{}
}

// newHarness serves a fresh Agent on a unix socket and connects a ttrpc
// client. Cleanup removes every container, stops Serve and checks that no
// runc state is left behind.
func newHarness(t *testing.T) *harness {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs containers with runc")
	}
	for _, p := range []string{testRunc, testBusybox} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("needs %s: %v", p, err)
		}
	}
	dir := t.TempDir()
	logs := &syncBuffer{}
	logger := logrus.New()
	logger.SetOutput(logs)
	logger.SetLevel(logrus.DebugLevel)
	h := &harness{t: t, dir: dir, sock: filepath.Join(dir, "agent.sock"), puller: &fakePuller{}, powerOff: make(chan struct{})}
	var once sync.Once
	a, err := New(Options{
		Runc:     testRunc,
		StateDir: filepath.Join(dir, "state"),
		RuncRoot: filepath.Join(dir, "runc"),
		Puller:   h.puller,
		PowerOff: func() { once.Do(func() { close(h.powerOff) }) },
		Dial: func(_ context.Context, network, addr string) (net.Conn, error) {
			return nil, fmt.Errorf("test dialer asked for %s %s: %w", network, addr, errTestDial)
		},
		Version: "v0.0.0-test",
		Log:     logrus.NewEntry(logger),
	})
	require.NoError(t, err)
	h.a = a
	l, err := net.Listen("unix", h.sock)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, l) }()

	conn, err := net.Dial("unix", h.sock)
	require.NoError(t, err)
	require.NoError(t, agent.WriteChannel(conn, agent.ChannelRPC))
	tc := ttrpc.NewClient(conn)
	h.client = agent.NewTTRPCAgentClient(tc)

	t.Cleanup(func() {
		a.mu.Lock()
		var ids []string
		for id, c := range a.containers {
			if c != nil {
				ids = append(ids, id)
			}
		}
		a.mu.Unlock()
		for _, id := range ids {
			rctx, rcancel := context.WithTimeout(context.Background(), 15*time.Second)
			if _, err := h.client.RemoveContainer(rctx, &agent.RemoveContainerRequest{ContainerId: id}); err != nil {
				t.Errorf("cleanup: remove container %s: %v", id, err)
			}
			rcancel()
		}
		tc.Close()
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return 10s after its context was cancelled")
		}
		// Serve no longer reaps children: os/exec is usable again.
		entries, _ := os.ReadDir(filepath.Join(dir, "runc"))
		for _, e := range entries {
			t.Errorf("runc state left for container %s", e.Name())
			exec.Command(testRunc, "--root", filepath.Join(dir, "runc"), "delete", "--force", e.Name()).Run()
		}
		removeCofferCgroups(t)
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	return h
}

// removeCofferCgroups removes the (empty) /coffer parents runc leaves in
// each cgroup v1 hierarchy of the host.
func removeCofferCgroups(t *testing.T) {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/coffer")
	if d := "/sys/fs/cgroup/coffer"; cgroups.Mode() == cgroups.Unified {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("remove cgroup %s: %v", d, err)
		}
	}
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

func (h *harness) pull(id string) {
	h.t.Helper()
	_, err := h.client.PullImage(h.ctx(), &agent.PullImageRequest{ContainerId: id, Reference: "test/busybox:latest"})
	require.NoError(h.t, err)
}

func testSpec(t *testing.T, id string, args ...string) []byte {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), "test")
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: id},
		oci.WithProcessArgs(args...), oci.WithEnv([]string{"PATH=/bin"}))
	require.NoError(t, err)
	b, err := json.Marshal(s)
	require.NoError(t, err)
	return b
}

func processJSON(t *testing.T, args ...string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"args": args, "env": []string{"PATH=/bin"}, "cwd": "/", "user": map[string]any{"uid": 0, "gid": 0}})
	require.NoError(t, err)
	return b
}

// run pulls, creates and starts a container; it returns the init PID.
func (h *harness) run(id string, stdio *agent.StdioSpec, args ...string) uint32 {
	h.t.Helper()
	pid := h.create(id, stdio, args...)
	_, err := h.client.StartContainer(h.ctx(), &agent.StartContainerRequest{ContainerId: id})
	require.NoError(h.t, err)
	return pid
}

func (h *harness) create(id string, stdio *agent.StdioSpec, args ...string) uint32 {
	h.t.Helper()
	h.pull(id)
	resp, err := h.client.CreateContainer(h.ctx(), &agent.CreateContainerRequest{ContainerId: id, OciSpec: testSpec(h.t, id, args...), Stdio: stdio})
	require.NoError(h.t, err)
	require.NotZero(h.t, resp.GetPid())
	return resp.GetPid()
}

// stream opens a stdio stream for a process.
func (h *harness) stream(id, execID string, kind agent.StreamKind) *net.UnixConn {
	h.t.Helper()
	conn, err := net.Dial("unix", h.sock)
	require.NoError(h.t, err)
	h.t.Cleanup(func() { conn.Close() })
	require.NoError(h.t, agent.WriteStreamHeader(conn, &agent.StreamHeader{ContainerId: id, ExecId: execID, Kind: kind}))
	return conn.(*net.UnixConn)
}

// readAll reads r to EOF in the background.
func readAll(r io.Reader) <-chan string {
	ch := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		ch <- string(b)
	}()
	return ch
}

func (h *harness) wait(id, execID string) uint32 {
	h.t.Helper()
	resp, err := h.client.WaitProcess(h.ctx(), &agent.WaitProcessRequest{ContainerId: id, ExecId: execID})
	require.NoError(h.t, err)
	require.NotNil(h.t, resp.GetExitedAt())
	return resp.GetExitStatus()
}

// received returns what ch delivered; WaitProcess having returned, the
// stream must already be at EOF.
func received(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("stream not at EOF 5s after WaitProcess returned")
		return ""
	}
}

func requireClass(t *testing.T, err error, class error, contains ...string) {
	t.Helper()
	require.Error(t, err)
	native := errgrpc.ToNative(err)
	require.ErrorIs(t, native, class, "error %q", err)
	for _, s := range contains {
		require.Contains(t, err.Error(), s)
	}
}

var (
	stdin  = agent.StreamKind_STREAM_KIND_STDIN
	stdout = agent.StreamKind_STREAM_KIND_STDOUT
	stderr = agent.StreamKind_STREAM_KIND_STDERR
)

func TestEchoOutputAndPull(t *testing.T) {
	h := newHarness(t)
	resp, err := h.client.PullImage(h.ctx(), &agent.PullImageRequest{
		ContainerId: "echo", Reference: "test/busybox:latest", Digest: "sha256:" + strings.Repeat("01", 32),
		LayerDigests: []string{"sha256:" + strings.Repeat("02", 32)}, Platform: "linux/amd64",
		Registry: &agent.RegistryConfig{Insecure: []string{"10.0.2.100:5000"}, CaPem: [][]byte{[]byte("pem")}, Endpoints: map[string]string{"r:5000": "10.0.2.100:5000"}},
	})
	require.NoError(t, err)
	require.Equal(t, "sha256:"+strings.Repeat("ab", 32), resp.GetManifestDigest())
	require.Equal(t, []string{"sha256:" + strings.Repeat("cd", 32)}, resp.GetLayerDigests())
	require.Equal(t, int64(1500*time.Millisecond), resp.GetDurationNs())
	require.JSONEq(t, `{"config":{"Env":["PATH=/bin"]}}`, string(resp.GetImageConfig()))
	require.Len(t, h.puller.reqs, 1)
	got := h.puller.reqs[0]
	require.Equal(t, "linux/amd64", got.Platform)
	require.Equal(t, []string{"10.0.2.100:5000"}, got.Registry.Insecure)
	require.Equal(t, map[string]string{"r:5000": "10.0.2.100:5000"}, got.Registry.Endpoints)
	require.NotNil(t, got.Registry.Dial, "the pull gets the agent's dialer (agent-channel forwards)")
	_, err = got.Registry.Dial(h.ctx(), "tcp", "agent-forward/0")
	require.ErrorIs(t, err, errTestDial)

	out := readAll(h.stream("echo", "", stdout))
	errOut := readAll(h.stream("echo", "", stderr))
	c, err := h.client.CreateContainer(h.ctx(), &agent.CreateContainerRequest{
		ContainerId: "echo", OciSpec: testSpec(t, "echo", "sh", "-c", "echo hello; echo oops >&2"),
		Stdio: &agent.StdioSpec{Stdout: true, Stderr: true},
	})
	require.NoError(t, err)
	st, err := h.client.StartContainer(h.ctx(), &agent.StartContainerRequest{ContainerId: "echo"})
	require.NoError(t, err)
	require.Equal(t, c.GetPid(), st.GetPid())
	require.Zero(t, h.wait("echo", ""))
	require.Equal(t, "hello\n", received(t, out))
	require.Equal(t, "oops\n", received(t, errOut))

	cfg, err := os.ReadFile(filepath.Join(h.a.bundleDir("echo"), "config.json"))
	require.NoError(t, err)
	var spec struct {
		Root struct {
			Path     string `json:"path"`
			Readonly bool   `json:"readonly"`
		} `json:"root"`
		Linux struct {
			CgroupsPath string `json:"cgroupsPath"`
		} `json:"linux"`
	}
	require.NoError(t, json.Unmarshal(cfg, &spec))
	require.Equal(t, filepath.Join(h.a.bundleDir("echo"), "rootfs"), spec.Root.Path)
	require.False(t, spec.Root.Readonly)
	require.Equal(t, "/coffer/echo", spec.Linux.CgroupsPath)
}

func TestExitCode(t *testing.T) {
	h := newHarness(t)
	h.run("exit3", nil, "sh", "-c", "exit 3")
	require.EqualValues(t, 3, h.wait("exit3", ""))
}

func TestSigkill(t *testing.T) {
	h := newHarness(t)
	h.run("kill", nil, "sleep", "100")
	_, err := h.client.SignalProcess(h.ctx(), &agent.SignalProcessRequest{ContainerId: "kill", Signal: uint32(unix.SIGKILL)})
	require.NoError(t, err)
	require.EqualValues(t, 128+9, h.wait("kill", ""))
	_, err = h.client.SignalProcess(h.ctx(), &agent.SignalProcessRequest{ContainerId: "kill", Signal: uint32(unix.SIGTERM)})
	requireClass(t, err, errdefs.ErrNotFound, "already exited")
	_, err = h.client.ExecProcess(h.ctx(), &agent.ExecProcessRequest{ContainerId: "kill", ExecId: "late", Process: processJSON(t, "true")})
	requireClass(t, err, errdefs.ErrFailedPrecondition, "init process has exited")
}

func TestStdinCloseStdin(t *testing.T) {
	h := newHarness(t)
	in := h.stream("cat", "", stdin)
	out := readAll(h.stream("cat", "", stdout))
	h.run("cat", &agent.StdioSpec{Stdin: true, Stdout: true}, "cat")
	_, err := in.Write([]byte("hello stdin\n"))
	require.NoError(t, err)
	// The stream stays open: CloseStdin alone must end cat's input, after
	// the bytes already sent.
	_, err = h.client.CloseStdin(h.ctx(), &agent.CloseStdinRequest{ContainerId: "cat"})
	require.NoError(t, err)
	require.Zero(t, h.wait("cat", ""))
	require.Equal(t, "hello stdin\n", received(t, out))
}

func TestStdinStreamEOF(t *testing.T) {
	h := newHarness(t)
	in := h.stream("cat", "", stdin)
	out := readAll(h.stream("cat", "", stdout))
	h.run("cat", &agent.StdioSpec{Stdin: true, Stdout: true}, "sh", "-c", "cat; echo done")
	_, err := in.Write([]byte("line one\nline two\n"))
	require.NoError(t, err)
	require.NoError(t, in.CloseWrite())
	require.Zero(t, h.wait("cat", ""))
	require.Equal(t, "line one\nline two\ndone\n", received(t, out))
}

func TestTTYResize(t *testing.T) {
	h := newHarness(t)
	in := h.stream("tty", "", stdin)
	out := readAll(h.stream("tty", "", stdout))
	errOut := readAll(h.stream("tty", "", stderr))
	h.create("tty", &agent.StdioSpec{Stdin: true, Stdout: true, Stderr: true, Terminal: true}, "sh", "-c", "read x; stty size; echo err >&2")
	_, err := h.client.ResizeTTY(h.ctx(), &agent.ResizeTTYRequest{ContainerId: "tty", Width: 100, Height: 40})
	require.NoError(t, err)
	_, err = h.client.StartContainer(h.ctx(), &agent.StartContainerRequest{ContainerId: "tty"})
	require.NoError(t, err)
	_, err = h.client.ResizeTTY(h.ctx(), &agent.ResizeTTYRequest{ContainerId: "tty", Width: 120, Height: 50})
	require.NoError(t, err)
	_, err = in.Write([]byte("go\n"))
	require.NoError(t, err)
	require.Zero(t, h.wait("tty", ""))
	got := received(t, out)
	require.Contains(t, got, "50 120\r\n")
	require.Contains(t, got, "err\r\n", "stderr is merged into the terminal")
	require.Empty(t, received(t, errOut), "a terminal's stderr stream is closed empty")

	_, err = h.client.ResizeTTY(h.ctx(), &agent.ResizeTTYRequest{ContainerId: "tty", Width: 70000, Height: 1})
	requireClass(t, err, errdefs.ErrInvalidArgument, "70000")
}

func TestExecListPidsAndRemove(t *testing.T) {
	h := newHarness(t)
	initPID := h.run("box", nil, "sleep", "100")

	out := readAll(h.stream("box", "e1", stdout))
	_, err := h.client.ExecProcess(h.ctx(), &agent.ExecProcessRequest{
		ContainerId: "box", ExecId: "e1", Process: processJSON(t, "sh", "-c", "echo from exec; exit 5"),
		Stdio: &agent.StdioSpec{Stdout: true},
	})
	require.NoError(t, err)
	require.EqualValues(t, 5, h.wait("box", "e1"))
	require.Equal(t, "from exec\n", received(t, out))

	e2, err := h.client.ExecProcess(h.ctx(), &agent.ExecProcessRequest{ContainerId: "box", ExecId: "e2", Process: processJSON(t, "sleep", "100")})
	require.NoError(t, err)
	_, err = h.client.ExecProcess(h.ctx(), &agent.ExecProcessRequest{ContainerId: "box", ExecId: "e2", Process: processJSON(t, "true")})
	requireClass(t, err, errdefs.ErrAlreadyExists, `"e2"`)

	pids, err := h.client.ListPids(h.ctx(), &agent.ListPidsRequest{ContainerId: "box"})
	require.NoError(t, err)
	byPID := map[uint32]string{}
	for _, p := range pids.GetProcesses() {
		byPID[p.GetPid()] = p.GetExecId()
	}
	require.Len(t, byPID, 2, "init and e2: %v", byPID)
	require.Contains(t, byPID, initPID)
	require.Equal(t, "", byPID[initPID])
	require.Equal(t, "e2", byPID[e2.GetPid()])

	_, err = h.client.RemoveContainer(h.ctx(), &agent.RemoveContainerRequest{ContainerId: "box", ExecId: "e2"})
	requireClass(t, err, errdefs.ErrFailedPrecondition, "still running")
	_, err = h.client.SignalProcess(h.ctx(), &agent.SignalProcessRequest{ContainerId: "box", ExecId: "e2", Signal: uint32(unix.SIGKILL)})
	require.NoError(t, err)
	require.EqualValues(t, 137, h.wait("box", "e2"))
	_, err = h.client.RemoveContainer(h.ctx(), &agent.RemoveContainerRequest{ContainerId: "box", ExecId: "e2"})
	require.NoError(t, err)
	_, err = h.client.WaitProcess(h.ctx(), &agent.WaitProcessRequest{ContainerId: "box", ExecId: "e2"})
	requireClass(t, err, errdefs.ErrNotFound, `"e2"`)

	// Removing a running container kills it.
	bundle := h.a.bundleDir("box")
	_, err = h.client.RemoveContainer(h.ctx(), &agent.RemoveContainerRequest{ContainerId: "box"})
	require.NoError(t, err)
	_, err = os.Stat(bundle)
	require.ErrorIs(t, err, os.ErrNotExist, "bundle directory must be gone")
	entries, err := os.ReadDir(filepath.Join(h.dir, "runc"))
	require.NoError(t, err)
	require.Empty(t, entries, "runc state must be gone")
	_, err = h.client.RemoveContainer(h.ctx(), &agent.RemoveContainerRequest{ContainerId: "box"})
	requireClass(t, err, errdefs.ErrNotFound)
}

func TestLargeOutputByteExact(t *testing.T) {
	h := newHarness(t)
	h.pull("big")
	data := make([]byte, 64<<20)
	_, err := rand.Read(data)
	require.NoError(t, err)
	want := sha256.Sum256(data)
	require.NoError(t, os.WriteFile(filepath.Join(h.a.bundleDir("big"), "rootfs", "data"), data, 0o644))

	conn := h.stream("big", "", stdout)
	type result struct {
		n   int64
		sum [32]byte
	}
	done := make(chan result, 1)
	go func() {
		hash := sha256.New()
		n, _ := io.Copy(hash, conn)
		var r result
		r.n = n
		copy(r.sum[:], hash.Sum(nil))
		done <- r
	}()
	_, err = h.client.CreateContainer(h.ctx(), &agent.CreateContainerRequest{ContainerId: "big", OciSpec: testSpec(t, "big", "cat", "/data"), Stdio: &agent.StdioSpec{Stdout: true}})
	require.NoError(t, err)
	_, err = h.client.StartContainer(h.ctx(), &agent.StartContainerRequest{ContainerId: "big"})
	require.NoError(t, err)
	require.Zero(t, h.wait("big", ""))
	select {
	case r := <-done:
		require.EqualValues(t, len(data), r.n)
		require.Equal(t, want, r.sum)
	case <-time.After(5 * time.Second):
		t.Fatal("stdout stream not at EOF 5s after WaitProcess returned")
	}
}

func TestUnattachedOutputIsDrained(t *testing.T) {
	h := newHarness(t)
	h.run("drain", &agent.StdioSpec{}, "sh", "-c", "head -c 10485760 /dev/zero; head -c 10485760 /dev/zero >&2; exit 0")
	require.Zero(t, h.wait("drain", ""))
}

func TestStreamsOpenedAfterCreate(t *testing.T) {
	h := newHarness(t)
	h.create("late", &agent.StdioSpec{Stdout: true, Stderr: true}, "sh", "-c", "echo late out; echo late err >&2")
	errOut := readAll(h.stream("late", "", stderr)) // after create, before start
	_, err := h.client.StartContainer(h.ctx(), &agent.StartContainerRequest{ContainerId: "late"})
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond) // the process has written and exited
	out := readAll(h.stream("late", "", stdout))
	require.Zero(t, h.wait("late", ""))
	require.Equal(t, "late out\n", received(t, out))
	require.Equal(t, "late err\n", received(t, errOut))
}

func TestRemoveCleansBundle(t *testing.T) {
	h := newHarness(t)
	h.run("rm", nil, "true")
	require.Zero(t, h.wait("rm", ""))
	bundle := h.a.bundleDir("rm")
	require.DirExists(t, bundle)
	_, err := h.client.RemoveContainer(h.ctx(), &agent.RemoveContainerRequest{ContainerId: "rm"})
	require.NoError(t, err)
	require.NoDirExists(t, bundle)
	entries, err := os.ReadDir(filepath.Join(h.dir, "runc"))
	require.NoError(t, err)
	require.Empty(t, entries)

	// Pulled but never created: Remove drops the bundle.
	h.pull("pulled")
	require.DirExists(t, h.a.bundleDir("pulled"))
	_, err = h.client.RemoveContainer(h.ctx(), &agent.RemoveContainerRequest{ContainerId: "pulled"})
	require.NoError(t, err)
	require.NoDirExists(t, h.a.bundleDir("pulled"))
}

func TestBadIDsRefused(t *testing.T) {
	h := newHarness(t)
	bad := []string{"", "-x", ".hidden", "a/b", "../etc", "a b", strings.Repeat("a", 129), "x\x00"}
	for _, id := range bad {
		_, err := h.client.PullImage(h.ctx(), &agent.PullImageRequest{ContainerId: id, Reference: "r"})
		requireClass(t, err, errdefs.ErrInvalidArgument, "container_id")
		_, err = h.client.CreateContainer(h.ctx(), &agent.CreateContainerRequest{ContainerId: id})
		requireClass(t, err, errdefs.ErrInvalidArgument, "container_id")
		_, err = h.client.WaitProcess(h.ctx(), &agent.WaitProcessRequest{ContainerId: id})
		requireClass(t, err, errdefs.ErrInvalidArgument, "container_id")
		if id == "" {
			continue // an empty exec ID names the init process
		}
		_, err = h.client.ExecProcess(h.ctx(), &agent.ExecProcessRequest{ContainerId: "ok", ExecId: id})
		requireClass(t, err, errdefs.ErrInvalidArgument, "exec_id")
		_, err = h.client.SignalProcess(h.ctx(), &agent.SignalProcessRequest{ContainerId: "ok", ExecId: id, Signal: 9})
		requireClass(t, err, errdefs.ErrInvalidArgument, "exec_id")
	}
	require.NoError(t, validateID("container_id", strings.Repeat("a", 128)))

	// A stream whose header names a bad ID is closed at once.
	conn := h.stream("../x", "", stdout)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err := conn.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
	_, err = os.Stat(filepath.Join(h.dir, "state", "containers", "..", "etc"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestErrorsNameTheProblem(t *testing.T) {
	h := newHarness(t)
	_, err := h.client.StartContainer(h.ctx(), &agent.StartContainerRequest{ContainerId: "nope"})
	requireClass(t, err, errdefs.ErrNotFound, `"nope"`)
	_, err = h.client.CreateContainer(h.ctx(), &agent.CreateContainerRequest{ContainerId: "nopull", OciSpec: testSpec(t, "nopull", "true")})
	requireClass(t, err, errdefs.ErrFailedPrecondition, "PullImage")
	h.pull("badspec")
	_, err = h.client.CreateContainer(h.ctx(), &agent.CreateContainerRequest{ContainerId: "badspec", OciSpec: []byte("{")})
	requireClass(t, err, errdefs.ErrInvalidArgument, "oci_spec")

	// runc's own message reaches the host, and a failed create leaves the
	// ID free and no runc state behind.
	h.pull("noexe")
	_, err = h.client.CreateContainer(h.ctx(), &agent.CreateContainerRequest{ContainerId: "noexe", OciSpec: testSpec(t, "noexe", "/no/such/binary")})
	require.Error(t, err)
	require.Contains(t, err.Error(), `create container "noexe": runc create: `)
	require.Contains(t, err.Error(), `exec: "/no/such/binary": stat /no/such/binary: no such file or directory`)
	entries, err := os.ReadDir(filepath.Join(h.dir, "runc"))
	require.NoError(t, err)
	require.Empty(t, entries)
	_, err = h.client.CreateContainer(h.ctx(), &agent.CreateContainerRequest{ContainerId: "noexe", OciSpec: testSpec(t, "noexe", "true")})
	require.NoError(t, err)
	_, err = h.client.StartContainer(h.ctx(), &agent.StartContainerRequest{ContainerId: "noexe"})
	require.NoError(t, err)
	require.Zero(t, h.wait("noexe", ""))
}

func TestShutdownCallsPowerOff(t *testing.T) {
	h := newHarness(t)
	h.run("victim", nil, "sleep", "100")
	_, err := h.client.Shutdown(h.ctx(), &agent.ShutdownRequest{})
	require.NoError(t, err)
	select {
	case <-h.powerOff:
	case <-time.After(5 * time.Second):
		t.Fatal("PowerOff not called 5s after Shutdown")
	}
	require.EqualValues(t, 137, h.wait("victim", ""))
	_, err = h.client.Shutdown(h.ctx(), &agent.ShutdownRequest{})
	requireClass(t, err, errdefs.ErrFailedPrecondition, "already")
}

func TestUnclaimedStreamClosed(t *testing.T) {
	h := newHarness(t)
	h.a.streams.timeout = 200 * time.Millisecond
	conn := h.stream("ghost", "", stdout)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err := conn.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "an unclaimed stream is closed")
	require.Eventually(t, func() bool {
		for _, l := range h.a.ring.snapshot() {
			if strings.Contains(l, "no process claimed it") && strings.Contains(l, "ghost") {
				return true
			}
		}
		return false
	}, 2*time.Second, 20*time.Millisecond)
}

func TestHealthAndDiagnostics(t *testing.T) {
	h := newHarness(t)
	health, err := h.client.Health(h.ctx(), &agent.HealthRequest{})
	require.NoError(t, err)
	require.Equal(t, "v0.0.0-test", health.GetVersion())
	require.Equal(t, "v1", health.GetApi())
	require.WithinDuration(t, time.Now(), health.GetStartedAt().AsTime(), time.Minute)

	h.create("diag", nil, "sleep", "100")
	d, err := h.client.Diagnostics(h.ctx(), &agent.DiagnosticsRequest{})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"diag": "created"}, d.GetContainers())
	require.Contains(t, d.GetMeminfo(), "MemTotal:")
	require.Contains(t, d.GetMountinfo(), " / ")
	require.NotEmpty(t, d.GetKernel())
	joined := strings.Join(d.GetLog(), "\n")
	require.Contains(t, joined, "container created")
}

func TestStatsAndOOMNeedCgroup2(t *testing.T) {
	h := newHarness(t)
	h.run("stats", nil, "sleep", "100")
	_, err := h.client.Stats(h.ctx(), &agent.StatsRequest{ContainerId: "stats"})
	if cgroups.Mode() != cgroups.Unified {
		requireClass(t, err, errdefs.ErrFailedPrecondition, "cgroup v2")
		t.Skipf("host cgroups are %s, not v2: Stats metrics and GetOOMEvent need cgroup2 (the VM integration tests cover them)", modeName(cgroups.Mode()))
	}
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = h.client.GetOOMEvent(ctx, &agent.GetOOMEventRequest{})
	require.Error(t, err, "no OOM happened")
}

func TestBuildsErrorForMissingOptions(t *testing.T) {
	_, err := New(Options{PowerOff: func() {}})
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	require.Contains(t, err.Error(), "Puller")
	_, err = New(Options{Puller: &fakePuller{}})
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	require.Contains(t, err.Error(), "PowerOff")
}

func ExamplePullerFunc() {
	var p ImagePuller = PullerFunc(image.Pull)
	fmt.Printf("%T\n", p)
	// Output: agent.PullerFunc
}
