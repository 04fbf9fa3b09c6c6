package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

const (
	// RuntimeType is the containerd runtime name of the Coffer shim; it
	// resolves to the binary ShimBinary.
	RuntimeType = "io.containerd.cc.v2"
	// ShimBinary is the file name of the Coffer shim.
	ShimBinary = "containerd-shim-cc-v2"
	// CRIRuntimeName is the CRI runtime handler StartContainerd registers
	// for RuntimeType (plugins."io.containerd.cri.v1.runtime".containerd.runtimes.cc).
	CRIRuntimeName = "cc"
	// VMStateRoot is where the shim keeps one directory per VM
	// (/run/cc/<hash>/), holding console.log among others.
	VMStateRoot = "/run/cc"
)

const (
	containerdStartTimeout = 30 * time.Second
	containerdStopTimeout  = 10 * time.Second
	cleanupCtrTimeout      = 30 * time.Second
	// maxSocketPath keeps socket paths below the 108-byte sun_path limit
	// with room for the ".ttrpc" suffix.
	maxSocketPath = 100
)

// ContainerdOptions configures StartContainerd. The zero value is valid.
type ContainerdOptions struct {
	// ShimConfigPath, when set, becomes ConfigPath in the options of the CRI
	// runtime "cc" (containerd passes it to the shim as
	// runtimeoptions.Options.ConfigPath). Empty leaves the options out.
	// ctr does not read CRI runtime options: pass
	// --runtime-config-path to `ctr run` / `ctr container create` instead.
	ShimConfigPath string
	// LogLevel is containerd's [debug] level ("trace", "debug", "info",
	// "warn", "error"); containerd passes debug on to the shims it starts.
	// Empty means "debug".
	LogLevel string
	// CRI, when set, configures the CRI plugin for crictl and CNI (see
	// StartCRI, which sets it): CNI dirs, the sandbox image, network
	// namespaces under the state dir, and the "cc" runtime's snapshotter,
	// sandboxer and pod annotations as in configs/containerd/cri.toml. Nil
	// leaves the CRI plugin at containerd's defaults (no CNI).
	CRI *CRIConfig
}

// Containerd is a containerd daemon private to one test: its own root,
// state, gRPC and TTRPC sockets under a short temp dir, its own log file,
// and a containerd namespace unique to the test.
//
// containerd still uses the host-wide /run/containerd/s for shim sockets,
// and ctr uses /run/containerd/fifo for stdio FIFOs unless given
// --fifo-dir (see FIFODir); their names are hashes or random, so
// concurrent instances do not collide.
type Containerd struct {
	binDir    string
	ctrPath   string
	dir       string
	address   string
	namespace string
	logPath   string
	started   time.Time
	cmd       *exec.Cmd
	exited    chan struct{}
	sn        *Snapshotter

	mu sync.Mutex
	// shimSockets are socket paths footprints expect shims to create;
	// cleanup removes those still present.
	shimSockets map[string]bool
}

// StartContainerd starts containerd from BinDir with a generated
// version-4 config: root and state under a fresh short temp dir
// ($TMPDIR/ctd-*, or /tmp/ctd-* when $TMPDIR is too long for socket
// paths), gRPC socket <dir>/containerd.sock, TTRPC socket
// <dir>/containerd.sock.ttrpc, and the CRI runtime "cc" with
// runtime_type = RuntimeType (see ContainerdOptions.ShimConfigPath). PATH
// starts with BinDir, so containerd finds ShimBinary there. The CRI plugin
// stays enabled; it starts without CNI and only warns.
//
// It waits until `ctr version` reaches the daemon (at most 30 s) and fails
// the test (t.Fatal) otherwise, with the log tail.
//
// t.Cleanup, in order: when the test failed, logs the tail of the
// containerd log and of every /run/cc/*/console.log written since start;
// removes the namespace's tasks and containers with ctr; SIGKILLs any
// ShimBinary process still serving this containerd and its descendants,
// and any QEMU naming this containerd's socket or namespace; stops
// containerd (SIGTERM, SIGKILL after 10 s); unmounts what is left under its
// dirs; removes the temp dir.
func StartContainerd(t testing.TB, opts ContainerdOptions) *Containerd {
	t.Helper()
	bin, err := binary("containerd")
	if err != nil {
		t.Fatal(err)
	}
	ctrPath, err := binary("ctr")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := shortTempDir("ctd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{
		binDir:      filepath.Dir(bin),
		ctrPath:     ctrPath,
		dir:         dir,
		address:     filepath.Join(dir, "containerd.sock"),
		namespace:   NamespaceFor(t.Name()),
		logPath:     filepath.Join(dir, "containerd.log"),
		exited:      make(chan struct{}),
		shimSockets: map[string]bool{},
	}
	sn, err := startSnapshotter(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatal(err)
	}
	c.sn = sn
	configPath := c.ConfigPath()
	if err := os.WriteFile(configPath, c.config(opts), 0o644); err != nil {
		sn.Stop()
		_ = os.RemoveAll(dir)
		t.Fatalf("write containerd config: %v", err)
	}
	c.started = time.Now()
	t.Cleanup(func() { c.cleanup(t) })
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
	return c
}

