package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cc.toml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, ""))
	require.NoError(t, err)
	require.Equal(t, "qemu", cfg.Hypervisor.VMM)
	require.Equal(t, "qemu-system-x86_64", cfg.Hypervisor.Binary)
	require.Equal(t, "auto", cfg.Hypervisor.Accel)
	require.Equal(t, 1, cfg.Hypervisor.VCPUs)
	require.Equal(t, 512, cfg.Hypervisor.MemoryMiB)
	require.Equal(t, "none", cfg.Hypervisor.TEE)
	require.Equal(t, filepath.Join(cfg.Hypervisor.GuestDir, "vmlinuz"), cfg.Hypervisor.KernelPath)
	require.Equal(t, filepath.Join(cfg.Hypervisor.GuestDir, "initrd.img"), cfg.Hypervisor.InitrdPath)
	require.Equal(t, "auto", cfg.Agent.Transport)
	require.Equal(t, uint32(1024), cfg.Agent.VsockPort)
	require.Equal(t, 60*time.Second, time.Duration(cfg.Agent.BootTimeout))
	require.Equal(t, 10*time.Minute, time.Duration(cfg.Agent.PullTimeout))
	require.Equal(t, "user", cfg.Network.Mode)
	require.False(t, cfg.Network.Unrestricted)
}

func TestLoadConfigValues(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, `
[hypervisor]
memory_mib = 192
vcpus = 2
accel = "tcg"
guest_dir = "/g"
[agent]
transport = "virtio-serial"
boot_timeout = "5s"
[network]
forwards = ["127.0.0.1:5000"]
[registry]
insecure = ["127.0.0.1:5000"]
`))
	require.NoError(t, err)
	require.Equal(t, 192, cfg.Hypervisor.MemoryMiB)
	require.Equal(t, 2, cfg.Hypervisor.VCPUs)
	require.Equal(t, "tcg", cfg.Hypervisor.Accel)
	require.Equal(t, "/g/vmlinuz", cfg.Hypervisor.KernelPath)
	require.Equal(t, "virtio-serial", cfg.Agent.Transport)
	require.Equal(t, 5*time.Second, time.Duration(cfg.Agent.BootTimeout))
	require.Equal(t, []string{"127.0.0.1:5000"}, cfg.Network.Forwards)
}

func TestLoadConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"unknown key", "[hypervisor]\nmemory = 5\n", []string{"unknown key", "memory"}},
		{"bad accel", "[hypervisor]\naccel = \"hvf\"\n", []string{"hypervisor.accel", `"hvf"`, "tcg"}},
		{"bad vmm", "[hypervisor]\nvmm = \"firecracker\"\n", []string{"hypervisor.vmm", "firecracker"}},
		{"clh with virtio-serial", "[hypervisor]\nvmm = \"cloud-hypervisor\"\n[agent]\ntransport = \"virtio-serial\"\n[network]\nmode = \"none\"\n", []string{"agent.transport", "Cloud Hypervisor", "hybrid-vsock"}},
		{"clh with tcg", "[hypervisor]\nvmm = \"cloud-hypervisor\"\naccel = \"tcg\"\n[network]\nmode = \"none\"\n", []string{"hypervisor.accel", "KVM"}},
		{"clh with user network", "[hypervisor]\nvmm = \"cloud-hypervisor\"\n[network]\nforwards = [\"127.0.0.1:5000\"]\n", []string{"network.mode", "Cloud Hypervisor", "none"}},
		{"clh with sim", "[hypervisor]\nvmm = \"cloud-hypervisor\"\ntee = \"sim\"\n[attestation]\nsim_chain_dir = \"/x\"\n[network]\nmode = \"none\"\n", []string{"sim", "fw_cfg"}},
		{"clh snp without igvm", "[hypervisor]\nvmm = \"cloud-hypervisor\"\ntee = \"snp\"\n[network]\nmode = \"none\"\n", []string{"igvm_path"}},
		{"igvm with qemu", "[hypervisor]\nigvm_path = \"/x.igvm\"\n", []string{"igvm_path", "cloud-hypervisor"}},
		{"hybrid vsock with qemu", "[agent]\ntransport = \"hybrid-vsock\"\n", []string{"hybrid-vsock", "qemu"}},
		{"sim without chain", "[hypervisor]\ntee = \"sim\"\n", []string{"hypervisor.tee", "sim", "attestation.sim_chain_dir", "ccctl attest sim-chain"}},
		{"bad deadline", "[attestation]\ndeadline = \"-5s\"\n", []string{"attestation.deadline", "positive"}},
		{"missing init-data file", "[attestation]\ninit_data = \"/nonexistent/initdata.toml\"\n", []string{"attestation.init_data", "/nonexistent/initdata.toml"}},
		{"bad tee", "[hypervisor]\ntee = \"sgx\"\n", []string{"hypervisor.tee", "sgx"}},
		{"bad transport", "[agent]\ntransport = \"tcp\"\n", []string{"agent.transport", "tcp"}},
		{"bad duration", "[agent]\nboot_timeout = \"soon\"\n", []string{"soon", "duration"}},
		{"bad mode", "[network]\nmode = \"tap\"\n", []string{"network.mode", "tap"}},
		{"unrestricted without a network", "[network]\nmode = \"none\"\nunrestricted = true\n", []string{"network.unrestricted", "network.mode = \"user\""}},
		{"too many forwards", "[network]\nmode = \"none\"\nforwards = [" + strings.Repeat("\"127.0.0.1:5000\", ", 100) + "\"127.0.0.1:5001\"]\n", []string{"network.forwards has 101 entries, at most 100"}},
		{"bad forward", "[network]\nforwards = [\"registry:5000\"]\n", []string{"network.forwards", "registry:5000", "ip:port"}},
		{"bad port", "[network]\nforwards = [\"127.0.0.1:0\"]\n", []string{"network.forwards", "1-65535"}},
		{"syntax", "[hypervisor\n", []string{"line 1"}},
		{"memory too small", "[hypervisor]\nmemory_mib = 144\n", []string{"hypervisor.memory_mib = 144", "at least 160"}},
		{"negative vcpus", "[hypervisor]\nvcpus = -1\n", []string{"hypervisor.vcpus = -1", "1 to"}},
		{"negative boot timeout", "[agent]\nboot_timeout = \"-1s\"\n", []string{"agent.boot_timeout = -1s", "positive"}},
		{"negative pull timeout", "[agent]\npull_timeout = \"-5s\"\n", []string{"agent.pull_timeout = -5s", "positive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, tc.body))
			require.Error(t, err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestLoadConfigExplicitMissingFile(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "nope.toml"))
	require.Error(t, err)
	require.True(t, strings.Contains(err.Error(), "nope.toml"), err.Error())
}

func TestGuestRegistry(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, "[network]\nforwards = [\"127.0.0.1:5000\", \"192.0.2.7:443\"]\n[registry]\ninsecure = [\"127.0.0.1:5000\"]\n"))
	require.NoError(t, err)
	rc, err := guestRegistry(cfg)
	require.NoError(t, err)
	require.Equal(t, map[string]string{
		"127.0.0.1:5000": "10.0.2.100:5000",
		"localhost:5000": "10.0.2.100:5000",
		"192.0.2.7:443":  "10.0.2.101:443",
	}, rc.GetEndpoints())
	require.Equal(t, []string{"127.0.0.1:5000"}, rc.GetInsecure())

	cfg.Registry.CAFiles = []string{"/nonexistent/ca.pem"}
	_, err = guestRegistry(cfg)
	require.ErrorContains(t, err, "registry.ca_files")
}

