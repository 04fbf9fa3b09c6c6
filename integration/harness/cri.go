package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/vishvananda/netlink"
)

// DefaultCNIBinDir is where Debian's containernetworking-plugins package
// (installed by `make deps`) puts the CNI plugins.
const DefaultCNIBinDir = "/usr/lib/cni"

// CRIPodAnnotations are the pod annotations the "cc" runtime passes to the
// shim (pod_annotations in configs/containerd/cri.toml).
var CRIPodAnnotations = []string{"io.coffer.cc.*", "io.katacontainers.config.hypervisor.cc_init_data"}

// cniPlugins are the plugins StartCRI's network needs: the bridge with
// host-local IPAM, and loopback, which containerd runs itself for lo.
var cniPlugins = []string{"bridge", "host-local", "loopback"}

const crictlTimeout = 2 * time.Minute

// CRIConfig is the CRI part of a generated containerd config
// (ContainerdOptions.CRI).
type CRIConfig struct {
	// CNIBinDirs are the directories holding the CNI plugins.
	CNIBinDirs []string
	// CNIConfDir holds the CNI network config; containerd uses its first
	// file (max_conf_num = 1).
	CNIConfDir string
	// SandboxImage is the pause image reference (pinned_images.sandbox).
	SandboxImage string
	// RegistryConfigDir is the CRI image service's registry config_path
	// (containerd hosts.toml dirs, read at each pull); "" sets none.
	RegistryConfigDir string
}

// apply adds c to the config maps StartContainerd renders: the cc runtime
// table, the CRI runtime plugin table, and the plugins table.
func (c *CRIConfig) apply(ccRuntime, criRuntime, plugins map[string]any) {
	ccRuntime["snapshotter"] = CCSnapshotterName
	ccRuntime["sandboxer"] = "podsandbox"
	ccRuntime["pod_annotations"] = CRIPodAnnotations
	criRuntime["cni"] = map[string]any{
		"bin_dirs":     c.CNIBinDirs,
		"conf_dir":     c.CNIConfDir,
		"max_conf_num": 1,
	}
	// Network namespaces under containerd's state dir, not /var/run/netns,
	// so that leftovers are this instance's and go with its temp dir.
	criRuntime["netns_mounts_under_state_dir"] = true
	// CRI gives sandboxes oom_score_adj -998, which needs CAP_SYS_RESOURCE;
	// where the test runs without it (a container), runc's nsexec fails
	// with "failed to update /proc/self/oom_score_adj: Permission denied".
	// Restricting keeps the score at or above containerd's own.
	criRuntime["restrict_oom_score_adj"] = true
	images := map[string]any{
		"pinned_images": map[string]any{"sandbox": c.SandboxImage},
		"runtime_platforms": map[string]any{
			CRIRuntimeName: map[string]any{"platform": "linux/amd64", "snapshotter": CCSnapshotterName},
		},
	}
	if c.RegistryConfigDir != "" {
		images["registry"] = map[string]any{"config_path": c.RegistryConfigDir}
	}
	plugins["io.containerd.cri.v1.images"] = images
}

// CRIOptions configures StartCRI. The zero value is valid.
type CRIOptions struct {
	// ShimConfigPath is the "cc" runtime's shim config (see
	// ContainerdOptions.ShimConfigPath).
	ShimConfigPath string
	// LogLevel is containerd's log level (see ContainerdOptions.LogLevel).
	LogLevel string
	// Registry receives the pause image (PauseImage) that becomes the
	// sandbox image. Nil starts a registry for this test.
	Registry *Registry
	// CNIBinDir holds the CNI plugins; empty means DefaultCNIBinDir.
	CNIBinDir string
}

