package cloudhypervisor

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/vmm"
	"github.com/containerd/ttrpc"
	"github.com/stretchr/testify/require"
)

// guestDirEnv names the guest build (vmlinuz, initrd.img, manifest.json) the
// integration test boots; the default is the repository's build/guest.
const guestDirEnv = "COFFER_GUEST_DIR"

// TestRealCloudHypervisorBootsAgent boots the Coffer guest under a real
// cloud-hypervisor, reaches cc-agent over hybrid vsock, checks Health and
// vm.info, and stops the VM. It runs only where cloud-hypervisor is on PATH,
// KVM works and the guest is built; no such machine ran it yet.
func TestRealCloudHypervisorBootsAgent(t *testing.T) {
	bin, err := exec.LookPath(DefaultBinary)
	if err != nil {
		t.Skip("cloud-hypervisor is not on PATH: this test boots a real Cloud Hypervisor VM")
	}
	if !anyOpens(hypervisorDevices()) {
		t.Skip("no usable /dev/kvm or /dev/mshv: Cloud Hypervisor cannot run guests on this host")
	}
	guest := os.Getenv(guestDirEnv)
	if guest == "" {
		guest = "../../build/guest"
	}
	kernel, initrd := filepath.Join(guest, "vmlinuz"), filepath.Join(guest, "initrd.img")
	if _, err := os.Stat(initrd); err != nil {
		t.Skipf("no guest build at %s (%v): run `make guest` or set %s", guest, err, guestDirEnv)
	}
	kernel, _ = filepath.Abs(kernel)
	initrd, _ = filepath.Abs(initrd)
	dir, err := os.MkdirTemp("", "ccclh")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })

	cfg := &Config{Config: vmm.Config{
		Name: "itest", StateDir: dir, Binary: bin, VCPUs: 1, MemoryMiB: 512,
		Kernel: kernel, Initrd: initrd, Cmdline: "console=ttyS0 loglevel=6 panic=-1",
		Accel: vmm.AccelKVM,
		Agent: vmm.Agent{Kind: vmm.AgentHybridVsock, GuestCID: 3, SocketPath: filepath.Join(dir, "vsock.sock")},
	}}
	h, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, h.Start(ctx))
	defer h.Stop(context.Background())

	info, err := h.Client().VMInfo(ctx)
	require.NoError(t, err)
	require.Equal(t, VmRunning, info.State)

	d, err := transport.ConnectHybridVsock(ctx, cfg.Agent.SocketPath, transport.DefaultVsockPort)
	require.NoError(t, err, "console: %s", cfg.ConsoleLogPath())
	defer d.Close()
	conn, err := d.Dial(ctx)
	require.NoError(t, err)
	require.NoError(t, agent.WriteChannel(conn, agent.ChannelRPC))
	client := ttrpc.NewClient(conn)
	defer client.Close()
	_, err = agent.NewTTRPCAgentClient(client).Health(ctx, &agent.HealthRequest{})
	require.NoError(t, err)
	require.NoError(t, h.Stop(ctx))
}
