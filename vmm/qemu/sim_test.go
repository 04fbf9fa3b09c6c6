package qemu

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/cofferhq/coffer/vmm"
)

// simConfig returns testConfig with TEE kind sim over a fresh sim chain.
func simConfig(t *testing.T) (*vmm.Config, *sim.Signer) {
	t.Helper()
	s, err := sim.Generate(sim.GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	chain := filepath.Join(t.TempDir(), "chain")
	if err := s.WriteDir(chain); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.TEE = vmm.TEE{Kind: vmm.TEESim, Sim: &vmm.SimConfig{ChainDir: chain, HostData: bytes.Repeat([]byte{0xcd}, 32)}}
	return cfg, s
}

// TestNewSim checks that New hands the guest the sim identity, the
// measurement of exactly the booted files and HOST_DATA over fw_cfg, and
// that QEMU starts with those items.
func TestNewSim(t *testing.T) {
	cfg, s := simConfig(t)
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want, err := sim.MeasureFiles(cfg.Kernel, cfg.Initrd, cfg.Cmdline)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(q.args, "\n")
	for _, w := range []string{
		"-fw_cfg\nname=opt/cc/test,string=a,,b\n-fw_cfg\nname=" + sim.FWCfgIdentity + ",file=" + cfg.SimIdentityPath() + "\n",
		"-fw_cfg\nname=" + sim.FWCfgMeasurement + ",string=" + hex.EncodeToString(want[:]) + "\n",
		"-fw_cfg\nname=" + sim.FWCfgHostData + ",string=" + strings.Repeat("cd", 32) + "\n",
	} {
		if !strings.Contains(joined+"\n", w) {
			t.Errorf("Args =\n%s\nwant it to contain\n%s", joined, w)
		}
	}
	if len(cfg.FWCfg) != 1 {
		t.Errorf("New changed the caller's FWCfg: %v", cfg.FWCfg)
	}
	st, err := os.Stat(cfg.SimIdentityPath())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", cfg.SimIdentityPath(), st.Mode().Perm())
	}
	b, err := os.ReadFile(cfg.SimIdentityPath())
	if err != nil {
		t.Fatal(err)
	}
	r, err := sim.ParseReporterPEM(b)
	if err != nil {
		t.Fatalf("identity file does not parse: %v", err)
	}
	if !bytes.Equal(r.ChipID, s.ChipID) {
		t.Errorf("identity chip ID %x, want the chain's %x", r.ChipID, s.ChipID)
	}
	if bytes.Contains(b, []byte("RSA")) || strings.Count(string(b), "PRIVATE KEY-----") != 2 {
		t.Errorf("identity file should hold exactly one (VCEK) private key:\n%s", b)
	}

	requireQEMU(t)
	if err := q.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatalf("Start() with sim fw_cfg items = %v", err)
	}
	if err := q.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatalf("Stop() = %v", err)
	}
}

func TestNewSimErrors(t *testing.T) {
	cfg, _ := simConfig(t)
	cfg.TEE.Sim.ChainDir = filepath.Join(cfg.StateDir, "nochain")
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "TEE.Sim.ChainDir "+cfg.TEE.Sim.ChainDir+": no such directory") {
		t.Errorf("New() with a missing chain dir = %v", err)
	}
	cfg, _ = simConfig(t)
	cfg.TEE.Sim.HostData = []byte{1}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "TEE.Sim.HostData is 1 bytes, want exactly 32") {
		t.Errorf("New() with 1-byte host data = %v", err)
	}
}