// PlainHTTPRegistry lets CRI pull from host ("ip:port") over plain HTTP:
// it writes <RegistryConfigDir>/<host>/hosts.toml, which containerd reads
// at each pull, so it may be called after StartCRI.
func (c *CRI) PlainHTTPRegistry(t testing.TB, host string) {
	t.Helper()
	dir := filepath.Join(c.dir, "certs.d", host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+host, "http://"+host)
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Gateway is the test network's gateway (the bridge's address, .1 of
// Subnet), where the host is reachable from pods.
func (c *CRI) Gateway() string { return c.subnet.Addr().Next().String() }

// CRI is a containerd (see Containerd) with its CRI plugin set up for
// crictl: a CNI bridge network private to the test and a pause image in a
// local registry.
type CRI struct {
	*Containerd
	crictlPath   string
	crictlConfig string
	dir          string
	bridge       string
	subnet       netip.Prefix
	sandboxImage string
}

// StartCRI starts containerd (StartContainerd) with the CRI plugin
// configured for crictl, without a kubelet:
//
//   - CNI: a conflist in a temp dir with the bridge plugin on a bridge
//     named ccbr<8 hex> and host-local IPAM on a free 10.x.y.0/24 (its
//     .1 is the gateway, its data dir in the temp dir, no IP masquerade);
//     containerd adds loopback itself. Plugins from opts.CNIBinDir.
//   - the sandbox (pause) image: PauseImage pushed to opts.Registry (or a
//     registry started for the test), which containerd pulls over plain
//     HTTP from 127.0.0.1;
//   - network namespaces under containerd's state dir;
//   - the runtime handler "cc" with snapshotter cc, sandboxer podsandbox
//     and CRIPodAnnotations, and the default handler runc.
//
// Missing binaries (containerd, ctr, crictl, containerd-shim-runc-v2,
// registry) or CNI plugins skip the test, or fail it under
// $COFFER_REQUIRE_E2E (RequireBinaries, RequireCNIPlugins).
//
// t.Cleanup, in order: stops and removes every pod sandbox
// (`crictl rmp -af`), then StartContainerd's cleanup, then deletes the
// bridge and the temp dir.
func StartCRI(t testing.TB, opts CRIOptions) *CRI {
	t.Helper()
	binDir := RequireBinaries(t, "containerd", "ctr", "crictl", "containerd-shim-runc-v2", "registry")
	cniBin := opts.CNIBinDir
	if cniBin == "" {
		cniBin = DefaultCNIBinDir
	}
	RequireCNIPlugins(t, cniBin)

	reg := opts.Registry
	if reg == nil {
		reg = StartRegistry(t)
	}
	pause, err := PauseImage()
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := Push(t, reg, "coffer-test/pause", pause)

	dir, err := os.MkdirTemp("", "cri-")
	if err != nil {
		t.Fatalf("create CRI temp dir: %v", err)
	}
	c := &CRI{
		crictlPath:   filepath.Join(binDir, "crictl"),
		crictlConfig: filepath.Join(dir, "crictl.yaml"),
		dir:          dir,
		bridge:       "ccbr" + RandomSuffix(),
		sandboxImage: ref,
	}
	t.Cleanup(func() { c.cleanupNetwork(t) }) // runs after containerd's cleanup
	if c.subnet, err = freeSubnet(); err != nil {
		t.Fatal(err)
	}
	confDir := filepath.Join(dir, "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confDir, "10-coffer-test.conflist"), c.conflist(), 0o644); err != nil {
		t.Fatalf("write CNI config: %v", err)
	}

	c.Containerd = StartContainerd(t, ContainerdOptions{
		ShimConfigPath: opts.ShimConfigPath,
		LogLevel:       opts.LogLevel,
		CRI:            &CRIConfig{CNIBinDirs: []string{cniBin}, CNIConfDir: confDir, SandboxImage: ref, RegistryConfigDir: filepath.Join(dir, "certs.d")},
	})
	crictlYAML := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", c.Address(), c.Address())
	if err := os.WriteFile(c.crictlConfig, []byte(crictlYAML), 0o644); err != nil {
		t.Fatalf("write crictl config: %v", err)
	}
	t.Cleanup(func() { c.removePods(t) }) // runs before containerd's cleanup
	return c
}

// RequireCNIPlugins checks that dir holds the bridge, host-local and
// loopback CNI plugins. When some are missing it skips the test, naming
// them and the package that installs them, or fails it when
// $COFFER_REQUIRE_E2E is set.
func RequireCNIPlugins(t testing.TB, dir string) {
	t.Helper()
	paths := make([]string, len(cniPlugins))
	for i, p := range cniPlugins {
		paths[i] = filepath.Join(dir, p)
	}
	if missing := MissingFiles(paths...); len(missing) > 0 {
		msg := fmt.Sprintf("missing CNI plugins %v: run `make deps` (Debian's containernetworking-plugins)", missing)
		if RequireE2E() {
			t.Fatalf("%s; %s is set, so this is a failure", msg, EnvRequireE2E)
		}
		t.Skip(msg)
	}
}

// PauseImage builds the sandbox image StartCRI pushes: BusyboxImage with
// the entrypoint `/bin/sleep 2147483647`, so a runc pod's sandbox process
// lives until CRI kills it (CRI stops a sandbox with SIGKILL).
func PauseImage() (v1.Image, error) {
	img, err := BusyboxImage()
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read busybox image config: %w", err)
	}
	cfg := cf.Config
	cfg.Entrypoint = []string{"/bin/sleep", "2147483647"}
	cfg.Cmd = nil
	out, err := mutate.Config(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("set pause image entrypoint: %w", err)
	}
	return out, nil
}