// start launches containerd with the generated config and waits until it
// serves.
func (c *Containerd) start() error {
	bin := filepath.Join(c.binDir, "containerd")
	logFile, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open containerd log: %w", err)
	}
	defer logFile.Close()
	c.cmd = exec.Command(bin, "--config", c.ConfigPath())
	c.cmd.Stdout = logFile
	c.cmd.Stderr = logFile
	c.cmd.Env = append(withoutEnv(os.Environ(), "PATH", "CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE"),
		"PATH="+c.binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	exited := make(chan struct{})
	c.exited = exited
	if err := c.cmd.Start(); err != nil {
		close(exited)
		return fmt.Errorf("start %s: %w", bin, err)
	}
	cmd := c.cmd
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	return c.waitReady(containerdStartTimeout)
}

// Restart stops containerd (SIGTERM) and starts it again with the same
// config, root and state; running shims are not touched.
func (c *Containerd) Restart(t testing.TB) {
	t.Helper()
	c.stop(t)
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
}

// Snapshotter returns this instance's cc-snapshotter.
func (c *Containerd) Snapshotter() *Snapshotter { return c.sn }

// config renders the containerd config file.
func (c *Containerd) config(opts ContainerdOptions) []byte {
	level := opts.LogLevel
	if level == "" {
		level = "debug"
	}
	runtime := map[string]any{"runtime_type": RuntimeType}
	if opts.ShimConfigPath != "" {
		runtime["options"] = map[string]any{"ConfigPath": opts.ShimConfigPath}
	}
	unpack := []map[string]any{
		{"platform": "linux/amd64", "snapshotter": "overlayfs"},
		{"platform": "linux/amd64", "snapshotter": CCSnapshotterName},
	}
	criRuntime := map[string]any{
		"containerd": map[string]any{
			"runtimes": map[string]any{CRIRuntimeName: runtime},
		},
	}
	plugins := map[string]any{
		"io.containerd.server.v1.grpc":    map[string]any{"address": c.address},
		"io.containerd.server.v1.ttrpc":   map[string]any{"address": c.address + ".ttrpc"},
		"io.containerd.transfer.v1.local": map[string]any{"unpack_config": unpack},
		"io.containerd.cri.v1.runtime":    criRuntime,
	}
	if opts.CRI != nil {
		opts.CRI.apply(runtime, criRuntime, plugins)
	}
	cfg := map[string]any{
		"version": 4,
		"proxy_plugins": map[string]any{
			CCSnapshotterName: map[string]any{
				"type":    "snapshot",
				"address": c.sn.Address(),
				"exports": map[string]any{"enable_remote_snapshot_annotations": "true"},
			},
		},
		"root":    filepath.Join(c.dir, "root"),
		"state":   filepath.Join(c.dir, "state"),
		"debug":   map[string]any{"level": level},
		"plugins": plugins,
	}
	b, err := toml.Marshal(cfg)
	if err != nil {
		// Only strings, ints and maps of them: Marshal cannot fail.
		panic(fmt.Sprintf("marshal containerd config: %v", err))
	}
	return b
}

