package vmm

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/attestation/sim"
)

func TestPrepareSim(t *testing.T) {
	c := validConfig(t)
	c.TEE.Sim.HostData = nil
	entries, err := c.PrepareSim()
	if err != nil {
		t.Fatal(err)
	}
	m, err := sim.MeasureFiles(c.Kernel, c.Initrd, c.Cmdline)
	if err != nil {
		t.Fatal(err)
	}
	want := []FWCfgEntry{
		{Name: sim.FWCfgIdentity, File: c.SimIdentityPath()},
		{Name: sim.FWCfgMeasurement, String: hex.EncodeToString(m[:])},
		{Name: sim.FWCfgHostData, String: strings.Repeat("00", 32)},
	}
	if len(entries) != len(want) {
		t.Fatalf("PrepareSim() = %v, want %v", entries, want)
	}
	for i := range want {
		if entries[i] != want[i] {
			t.Errorf("PrepareSim()[%d] = %+v, want %+v", i, entries[i], want[i])
		}
	}
	if _, err := sim.LoadReporter(c.TEE.Sim.ChainDir); err != nil {
		t.Fatal(err)
	}

	// A different cmdline is a different measurement.
	c.Cmdline += " quiet"
	other, err := c.PrepareSim()
	if err != nil {
		t.Fatal(err)
	}
	if other[1].String == entries[1].String {
		t.Error("the measurement ignores the cmdline")
	}

	c.TEE = TEE{Kind: TEENone}
	if _, err := c.PrepareSim(); err == nil || !strings.Contains(err.Error(), `TEE.Kind is "none"`) {
		t.Errorf("PrepareSim() on a plain VM = %v, want an error naming the kind", err)
	}
}
