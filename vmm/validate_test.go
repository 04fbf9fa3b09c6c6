package vmm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/containerd/errdefs"
)

// simSigner is one sim chain for all tests: generating RSA keys is slow.
var simSigner = sync.OnceValues(func() (*sim.Signer, error) { return sim.Generate(sim.GenerateOptions{}) })

// writeSimChain writes the shared sim chain to dir and returns dir.
func writeSimChain(t *testing.T, dir string) string {
	t.Helper()
	s, err := simSigner()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// validConfig returns a Config that passes Validate on this host, with real
// (empty) kernel and initrd files in a temporary state directory.
func validConfig(t *testing.T) *Config {
	t.Helper()
	dir, err := os.MkdirTemp("", "vmmv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, f := range []string{"vmlinuz", "initrd.img", "ovmf.fd", "blob"} {
		writeFile(t, filepath.Join(dir, f), "x")
	}
	return &Config{
		Name:      "pod1",
		StateDir:  dir,
		VCPUs:     1,
		MemoryMiB: 128,
		Kernel:    filepath.Join(dir, "vmlinuz"),
		Initrd:    filepath.Join(dir, "initrd.img"),
		Cmdline:   "console=ttyS0",
		Accel:     AccelTCG,
		Network: Network{Mode: NetworkUser, Restrict: true, Forwards: []Forward{
			{GuestIP: "10.0.2.100", GuestPort: 5000, Command: []string{"nc", "127.0.0.1", "5000"}},
		}},
		Agent: Agent{Kind: AgentVirtioSerial, SocketPath: filepath.Join(dir, "agent.sock")},
		TEE:   TEE{Kind: TEESim, Sim: &SimConfig{ChainDir: writeSimChain(t, filepath.Join(dir, "chain")), HostData: make([]byte, 32)}},
		FWCfg: []FWCfgEntry{{Name: "opt/cc/a", String: "x"}, {Name: "opt/cc/b", File: filepath.Join(dir, "blob")}},
	}
}

func TestValidateOK(t *testing.T) {
	if err := validConfig(t).Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
}

func TestValidateErrors(t *testing.T) {
	long := "/" + strings.Repeat("d", 100)
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   []string // substrings of the error
		class  error
	}{
		{"missing kernel", func(c *Config) { c.Kernel = "/x/vmlinuz" },
			[]string{"kernel /x/vmlinuz: no such file: run `make guest` or set kernel_path in the shim config"}, errdefs.ErrNotFound},
		{"missing initrd", func(c *Config) { c.Initrd = "/x/initrd.img" },
			[]string{"initrd /x/initrd.img: no such file", "`make guest`", "initrd_path"}, errdefs.ErrNotFound},
		{"empty kernel", func(c *Config) { c.Kernel = "" },
			[]string{"kernel path is empty", "`make guest`"}, errdefs.ErrInvalidArgument},
		{"relative kernel", func(c *Config) { c.Kernel = "build/vmlinuz" },
			[]string{"kernel build/vmlinuz is a relative path", "`make guest`"}, errdefs.ErrInvalidArgument},
		{"kernel is a directory", func(c *Config) { c.Kernel = c.StateDir },
			[]string{"is not a regular file"}, errdefs.ErrInvalidArgument},
		{"missing firmware", func(c *Config) { c.Firmware = "/x/OVMF.fd" },
			[]string{"firmware /x/OVMF.fd: no such file", "firmware_path"}, errdefs.ErrNotFound},
		{"empty name", func(c *Config) { c.Name = "" }, []string{"Name is empty"}, errdefs.ErrInvalidArgument},
		{"empty state dir", func(c *Config) { c.StateDir = "" }, []string{"StateDir is empty"}, errdefs.ErrInvalidArgument},
		{"relative state dir", func(c *Config) { c.StateDir = "run/cc" }, []string{"StateDir run/cc is relative"}, errdefs.ErrInvalidArgument},
		{"missing state dir", func(c *Config) { c.StateDir = "/nonexistent/cc" }, []string{"StateDir /nonexistent/cc:", "create it"}, errdefs.ErrNotFound},
		{"state dir too long for qmp socket", func(c *Config) { c.StateDir = long },
			[]string{"QMP socket path " + long + "/qmp.sock is 110 bytes, longer than the 107-byte limit", "shorter StateDir"}, errdefs.ErrInvalidArgument},
		{"missing binary", func(c *Config) { c.Binary = "/nonexistent/qemu" }, []string{"qemu binary /nonexistent/qemu", "install qemu-system-x86"}, errdefs.ErrNotFound},
		{"zero vcpus", func(c *Config) { c.VCPUs = 0 }, []string{"VCPUs is 0, want 1 to 288"}, errdefs.ErrInvalidArgument},
		{"too little memory", func(c *Config) { c.MemoryMiB = 32 }, []string{"MemoryMiB is 32, want at least 64"}, errdefs.ErrInvalidArgument},
		{"unknown accel", func(c *Config) { c.Accel = "hvf" }, []string{`Accel "hvf" is unknown`}, errdefs.ErrInvalidArgument},
		{"snp without firmware", func(c *Config) { c.Accel = AccelTCG; c.TEE = TEE{Kind: TEESNP} },
			[]string{"tee snp needs Firmware (the AmdSevX64 OVMF build", "set firmware_path"}, errdefs.ErrInvalidArgument},
		{"snp with tcg", func(c *Config) { c.Firmware = c.Kernel; c.TEE = TEE{Kind: TEESNP} },
			[]string{"tee snp needs accel kvm, got tcg"}, errdefs.ErrInvalidArgument},
		{"tdx without firmware", func(c *Config) { c.TEE = TEE{Kind: TEETDX} },
			[]string{"tee tdx needs Firmware (TDVF", "tee tdx needs accel kvm, got tcg"}, errdefs.ErrInvalidArgument},
		{"snp host data not 32 bytes", func(c *Config) { c.TEE = TEE{Kind: TEESNP, SNP: &SNPConfig{HostData: make([]byte, 31)}} },
			[]string{"TEE.SNP.HostData is 31 bytes, want exactly 32"}, errdefs.ErrInvalidArgument},
		{"snp policy without bit 17", func(c *Config) { c.TEE = TEE{Kind: TEESNP, SNP: &SNPConfig{Policy: 0x10000}} },
			[]string{"TEE.SNP.Policy 0x10000 has bit 17 clear"}, errdefs.ErrInvalidArgument},
		{"tdx mrconfigid not 48 bytes", func(c *Config) { c.TEE = TEE{Kind: TEETDX, TDX: &TDXConfig{MRConfigID: make([]byte, 32)}} },
			[]string{"TEE.TDX.MRConfigID is 32 bytes, want exactly 48"}, errdefs.ErrInvalidArgument},
		{"snp settings with tdx kind", func(c *Config) { c.TEE = TEE{Kind: TEETDX, SNP: &SNPConfig{}} },
			[]string{`TEE.SNP is set but TEE.Kind is "tdx"`}, errdefs.ErrInvalidArgument},
		{"sim without chain dir", func(c *Config) { c.TEE.Sim = nil },
			[]string{"tee sim needs TEE.Sim.ChainDir", "sim_chain_dir"}, errdefs.ErrInvalidArgument},
		{"sim chain dir missing", func(c *Config) { c.TEE.Sim.ChainDir = "/nonexistent/chain" },
			[]string{"TEE.Sim.ChainDir /nonexistent/chain: no such directory", "sim_chain_dir"}, errdefs.ErrNotFound},
		{"sim chain dir relative", func(c *Config) { c.TEE.Sim.ChainDir = "chain" },
			[]string{"TEE.Sim.ChainDir chain is relative"}, errdefs.ErrInvalidArgument},
		{"sim chain dir without vcek", func(c *Config) { c.TEE.Sim.ChainDir = c.StateDir },
			[]string{"TEE.Sim.ChainDir ", "vcek.pem"}, errdefs.ErrInvalidArgument},
		{"sim host data not 32 bytes", func(c *Config) { c.TEE.Sim.HostData = make([]byte, 48) },
			[]string{"TEE.Sim.HostData is 48 bytes, want exactly 32"}, errdefs.ErrInvalidArgument},
		{"sim settings with snp kind", func(c *Config) { c.TEE.Kind = TEESNP; c.Firmware = c.Kernel },
			[]string{`TEE.Sim is set but TEE.Kind is "snp"`}, errdefs.ErrInvalidArgument},
		{"sim fw_cfg name taken", func(c *Config) { c.FWCfg = []FWCfgEntry{{Name: sim.FWCfgHostData, String: "00"}} },
			[]string{`FWCfg[0].Name "opt/cc/sim-host-data" is reserved for the sim TEE`}, errdefs.ErrInvalidArgument},
		{"unknown tee", func(c *Config) { c.TEE = TEE{Kind: "sgx"} }, []string{`TEE.Kind "sgx" is unknown`}, errdefs.ErrInvalidArgument},
		{"fw_cfg outside opt", func(c *Config) { c.FWCfg = []FWCfgEntry{{Name: "etc/foo", String: "x"}} },
			[]string{`FWCfg[0].Name "etc/foo" is not under opt/`}, errdefs.ErrInvalidArgument},
		{"fw_cfg name too long", func(c *Config) { c.FWCfg = []FWCfgEntry{{Name: "opt/" + strings.Repeat("n", 60), String: "x"}} },
			[]string{"is 64 bytes, want at most 55"}, errdefs.ErrInvalidArgument},
		{"fw_cfg both file and string", func(c *Config) { c.FWCfg = []FWCfgEntry{{Name: "opt/cc/a", String: "x", File: c.Kernel}} },
			[]string{"sets both File and String"}, errdefs.ErrInvalidArgument},
		{"fw_cfg duplicate", func(c *Config) { c.FWCfg = append(c.FWCfg, FWCfgEntry{Name: "opt/cc/a", String: "y"}) },
			[]string{`FWCfg[2].Name "opt/cc/a" appears twice`}, errdefs.ErrInvalidArgument},
		{"fw_cfg missing file", func(c *Config) { c.FWCfg = []FWCfgEntry{{Name: "opt/cc/a", File: "/x/blob"}} },
			[]string{"FWCfg[0] (opt/cc/a) file /x/blob: no such file"}, errdefs.ErrNotFound},
		{"forwards without user network", func(c *Config) { c.Network.Mode = NetworkNone; c.Network.Restrict = false },
			[]string{"Network.Forwards has 1 entries but network mode is none"}, errdefs.ErrInvalidArgument},
		{"forward outside slirp net", func(c *Config) { c.Network.Forwards[0].GuestIP = "192.168.1.5" },
			[]string{"GuestIP 192.168.1.5 is outside QEMU's user network 10.0.2.0/24"}, errdefs.ErrInvalidArgument},
		{"forward on host address", func(c *Config) { c.Network.Forwards[0].GuestIP = "10.0.2.2" },
			[]string{"GuestIP 10.0.2.2 is reserved"}, errdefs.ErrInvalidArgument},
		{"forward bad port", func(c *Config) { c.Network.Forwards[0].GuestPort = 0 },
			[]string{"GuestPort is 0, want 1 to 65535"}, errdefs.ErrInvalidArgument},
		{"forward empty command", func(c *Config) { c.Network.Forwards[0].Command = nil },
			[]string{"Network.Forwards[0].Command is empty"}, errdefs.ErrInvalidArgument},
		{"unknown network mode", func(c *Config) { c.Network.Mode = "bridge" }, []string{`Network.Mode "bridge" is unknown`}, errdefs.ErrInvalidArgument},
		{"agent socket too long", func(c *Config) { c.Agent.SocketPath = long + "/agent.sock" },
			[]string{"Agent.SocketPath path " + long + "/agent.sock is 112 bytes, longer than the 107-byte limit"}, errdefs.ErrInvalidArgument},
		{"agent socket dir missing", func(c *Config) { c.Agent.SocketPath = "/nonexistent/agent.sock" },
			[]string{"directory /nonexistent does not exist"}, errdefs.ErrNotFound},
		{"agent virtio-serial without socket", func(c *Config) { c.Agent.SocketPath = "" },
			[]string{"Agent.SocketPath is empty"}, errdefs.ErrInvalidArgument},
		{"agent vsock reserved cid", func(c *Config) { c.Agent = Agent{Kind: AgentVsock, GuestCID: 2} },
			[]string{"Agent.GuestCID is 2, want 3 to 4294967294"}, errdefs.ErrInvalidArgument},
		{"unknown agent", func(c *Config) { c.Agent = Agent{Kind: "tcp"} }, []string{`Agent.Kind "tcp" is unknown`}, errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig(t)
			tt.mutate(c)
			err := c.Validate()
			if err == nil {
				t.Fatalf("Validate() = nil, want an error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q\nwant it to contain %q", err, w)
				}
			}
			if !errors.Is(err, tt.class) {
				t.Errorf("Validate() = %q, want errors.Is(err, %v)", err, tt.class)
			}
		})
	}
}

