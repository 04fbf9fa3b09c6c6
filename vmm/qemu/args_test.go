package qemu

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/vmm"
	"github.com/containerd/errdefs"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current Args output")

// goldenBase is a plain TCG VM with fixed paths; Args does not touch them.
func goldenBase() *vmm.Config {
	return &vmm.Config{
		Name:      "pod-0123abcd",
		StateDir:  "/run/cc/0123abcd",
		VCPUs:     2,
		MemoryMiB: 256,
		Kernel:    "/usr/share/coffer/vmlinuz",
		Initrd:    "/usr/share/coffer/initrd.img",
		Cmdline:   "console=ttyS0 loglevel=6 panic=-1",
		Accel:     vmm.AccelTCG,
	}
}

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func goldenConfigs() map[string]*vmm.Config {
	none := goldenBase()
	none.Network = vmm.Network{Mode: vmm.NetworkUser, Restrict: true, Forwards: []vmm.Forward{
		{GuestIP: "10.0.2.100", GuestPort: 5000, Command: []string{"nc", "127.0.0.1", "5000"}},
		{GuestIP: "10.0.2.101", GuestPort: 443, Command: []string{"/usr/bin/coffer-fwd", "--to", "a,b", "it's here"}},
	}}
	none.Agent = vmm.Agent{Kind: vmm.AgentVirtioSerial, SocketPath: "/run/cc/0123abcd/agent.sock"}

	sim := goldenBase()
	sim.Agent = vmm.Agent{Kind: vmm.AgentVirtioSerial, SocketPath: "/run/cc/0123abcd/agent.sock"}
	sim.TEE = vmm.TEE{Kind: vmm.TEESim, Sim: &vmm.SimConfig{ChainDir: "/etc/coffer/sim", HostData: seq(32)}}
	// What New passes to Args: the caller's entries, then PrepareSim's.
	sim.FWCfg = append([]vmm.FWCfgEntry{{Name: "opt/cc/policy", String: "allow=a,b"}}, sim.SimFWCfg([48]byte(seq(48)))...)

	snp := goldenBase()
	snp.Accel = vmm.AccelKVM
	snp.Firmware = "/usr/share/ovmf/AMDSEV.fd"
	snp.Agent = vmm.Agent{Kind: vmm.AgentVirtioSerial, SocketPath: "/run/cc/0123abcd/agent.sock"}
	snp.TEE = vmm.TEE{Kind: vmm.TEESNP, SNP: &vmm.SNPConfig{HostData: seq(32), KernelHashes: true}}

	tdx := goldenBase()
	tdx.Accel = vmm.AccelKVM
	tdx.Firmware = "/usr/share/ovmf/OVMF.inteltdx.fd"
	tdx.Agent = vmm.Agent{Kind: vmm.AgentVirtioSerial, SocketPath: "/run/cc/0123abcd/agent.sock"}
	tdx.TEE = vmm.TEE{Kind: vmm.TEETDX, TDX: &vmm.TDXConfig{
		MRConfigID:            seq(48),
		QuoteGenerationSocket: &vmm.VsockAddr{CID: 2, Port: 4050},
	}}

	vsock := goldenBase()
	vsock.Accel = vmm.AccelKVM
	vsock.Agent = vmm.Agent{Kind: vmm.AgentVsock, GuestCID: 3}

	tap := goldenBase()
	tap.Agent = vmm.Agent{Kind: vmm.AgentVirtioSerial, SocketPath: "/run/cc/0123abcd/agent.sock"}
	// Args only checks that File is set; os.Stdin stands in for the tap.
	tap.Network = vmm.Network{Mode: vmm.NetworkTap, Tap: &vmm.Tap{
		Name: "tap0_cc", File: os.Stdin, MAC: "0a:58:0a:58:00:05", MTU: 1450,
	}}

	return map[string]*vmm.Config{"none": none, "sim": sim, "snp": snp, "tdx": tdx, "vsock": vsock, "tap": tap}
}

