package cloudhypervisor

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/vmm"
)

// schemaPath is the Cloud Hypervisor OpenAPI document Coffer validates its
// requests against (shared test data, see its README).
const schemaPath = "../../../shared/testdata/cloud-hypervisor/cloud-hypervisor.yaml"

// testConfig returns a valid Config in a fresh short state directory with
// empty kernel and initrd files, 1 vCPU, 128 MiB and a hybrid vsock agent.
func testConfig(t *testing.T) *Config {
	t.Helper()
	dir, err := os.MkdirTemp("", "ccclh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, f := range []string{"vmlinuz", "initrd.img", "tdvf.fd", "snp.igvm"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &Config{Config: vmm.Config{
		Name:      "test-" + filepath.Base(dir),
		StateDir:  dir,
		Binary:    "/bin/true",
		VCPUs:     1,
		MemoryMiB: 128,
		Kernel:    filepath.Join(dir, "vmlinuz"),
		Initrd:    filepath.Join(dir, "initrd.img"),
		Cmdline:   "console=ttyS0 cc.net=10.0.2.15/24,10.0.2.2",
		Accel:     vmm.AccelKVM,
		Agent:     vmm.Agent{Kind: vmm.AgentHybridVsock, GuestCID: 3, SocketPath: filepath.Join(dir, "vsock.sock")},
	}}
}

// fakeDevice returns a file that stands in for /dev/kvm in validate.
func fakeDevice(t *testing.T) []string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{p}
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// teeConfigs returns the configurations the schema and golden tests cover,
// by name: a plain VM, TDX, SNP with host data, a tap network (by name)
// with shared memory, and a pod network tap passed by descriptor.
func teeConfigs(t *testing.T) map[string]*Config {
	none := testConfig(t)
	tdx := testConfig(t)
	tdx.TEE = vmm.TEE{Kind: vmm.TEETDX}
	tdx.Firmware = filepath.Join(tdx.StateDir, "tdvf.fd")
	snp := testConfig(t)
	snp.TEE = vmm.TEE{Kind: vmm.TEESNP, SNP: &vmm.SNPConfig{HostData: make([]byte, 32)}}
	for i := range snp.TEE.SNP.HostData {
		snp.TEE.SNP.HostData[i] = byte(i)
	}
	snp.IGVM = filepath.Join(snp.StateDir, "snp.igvm")
	tap := testConfig(t)
	tap.Network = vmm.Network{Mode: vmm.NetworkTap, Tap: &vmm.Tap{Name: "cctap0", MAC: "52:54:00:12:34:56", MTU: 1500}}
	tap.SharedMemory = true
	tap.VCPUs = 2
	// A pod network tap passed by descriptor: VMConfig and TapNetConfig
	// never read the file, so a pipe stands in for the tap here.
	tapfd := testConfig(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	tapfd.Network = vmm.Network{Mode: vmm.NetworkTap, Tap: &vmm.Tap{Name: "tap0_cc", File: r, MAC: "0a:58:0a:63:00:02", MTU: 1450}}
	return map[string]*Config{"none": none, "tdx": tdx, "snp": snp, "tap": tap, "tapfd": tapfd}
}