// TestValidateVsockNeedsDevice checks that the vsock agent is refused exactly
// when this host lacks /dev/vhost-vsock.
func TestValidateVsockNeedsDevice(t *testing.T) {
	c := validConfig(t)
	c.Agent = Agent{Kind: AgentVsock, GuestCID: 3}
	err := c.Validate()
	if _, statErr := os.Stat(vhostVsockDevice); statErr != nil {
		if err == nil || !strings.Contains(err.Error(), "agent vsock needs /dev/vhost-vsock") || !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("Validate() = %v, want an unavailable error naming /dev/vhost-vsock", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Validate() = %v, want nil on a host with /dev/vhost-vsock", err)
	}
}

// TestValidateReportsAllProblems checks that one call lists every problem.
func TestValidateReportsAllProblems(t *testing.T) {
	c := validConfig(t)
	c.VCPUs = 0
	c.MemoryMiB = 1
	c.Kernel = "/x/vmlinuz"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil, want errors")
	}
	for _, w := range []string{"VCPUs is 0", "MemoryMiB is 1", "kernel /x/vmlinuz: no such file"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Validate() = %q, want it to contain %q", err, w)
		}
	}
}

func TestSNPConfigWithDefaults(t *testing.T) {
	var nilCfg *SNPConfig
	got := nilCfg.WithDefaults()
	if got.Policy != 0x30000 || got.CBitPos != 51 || got.ReducedPhysBits != 1 || got.HostData != nil || got.KernelHashes {
		t.Errorf("nil.WithDefaults() = %+v, want policy 0x30000, cbitpos 51, reduced-phys-bits 1", got)
	}
	set := (&SNPConfig{Policy: 0x70000, CBitPos: 47, ReducedPhysBits: 5, KernelHashes: true}).WithDefaults()
	if set.Policy != 0x70000 || set.CBitPos != 47 || set.ReducedPhysBits != 5 || !set.KernelHashes {
		t.Errorf("WithDefaults() changed set fields: %+v", set)
	}
}