func TestGuestRegistryAgentForwards(t *testing.T) {
	for _, body := range []string{
		"[network]\nmode = \"none\"\nforwards = [\"127.0.0.1:5000\", \"192.0.2.7:443\"]\n",
		"[hypervisor]\nvmm = \"cloud-hypervisor\"\n[network]\nmode = \"none\"\nforwards = [\"127.0.0.1:5000\", \"192.0.2.7:443\"]\n",
	} {
		cfg, err := LoadConfig(writeConfig(t, body))
		require.NoError(t, err, body)
		require.True(t, agentForwards(cfg))
		rc, err := guestRegistry(cfg)
		require.NoError(t, err)
		require.Equal(t, map[string]string{
			"127.0.0.1:5000": "agent-forward/0",
			"localhost:5000": "agent-forward/0",
			"192.0.2.7:443":  "agent-forward/1",
		}, rc.GetEndpoints())
	}
	cfg, err := LoadConfig(writeConfig(t, "[network]\nforwards = [\"127.0.0.1:5000\"]\n"))
	require.NoError(t, err)
	require.False(t, agentForwards(cfg), "mode user keeps QEMU guestfwd")
}

func TestSandboxStateDirIsShort(t *testing.T) {
	d := sandboxStateDir("k8s.io", strings.Repeat("a", 64))
	// agent.sock must fit in a unix socket path (108 bytes).
	require.Less(t, len(filepath.Join(d, "agent.sock")), 108)
	require.NotEqual(t, d, sandboxStateDir("default", strings.Repeat("a", 64)))
	require.Equal(t, d, sandboxStateDir("k8s.io", strings.Repeat("a", 64)))
}

func TestGuestCIDRange(t *testing.T) {
	for _, d := range []string{"/run/cc/a", "/run/cc/b", "/run/cc/0123456789abcdef"} {
		c := guestCID(d)
		require.GreaterOrEqual(t, c, uint32(3))
		require.Less(t, c, uint32(1<<31))
	}
}

func TestToGRPCKeepsClassAndMessageOnce(t *testing.T) {
	err := fmt.Errorf("create c1: %w; pull it with --snapshotter cc: %w", errHostRootfs, errdefs.ErrFailedPrecondition)
	st, ok := status.FromError(toGRPC(err))
	require.True(t, ok)
	require.Equal(t, codes.FailedPrecondition, st.Code())
	require.Equal(t, err.Error(), st.Message())
	require.Empty(t, st.Details(), "one message, no repeated details")
	require.True(t, errdefs.IsFailedPrecondition(errgrpc.ToNative(toGRPC(err))))
	require.Nil(t, toGRPC(nil))
	st, _ = status.FromError(toGRPC(errors.New("plain")))
	require.Equal(t, codes.Unknown, st.Code())
}

func TestForwardHint(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, "[network]\nforwards = [\"127.0.0.1:5000\"]\n"))
	require.NoError(t, err)
	require.Empty(t, forwardHint("127.0.0.1:5000/app:1", cfg))
	require.Empty(t, forwardHint("localhost:5000/app:1", cfg))
	require.Empty(t, forwardHint("docker.io/library/busybox:1", cfg))
	require.Contains(t, forwardHint("127.0.0.1:6000/app:1", cfg), `add "127.0.0.1:6000" to network.forwards`)
}
