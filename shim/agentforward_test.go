package shim

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/forward"
	"github.com/cofferhq/coffer/vmm"
)

// TestServeForwardsHybridVsock runs the shim side of agent-channel
// forwards for Cloud Hypervisor: the test plays the VMM, connecting to
// "<vsock socket>_<guest CID>" for a guest connection to the host, and the
// guest, writing the forward header; the shim dials the configured
// endpoint.
func TestServeForwardsHybridVsock(t *testing.T) {
	endpoint, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer endpoint.Close()
	go func() {
		c, err := endpoint.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "registry says hi")
	}()

	cfg := &Config{Network: NetworkConfig{Mode: "none", Forwards: []string{endpoint.Addr().String()}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sb := &sandbox{id: "sb", ctx: ctx, cancel: cancel}
	sock := filepath.Join(t.TempDir(), "vsock.sock")
	vc := &vmm.Config{Agent: vmm.Agent{Kind: vmm.AgentHybridVsock, GuestCID: 1234, SocketPath: sock}}
	require.NoError(t, sb.serveForwards(ctx, cfg, transport.KindHybridVsock, vc))

	guest := &forward.Dialer{Open: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock+"_1234")
	}}
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	c, err := guest.DialContext(dctx, "tcp", forward.Address(0))
	require.NoError(t, err)
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, "registry says hi", string(got))
	c.Close()

	_, err = guest.DialContext(dctx, "tcp", forward.Address(1))
	require.ErrorIs(t, err, forward.ErrRefused)
}

func TestForwardListenerNeedsGuestConnections(t *testing.T) {
	_, err := forwardListener(nil, transport.KindVirtioSerial, &vmm.Config{})
	require.EqualError(t, err, "the virtio-serial agent transport does not carry guest-opened connections")
}

// TestVMConfigNetworkNone: with network.mode "none" the VM gets no network
// device, no QEMU forwards and no Restrict (which the VMM refuses
// without a user network).
func TestVMConfigNetworkNone(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, "[hypervisor]\nkernel_cmdline = \"console=ttyS0\"\n[network]\nmode = \"none\"\nforwards = [\"127.0.0.1:5000\"]\n"))
	require.NoError(t, err)
	vc, err := vmConfig(cfg, "sb", t.TempDir(), transport.KindVirtioSerial, nil)
	require.NoError(t, err)
	require.Equal(t, vmm.Network{Mode: vmm.NetworkNone}, vc.Network)

	// Cloud Hypervisor, whose validation refuses Restrict as well.
	cfg, err = LoadConfig(writeConfig(t, "[hypervisor]\nvmm = \"cloud-hypervisor\"\nkernel_cmdline = \"console=ttyS0\"\n[network]\nmode = \"none\"\nforwards = [\"127.0.0.1:5000\"]\n"))
	require.NoError(t, err)
	dir := t.TempDir()
	vc, err = vmConfig(cfg, "sb", dir, transport.Kind(cfg.Agent.Transport), nil)
	require.NoError(t, err)
	require.Equal(t, vmm.Network{Mode: vmm.NetworkNone}, vc.Network)
	require.Equal(t, vmm.AgentHybridVsock, vc.Agent.Kind)
	require.Equal(t, filepath.Join(dir, "vsock.sock"), vc.Agent.SocketPath)

	cfg, err = LoadConfig(writeConfig(t, "[hypervisor]\nkernel_cmdline = \"console=ttyS0\"\n[network]\nforwards = [\"127.0.0.1:5000\"]\n"))
	require.NoError(t, err)
	vc, err = vmConfig(cfg, "sb", t.TempDir(), transport.KindVirtioSerial, nil)
	require.NoError(t, err)
	require.Equal(t, vmm.NetworkUser, vc.Network.Mode)
	require.True(t, vc.Network.Restrict)
	require.Len(t, vc.Network.Forwards, 1)
}
