package cloudhypervisor

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/vmm"
	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func TestValidateAccepts(t *testing.T) {
	for name, cfg := range teeConfigs(t) {
		require.NoError(t, cfg.validate(fakeDevice(t)), name)
	}
}

func TestValidateRefuses(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		class  error
		want   string
	}{
		{"tcg", func(c *Config) { c.Accel = vmm.AccelTCG }, errdefs.ErrInvalidArgument,
			"Accel is tcg, but Cloud Hypervisor has no software CPU emulation"},
		{"user network", func(c *Config) { c.Network = vmm.Network{Mode: vmm.NetworkUser} }, errdefs.ErrInvalidArgument,
			"Network.Mode is user, but Cloud Hypervisor has no user-mode (slirp) network"},
		{"guest forwards", func(c *Config) {
			c.Network = vmm.Network{Mode: vmm.NetworkTap, Tap: &vmm.Tap{Name: "cctap0"},
				Forwards: []vmm.Forward{{GuestIP: "10.0.2.100", GuestPort: 5000, Command: []string{"nc"}}}}
		}, errdefs.ErrInvalidArgument, "guest forwards are a QEMU user-network feature"},
		{"tap without settings", func(c *Config) { c.Network.Mode = vmm.NetworkTap }, errdefs.ErrInvalidArgument,
			"network mode tap needs Network.Tap"},
		{"bad tap", func(c *Config) {
			c.Network = vmm.Network{Mode: vmm.NetworkTap, Tap: &vmm.Tap{Name: "a-name-far-too-long", MAC: "zz", MTU: 20}}
		}, errdefs.ErrInvalidArgument, `Network.Tap.Name "a-name-far-too-long" is not an interface name`},
		{"tap without file or name", func(c *Config) {
			c.Network = vmm.Network{Mode: vmm.NetworkTap, Tap: &vmm.Tap{MAC: "0a:58:0a:58:00:05"}}
		}, errdefs.ErrInvalidArgument, "Network.Tap has neither File nor Name"},
		{"tap netns gone", func(c *Config) {
			c.Network = vmm.Network{Mode: vmm.NetworkTap, Tap: &vmm.Tap{Name: "tap0_cc", NetNS: "/var/run/netns/cni-gone"}}
		}, errdefs.ErrNotFound, "Network.Tap.NetNS /var/run/netns/cni-gone, the network namespace to start cloud-hypervisor in"},
		{"tap without tap mode", func(c *Config) { c.Network.Tap = &vmm.Tap{Name: "cctap0"} }, errdefs.ErrInvalidArgument,
			`Network.Tap "cctap0" is set but network mode is ""`},
		{"virtio-serial agent", func(c *Config) { c.Agent = vmm.Agent{Kind: vmm.AgentVirtioSerial, SocketPath: "/run/cc/x/agent.sock"} },
			errdefs.ErrInvalidArgument, "Cloud Hypervisor has no virtio-serial ports: use kind \"hybrid-vsock\""},
		{"vhost-vsock agent", func(c *Config) { c.Agent = vmm.Agent{Kind: vmm.AgentVsock, GuestCID: 3} },
			errdefs.ErrInvalidArgument, "Cloud Hypervisor has no vhost-vsock device"},
		{"agent cid", func(c *Config) { c.Agent.GuestCID = 2 }, errdefs.ErrInvalidArgument, "Agent.GuestCID is 2, want 3 to 4294967294"},
		{"agent socket dir", func(c *Config) { c.Agent.SocketPath = "/nonexistent/dir/vsock.sock" }, errdefs.ErrNotFound,
			"directory /nonexistent/dir does not exist"},
		{"fw_cfg", func(c *Config) { c.FWCfg = []vmm.FWCfgEntry{{Name: "opt/cc/x", String: "y"}} }, errdefs.ErrInvalidArgument,
			"FWCfg has 1 entries, but Cloud Hypervisor's API has no fw_cfg items"},
		{"sim tee", func(c *Config) { c.TEE.Kind = vmm.TEESim }, errdefs.ErrInvalidArgument,
			"tee sim is delivered through QEMU fw_cfg items"},
		{"tdx without firmware", func(c *Config) { c.TEE.Kind = vmm.TEETDX }, errdefs.ErrInvalidArgument,
			"tee tdx needs Firmware (TDVF or TD-Shim"},
		{"tdx mrconfigid", func(c *Config) {
			c.TEE = vmm.TEE{Kind: vmm.TEETDX, TDX: &vmm.TDXConfig{MRConfigID: make([]byte, 48)}}
			c.Firmware = filepath.Join(c.StateDir, "tdvf.fd")
		}, errdefs.ErrInvalidArgument, "Cloud Hypervisor's API has no MRCONFIGID setting"},
		{"tdx quote socket", func(c *Config) {
			c.TEE = vmm.TEE{Kind: vmm.TEETDX, TDX: &vmm.TDXConfig{QuoteGenerationSocket: &vmm.VsockAddr{CID: 2, Port: 4050}}}
			c.Firmware = filepath.Join(c.StateDir, "tdvf.fd")
		}, errdefs.ErrInvalidArgument, "has no quote generation setting"},
		{"snp without igvm", func(c *Config) { c.TEE.Kind = vmm.TEESNP }, errdefs.ErrInvalidArgument,
			"tee snp needs IGVM"},
		{"snp with firmware", func(c *Config) {
			c.TEE.Kind = vmm.TEESNP
			c.IGVM = filepath.Join(c.StateDir, "snp.igvm")
			c.Firmware = filepath.Join(c.StateDir, "tdvf.fd")
		}, errdefs.ErrInvalidArgument, "Cloud Hypervisor refuses a firmware next to an IGVM image"},
		{"snp policy", func(c *Config) {
			c.TEE = vmm.TEE{Kind: vmm.TEESNP, SNP: &vmm.SNPConfig{Policy: vmm.DefaultSNPPolicy}}
			c.IGVM = filepath.Join(c.StateDir, "snp.igvm")
		}, errdefs.ErrInvalidArgument, "the guest policy is part of the IGVM image"},
		{"snp host data size", func(c *Config) {
			c.TEE = vmm.TEE{Kind: vmm.TEESNP, SNP: &vmm.SNPConfig{HostData: make([]byte, 48)}}
			c.IGVM = filepath.Join(c.StateDir, "snp.igvm")
		}, errdefs.ErrInvalidArgument, "TEE.SNP.HostData is 48 bytes, want exactly 32"},
		{"igvm without snp", func(c *Config) { c.IGVM = filepath.Join(c.StateDir, "snp.igvm") }, errdefs.ErrInvalidArgument,
			"Coffer passes an IGVM image only for tee \"snp\""},
		{"missing igvm", func(c *Config) {
			c.TEE.Kind = vmm.TEESNP
			c.IGVM = filepath.Join(c.StateDir, "missing.igvm")
		}, errdefs.ErrNotFound, "missing.igvm: no such file"},
		{"shared memory with tee", func(c *Config) {
			c.TEE.Kind = vmm.TEETDX
			c.Firmware = filepath.Join(c.StateDir, "tdvf.fd")
			c.SharedMemory = true
		}, errdefs.ErrInvalidArgument, "SharedMemory is set with tee tdx"},
		{"binary", func(c *Config) { c.Binary = "no-such-cloud-hypervisor" }, errdefs.ErrNotFound,
			"cloud-hypervisor binary no-such-cloud-hypervisor"},
		{"vcpus", func(c *Config) { c.VCPUs = 256 }, errdefs.ErrInvalidArgument, "VCPUs is 256, want 1 to 255"},
		{"memory", func(c *Config) { c.MemoryMiB = 32 }, errdefs.ErrInvalidArgument, "MemoryMiB is 32"},
		{"kernel", func(c *Config) { c.Kernel = "" }, errdefs.ErrInvalidArgument, "kernel path is empty"},
		{"long state dir", func(c *Config) { c.StateDir = "/" + strings.Repeat("d", 100) }, errdefs.ErrInvalidArgument,
			"API socket path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			tt.change(cfg)
			err := cfg.validate(fakeDevice(t))
			require.ErrorIs(t, err, tt.class)
			require.ErrorContains(t, err, tt.want)
			require.ErrorContains(t, err, "validate cloud-hypervisor vm config "+`"`+cfg.Name+`"`)
		})
	}
}

func TestValidateNeedsHypervisorDevice(t *testing.T) {
	cfg := testConfig(t)
	missing := filepath.Join(t.TempDir(), "kvm")
	err := cfg.validate([]string{missing})
	require.ErrorIs(t, err, errdefs.ErrUnavailable)
	require.ErrorContains(t, err, "Cloud Hypervisor needs "+missing+": none of them opens read-write here")
}
