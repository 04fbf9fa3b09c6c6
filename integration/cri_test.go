package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/integration/harness"
)

// criEnv is a containerd with its CRI plugin and the "cc" runtime handler,
// a registry the pods reach at the CNI network's gateway, and a
// per-test shim config.
type criEnv struct {
	t   testing.TB
	ctx context.Context
	cri *harness.CRI
	reg *harness.Registry
	// busybox is the test image as pods name it (<gateway>:<port>/busybox).
	busybox string
}

// newCRIEnv starts everything; shimBody is appended to the shim config.
// It runs on the VMM harness.VMM names: under COFFER_VMM=cloud-hypervisor
// the pod's VM is a Cloud Hypervisor one, given the pod's tap with
// vm.add-net and its addresses on the kernel command line.
func newCRIEnv(t testing.TB, shimBody string) *criEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), longTest)
	t.Cleanup(cancel)
	reg := harness.StartRegistryAllInterfaces(t)
	shimConfig := filepath.Join(t.TempDir(), "shim-config.toml")
	require.NoError(t, os.WriteFile(shimConfig, nil, 0o644))
	cri := harness.StartCRI(t, harness.CRIOptions{ShimConfigPath: shimConfig, Registry: reg})
	regAddr := reg.AddrOn(cri.Gateway())
	cri.PlainHTTPRegistry(t, regAddr)
	// The guest reaches the registry over the pod network (tap), so it is
	// named by the gateway address; no user-mode forwards are involved.
	body := fmt.Sprintf("[registry]\ninsecure = [%q]\n", regAddr) + shimBody
	if harness.VMM() == "cloud-hypervisor" {
		// Cloud Hypervisor refuses the default user-mode network; a pod's
		// VM is put on the pod network either way.
		body += "[network]\nmode = \"none\"\n"
	}
	// harness.ShimConfig checks the TOML and sets hypervisor.vmm.
	b, err := os.ReadFile(harness.ShimConfig(t, body))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(shimConfig, b, 0o644))

	img, err := harness.BusyboxImage()
	require.NoError(t, err)
	harness.Push(t, reg, "busybox", img)
	return &criEnv{t: t, ctx: ctx, cri: cri, reg: reg, busybox: regAddr + "/busybox:latest"}
}

// crictl runs crictl and fails the test on error.
func (e *criEnv) crictl(args ...string) string {
	e.t.Helper()
	out, err := e.cri.Crictl(e.ctx, args...)
	require.NoError(e.t, err, "crictl %s", strings.Join(args, " "))
	return out
}

// pull pulls the test image with CRI. The registry is reached at the CNI
// bridge's address, which exists once the first pod ran.
func (e *criEnv) pull() { e.crictl("pull", e.busybox) }

// runPod starts a pod with runtime handler cc and returns its ID.
func (e *criEnv) runPod(name string, annotations map[string]string) (id, config string) {
	e.t.Helper()
	config = e.cri.PodConfig(e.t, name, annotations)
	return e.crictl("runp", "--runtime", "cc", config), config
}

// startContainer creates and starts a container in pod and returns its ID.
func (e *criEnv) startContainer(pod, podConfig, name string, extra map[string]any, cmd ...string) string {
	e.t.Helper()
	cfg := map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": e.busybox},
		"command":  cmd,
		"log_path": name + ".log",
		"linux":    map[string]any{},
	}
	for k, v := range extra {
		cfg[k] = v
	}
	b, err := json.Marshal(cfg)
	require.NoError(e.t, err)
	p := filepath.Join(e.t.TempDir(), name+".json")
	require.NoError(e.t, os.WriteFile(p, b, 0o644))
	id := e.crictl("create", pod, p, podConfig)
	e.crictl("start", id)
	return id
}

// allowAllPod is the pod annotation carrying init-data with the
// development allow-all agent policy.
func allowAllPod(t testing.TB) map[string]string {
	return map[string]string{"io.coffer.cc.init-data": harness.InitData{Policy: harness.Policy(t, "allow-all.rego")}.Annotation()}
}