// CrictlCommand returns an unstarted `crictl --config <this instance's
// crictl.yaml> args...` bound to ctx (killed when ctx is done), with
// CONTAINER_RUNTIME_ENDPOINT and IMAGE_SERVICE_ENDPOINT removed from its
// environment. The config names this containerd's socket as runtime and
// image endpoint.
func (c *CRI) CrictlCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.crictlPath, append([]string{"--config", c.crictlConfig}, args...)...)
	cmd.Env = withoutEnv(os.Environ(), "CONTAINER_RUNTIME_ENDPOINT", "IMAGE_SERVICE_ENDPOINT", "CRI_CONFIG_FILE")
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Crictl runs crictl (see CrictlCommand) with stdin from /dev/null and
// returns its stdout with surrounding white space trimmed. A non-zero exit
// is an error naming the arguments, the exit status and crictl's stderr,
// wrapping the *exec.ExitError.
func (c *CRI) Crictl(ctx context.Context, args ...string) (string, error) {
	cmd := c.CrictlCommand(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("run `crictl %s`: %w; stderr: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// PodConfig writes a CRI PodSandboxConfig (JSON, as `crictl runp` reads
// it) for a pod named name in Kubernetes namespace "default", with a unique
// uid, a log directory in the test's temp dir and the given annotations,
// and returns the file's path.
func (c *CRI) PodConfig(t testing.TB, name string, annotations map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := map[string]any{
		"metadata": map[string]any{
			"name": name, "namespace": "default", "uid": name + "-" + RandomSuffix(), "attempt": 0,
		},
		"log_directory": filepath.Join(dir, "logs"),
		"annotations":   annotations,
		"linux":         map[string]any{},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("marshal pod config: %v", err)
	}
	p := filepath.Join(dir, "pod.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatalf("write pod config: %v", err)
	}
	return p
}

// Bridge returns the name of the test network's Linux bridge.
func (c *CRI) Bridge() string { return c.bridge }

// Subnet returns the test network's IPv4 subnet; pods get addresses from
// .2 up, the bridge is the gateway .1.
func (c *CRI) Subnet() netip.Prefix { return c.subnet }

// SandboxImage returns the pause image reference containerd uses.
func (c *CRI) SandboxImage() string { return c.sandboxImage }

// IPAMDir returns host-local's data dir: one file per allocated address.
func (c *CRI) IPAMDir() string { return filepath.Join(c.dir, "ipam") }

// conflist renders the CNI network config.
func (c *CRI) conflist() []byte {
	gw := c.subnet.Addr().Next()
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "coffer-test-" + strings.TrimPrefix(c.bridge, "ccbr"),
		"plugins": []any{map[string]any{
			"type":      "bridge",
			"bridge":    c.bridge,
			"isGateway": true,
			"ipMasq":    false,
			"ipam": map[string]any{
				"type":    "host-local",
				"dataDir": c.IPAMDir(),
				"ranges":  [][]map[string]string{{{"subnet": c.subnet.String(), "gateway": gw.String()}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
			},
		}},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("marshal CNI config: %v", err)) // only maps, slices and strings
	}
	return b
}

// removePods stops and removes every pod sandbox, best effort.
func (c *CRI) removePods(t testing.TB) {
	if c.Containerd == nil {
		return
	}
	select {
	case <-c.exited:
		return
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), crictlTimeout)
	defer cancel()
	if out, err := c.Crictl(ctx, "pods", "-q"); err != nil {
		t.Logf("cleanup: %v", err)
	} else if out != "" {
		if _, err := c.Crictl(ctx, "rmp", "-af"); err != nil {
			t.Logf("cleanup: %v", err)
		}
	}
}

// cleanupNetwork deletes the bridge and the temp dir.
func (c *CRI) cleanupNetwork(t testing.TB) {
	if l, err := netlink.LinkByName(c.bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			t.Errorf("cleanup: delete bridge %s: %v", c.bridge, err)
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		t.Errorf("cleanup: remove %s: %v", c.dir, err)
	}
}

// freeSubnet picks a random 10.x.y.0/24 (x from 200 to 254) that overlaps
// no IPv4 address or route of this host.
func freeSubnet() (netip.Prefix, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list host addresses: %w", err)
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list host routes: %w", err)
	}
	var used []netip.Prefix
	for _, a := range addrs {
		if p, ok := ipNetPrefix(a.IPNet.IP, a.IPNet.Mask); ok {
			used = append(used, p)
		}
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if p, ok := ipNetPrefix(r.Dst.IP, r.Dst.Mask); ok && p.Bits() > 0 {
			used = append(used, p)
		}
	}
	for range 100 {
		n, err := rand.Int(rand.Reader, big.NewInt(55*256))
		if err != nil {
			return netip.Prefix{}, err
		}
		v := int(n.Int64())
		cand := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + v/256), byte(v % 256), 0}), 24)
		free := true
		for _, u := range used {
			if u.Overlaps(cand) {
				free = false
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("find a free 10.200-254.x.0/24 subnet for the CNI test network: all 100 tries overlapped host addresses or routes")
}

// ipNetPrefix converts an address and mask from netlink into a masked
// prefix.
func ipNetPrefix(ip net.IP, mask net.IPMask) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	if a.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}