// waitReady waits for the gRPC socket and then for `ctr version` to reach
// the daemon.
func (c *Containerd) waitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var lastErr error
	for {
		select {
		case <-c.exited:
			return fmt.Errorf("containerd exited during startup (%v); log tail (%s):\n%s", c.cmd.ProcessState, c.logPath, tailFile(c.logPath, 40))
		case <-ctx.Done():
			return fmt.Errorf("containerd not serving %s after %s: %v; log tail (%s):\n%s", c.address, timeout, lastErr, c.logPath, tailFile(c.logPath, 40))
		case <-time.After(50 * time.Millisecond):
		}
		if _, err := os.Stat(c.address); err != nil {
			lastErr = err
			continue
		}
		vctx, vcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := c.Ctr(vctx, "version")
		vcancel()
		if err == nil {
			return nil
		}
		lastErr = err
	}
}

// Address returns the path of containerd's gRPC socket.
func (c *Containerd) Address() string { return c.address }

// Namespace returns the containerd namespace Ctr and Command use: t.Name()
// made namespace-safe plus random characters (see NamespaceFor).
func (c *Containerd) Namespace() string { return c.namespace }

// BinDir returns the directory holding the binaries this instance runs.
func (c *Containerd) BinDir() string { return c.binDir }

// RootDir returns containerd's root (persistent data) directory.
func (c *Containerd) RootDir() string { return filepath.Join(c.dir, "root") }

// StateDir returns containerd's state (transient data) directory.
func (c *Containerd) StateDir() string { return filepath.Join(c.dir, "state") }

// ConfigPath returns the path of the generated containerd config file.
func (c *Containerd) ConfigPath() string { return filepath.Join(c.dir, "config.toml") }

// FIFODir returns a directory for ctr's stdio FIFOs (`ctr run --fifo-dir`)
// inside this instance's temp dir, so FIFOs that ctr leaves behind (it
// does for detached tasks removed by another ctr) go away with it.
func (c *Containerd) FIFODir() string { return filepath.Join(c.dir, "fifo") }

// LogPath returns the file receiving containerd's (and its shims') logs.
func (c *Containerd) LogPath() string { return c.logPath }

// BundleDir returns the task bundle directory containerd creates for
// container id in this namespace:
// <state>/io.containerd.runtime.v2.task/<namespace>/<id>.
func (c *Containerd) BundleDir(id string) string {
	return filepath.Join(c.StateDir(), "io.containerd.runtime.v2.task", c.namespace, id)
}

// LogTail returns the last n lines of the containerd log.
func (c *Containerd) LogTail(n int) string { return tailFile(c.logPath, n) }

// cleanup implements the t.Cleanup described in StartContainerd.
func (c *Containerd) cleanup(t testing.TB) {
	if t.Failed() {
		c.dumpDebug(t)
	}
	select {
	case <-c.exited:
	default:
		c.removeContainers(t)
	}
	shimSockets := c.shimSocketPaths()
	vmDirs := c.killStrays(t)
	c.stop(t)
	if c.sn != nil {
		c.sn.Stop()
	}
	for _, s := range shimSockets {
		if fi, err := os.Lstat(s); err == nil && fi.Mode()&os.ModeSocket != 0 {
			t.Logf("cleanup: removing leftover shim socket %s", s)
			_ = os.Remove(s)
		}
	}
	for _, d := range vmDirs {
		if err := unmountUnder(d); err != nil {
			t.Logf("cleanup: %v", err)
		}
		_ = os.RemoveAll(d)
	}
	if err := unmountUnder(c.dir); err != nil {
		t.Logf("cleanup: %v", err)
	}
	if err := os.RemoveAll(c.dir); err != nil {
		t.Errorf("remove containerd dir: %v", err)
	}
}