func TestArgsGolden(t *testing.T) {
	for name, cfg := range goldenConfigs() {
		t.Run(name, func(t *testing.T) {
			args, err := Args(cfg)
			if err != nil {
				t.Fatalf("Args() = %v", err)
			}
			got := []byte(strings.Join(args, "\n") + "\n")
			path := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden file (run go test -update to create it): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Args() differs from %s (run go test -update after checking the change):\ngot:\n%s\nwant:\n%s", path, got, want)
			}
		})
	}
}

// TestArgsEscaping pins the escaping rules the golden files rely on.
func TestArgsEscaping(t *testing.T) {
	cfg := goldenBase()
	cfg.StateDir = "/run/cc/a,b"
	cfg.Network = vmm.Network{Mode: vmm.NetworkUser, Forwards: []vmm.Forward{
		{GuestIP: "10.0.2.100", GuestPort: 5000, Command: []string{"sh", "-c", "echo a,b; cat", "", "x'y"}},
	}}
	args, err := Args(cfg)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(args, "\n")
	for _, want := range []string{
		"-qmp\nunix:/run/cc/a,,b/qmp.sock,server=on,wait=off",
		"-chardev\nfile,id=console,path=/run/cc/a,,b/console.log",
		"-pidfile\n/run/cc/a,b/qemu.pid",
		`-netdev` + "\n" + `user,id=net0,restrict=off,guestfwd=tcp:10.0.2.100:5000-cmd:sh -c 'echo a,,b; cat' '' 'x'\''y'`,
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("Args() =\n%s\nwant it to contain\n%s", joined, want)
		}
	}
}

func TestArgsAutoAccel(t *testing.T) {
	cfg := goldenBase()
	cfg.Accel = vmm.AccelAuto
	args, err := Args(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := string(vmm.ResolveAccel(vmm.AccelAuto))
	if i := indexOf(args, "-accel"); i < 0 || args[i+1] != want {
		t.Errorf("Args() = %q, want -accel %s", args, want)
	}
}

func TestArgsErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *vmm.Config)
		want   string
	}{
		{"unknown accel", func(c *vmm.Config) { c.Accel = "hvf" }, `accel "hvf" is unknown`},
		{"unknown tee", func(c *vmm.Config) { c.TEE.Kind = "sgx" }, `tee kind "sgx" is unknown`},
		{"bad host data", func(c *vmm.Config) {
			c.TEE = vmm.TEE{Kind: vmm.TEESNP, SNP: &vmm.SNPConfig{HostData: seq(3)}}
		}, "SNP host data is 3 bytes, want 32"},
		{"bad mrconfigid", func(c *vmm.Config) {
			c.TEE = vmm.TEE{Kind: vmm.TEETDX, TDX: &vmm.TDXConfig{MRConfigID: seq(3)}}
		}, "TDX MRConfigID is 3 bytes, want 48"},
		{"unknown agent", func(c *vmm.Config) { c.Agent.Kind = "tcp" }, `agent kind "tcp" is unknown`},
		{"unknown network", func(c *vmm.Config) { c.Network.Mode = "bridge" }, `network mode "bridge" is unknown`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := goldenBase()
			tt.mutate(cfg)
			_, err := Args(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("Args() = %v, want an invalid-argument error containing %q", err, tt.want)
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"nc":            "nc",
		"127.0.0.1:80":  "127.0.0.1:80",
		"a b":           "'a b'",
		"":              "''",
		"it's":          `'it'\''s'`,
		"$HOME":         "'$HOME'",
		"#comment":      "'#comment'",
		"--to=a,b":      "--to=a,b",
		"tab\there":     "'tab\there'",
		"back\\slash":   `'back\slash'`,
		"double\"quote": `'double"quote'`,
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func indexOf(args []string, s string) int {
	for i, a := range args {
		if a == s {
			return i
		}
	}
	return -1
}