// TestCRIPodTwoContainersOneVM runs a pod with two containers through
// crictl: both share one VM and the pod network (one reaches the other on
// localhost, the host reaches the pod IP), and logs, exec, stats and
// inspect work. Removing the pod leaves no QEMU, mount or socket.
func TestCRIPodTwoContainersOneVM(t *testing.T) {
	e := newCRIEnv(t, "")
	pod, podCfg := e.runPod("web", allowAllPod(t))
	e.pull()

	web := e.startContainer(pod, podCfg, "web", nil, "sh", "-c",
		"echo hello from web; mkdir -p /www && echo pong > /www/index.html && exec httpd -f -p 8080 -h /www")
	client := e.startContainer(pod, podCfg, "client", nil, "sleep", "1000")

	qemus := harness.LiveQEMU(pod)
	require.Len(t, qemus, 1, "want one VM for the pod: %v", qemus)

	var out string
	require.Eventually(t, func() bool {
		o, err := e.cri.Crictl(e.ctx, "exec", client, "wget", "-qO-", "http://127.0.0.1:8080/")
		out = o
		return err == nil
	}, time.Minute, time.Second, "the client container never reached the web container on localhost")
	require.Equal(t, "pong", strings.TrimSpace(out))

	// The pod IP CNI assigned is the guest's: the host reaches the web
	// container through the tap and the pod's veth.
	var status struct {
		Status struct {
			Network struct{ IP string } `json:"network"`
		} `json:"status"`
	}
	require.NoError(t, json.Unmarshal([]byte(e.crictl("inspectp", pod)), &status))
	podIP := status.Status.Network.IP
	require.True(t, e.cri.Subnet().Contains(mustAddr(t, podIP)), "pod IP %s outside %s", podIP, e.cri.Subnet())
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + podIP + ":8080/")
	require.NoError(t, err, "the host cannot reach the pod IP")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, "pong", strings.TrimSpace(string(body)))

	require.Contains(t, e.crictl("logs", web), "hello from web")
	stats := e.crictl("stats", "-o", "json")
	require.Contains(t, stats, web)
	require.Contains(t, stats, client)
	var inspect struct {
		Status struct{ State string } `json:"status"`
	}
	require.NoError(t, json.Unmarshal([]byte(e.crictl("inspect", web)), &inspect))
	require.Equal(t, "CONTAINER_RUNNING", inspect.Status.State)

	e.crictl("stopp", pod)
	e.crictl("rmp", pod)
	require.Eventually(t, func() bool { return len(harness.LiveQEMU(pod)) == 0 }, goneWithin, 200*time.Millisecond, "QEMU left after rmp")
	harness.NoMountsUnder(t, e.cri.StateDir())
	harness.NoSocketsUnder(t, e.cri.StateDir())
}

// TestCRIOOMKilled gives a container a 32 MiB limit and lets it allocate
// more: the guest's cgroup OOM-kills it and CRI reports OOMKilled.
func TestCRIOOMKilled(t *testing.T) {
	e := newCRIEnv(t, "")
	pod, podCfg := e.runPod("oom", allowAllPod(t))
	e.pull()
	id := e.startContainer(pod, podCfg, "hog", map[string]any{
		"linux": map[string]any{"resources": map[string]any{"memory_limit_in_bytes": 32 << 20}},
	}, "sh", "-c", "x=a; while true; do x=$x$x$x$x; done")
	var inspect struct {
		Status struct {
			State  string `json:"state"`
			Reason string `json:"reason"`
		} `json:"status"`
	}
	require.Eventually(t, func() bool {
		out, err := e.cri.Crictl(e.ctx, "inspect", id)
		if err != nil || json.Unmarshal([]byte(out), &inspect) != nil {
			return false
		}
		return inspect.Status.State == "CONTAINER_EXITED"
	}, 2*time.Minute, time.Second, "the container never exited")
	require.Equal(t, "OOMKilled", inspect.Status.Reason)
}

// TestCRIDefaultPolicyDeniesExec runs a pod without init-data: the guest
// enforces the built-in default policy, and crictl exec shows its message.
func TestCRIDefaultPolicyDeniesExec(t *testing.T) {
	e := newCRIEnv(t, "")
	pod, podCfg := e.runPod("locked", nil)
	e.pull()
	id := e.startContainer(pod, podCfg, "app", nil, "sleep", "1000")
	_, err := e.cri.Crictl(e.ctx, "exec", id, "cat", "/etc/hostname")
	require.Error(t, err)
	t.Logf("crictl exec under the default policy: %v", err)
	require.Contains(t, err.Error(), "ExecProcessRequest is blocked by agent policy")
}

// mustAddr parses an IP address, failing the test if it does not parse.
func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	require.NoError(t, err, "pod IP %q", s)
	return a
}