// dumpDebug logs the containerd log tail and the recent VM console logs.
func (c *Containerd) dumpDebug(t testing.TB) {
	t.Logf("containerd log tail (%s):\n%s", c.logPath, tailFile(c.logPath, 150))
	logs, _ := filepath.Glob(filepath.Join(VMStateRoot, "*", "console.log"))
	for _, l := range logs {
		st, err := os.Stat(l)
		if err != nil || st.ModTime().Before(c.started) {
			continue
		}
		t.Logf("VM console log tail (%s):\n%s", l, tailFile(l, 60))
	}
}

// removeContainers deletes every task and container in the namespace,
// best effort: errors are logged, not failures.
func (c *Containerd) removeContainers(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*cleanupCtrTimeout)
	defer cancel()
	if out, err := c.Ctr(ctx, "task", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			if _, err := c.Ctr(ctx, "task", "rm", "-f", id); err != nil {
				t.Logf("cleanup: %v", err)
			}
		}
	} else {
		t.Logf("cleanup: %v", err)
	}
	if out, err := c.Ctr(ctx, "container", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			if _, err := c.Ctr(ctx, "container", "rm", id); err != nil {
				t.Logf("cleanup: %v", err)
			}
		}
	} else {
		t.Logf("cleanup: %v", err)
	}
}

// noteShimSockets remembers shim socket paths for cleanup.
func (c *Containerd) noteShimSockets(paths ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range paths {
		c.shimSockets[p] = true
	}
}

// shimSocketPaths returns the shim sockets noted by footprints plus those
// recorded in this instance's remaining bundles (bootstrap.json), so
// cleanup can remove the sockets of shims that died or that it killed.
func (c *Containerd) shimSocketPaths() []string {
	files, _ := filepath.Glob(filepath.Join(c.StateDir(), "io.containerd.runtime.v2.task", "*", "*", "bootstrap.json"))
	for _, f := range files {
		if s, err := shimSocketFromBootstrap(f); err == nil && s != "" {
			c.noteShimSockets(s)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.shimSockets))
	for s := range c.shimSockets {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// killStrays SIGKILLs shims still serving this containerd, their
// descendants, and QEMU processes naming this containerd's socket or
// namespace. It returns the VM state dirs named on the killed QEMU command
// lines.
func (c *Containerd) killStrays(t testing.TB) []string {
	procs, err := ListProcs()
	if err != nil {
		t.Logf("cleanup: %v", err)
		return nil
	}
	victims := map[int]Proc{}
	for _, s := range ShimProcs(procs, "", c.address) {
		victims[s.PID] = s
		for _, d := range Descendants(procs, s.PID) {
			victims[d.PID] = d
		}
	}
	for _, p := range procs {
		if p.IsVMM() && (p.Mentions(c.address) || p.Mentions(c.namespace)) {
			victims[p.PID] = p
		}
	}
	var dirs []string
	for _, p := range victims {
		t.Logf("cleanup: killing leftover %s", p)
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
		if p.IsVMM() {
			dirs = append(dirs, vmDirsOf(p)...)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range victims {
		for p.Alive() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return dirs
}

// stop sends SIGTERM to containerd and SIGKILL if it has not exited after
// 10 s.
func (c *Containerd) stop(t testing.TB) {
	select {
	case <-c.exited:
		t.Logf("cleanup: containerd had already exited (%v)", c.cmd.ProcessState)
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(containerdStopTimeout):
		t.Logf("cleanup: containerd ignored SIGTERM for %s, sending SIGKILL", containerdStopTimeout)
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.exited
	}
}

// shortTempDir creates a temp dir whose socket paths fit in sun_path: under
// $TMPDIR when that is short enough, else under /tmp.
func shortTempDir(prefix string) (string, error) {
	base := os.TempDir()
	if len(base)+len("/"+prefix+"0123456789/containerd.sock.ttrpc") > maxSocketPath {
		base = "/tmp"
	}
	d, err := os.MkdirTemp(base, prefix)
	if err != nil {
		return "", fmt.Errorf("create temp dir for containerd: %w", err)
	}
	return d, nil
}

// withoutEnv returns env without the entries for the named variables.
func withoutEnv(env []string, names ...string) []string {
	out := make([]string, 0, len(env))
next:
	for _, kv := range env {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}
