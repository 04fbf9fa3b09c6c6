package vmm

import (
	"encoding/hex"
	"fmt"

	"github.com/cofferhq/coffer/attestation/sim"
)

// SimHostDataSize is the size of the sim TEE's HOST_DATA, bytes (as SNP's).
const SimHostDataSize = 32

// SimConfig holds the parameters of the simulated TEE (attestation/sim).
type SimConfig struct {
	// ChainDir is the absolute path of a sim chain directory written by
	// attestation/sim Signer.WriteDir (`ccctl attest sim-chain`): the VMM
	// reads its vcek.pem and vcek.key and gives them to the guest, which
	// signs SNP-format reports with them. The guest never sees the ARK or
	// ASK key. Required.
	ChainDir string
	// HostData becomes the reports' HOST_DATA: nil (32 zero bytes) or
	// exactly SimHostDataSize bytes, usually the init-data digest fitted
	// with initdata.Fit.
	HostData []byte
}

// SimFWCfg returns the fw_cfg items a sim guest reads, in this order:
// sim.FWCfgIdentity from the file SimIdentityPath(), sim.FWCfgMeasurement
// holding measurement as 96 lowercase hex digits, and sim.FWCfgHostData
// holding TEE.Sim.HostData (zeros when nil) as 64 lowercase hex digits. It
// neither reads nor writes files; PrepareSim does.
func (c *Config) SimFWCfg(measurement [48]byte) []FWCfgEntry {
	host := make([]byte, SimHostDataSize)
	if c.TEE.Sim != nil {
		copy(host, c.TEE.Sim.HostData)
	}
	return []FWCfgEntry{
		{Name: sim.FWCfgIdentity, File: c.SimIdentityPath()},
		{Name: sim.FWCfgMeasurement, String: hex.EncodeToString(measurement[:])},
		{Name: sim.FWCfgHostData, String: hex.EncodeToString(host)},
	}
}

// PrepareSim readies a validated sim Config for launch: it loads the VCEK
// and its key from TEE.Sim.ChainDir, writes them to SimIdentityPath() (mode
// 0600, atomically), computes the launch MEASUREMENT from exactly Kernel,
// Initrd and Cmdline (sim.MeasureFiles) and returns SimFWCfg of it. It
// fails if the kind is not sim, the chain cannot be loaded, a boot file
// cannot be read or the identity cannot be written.
func (c *Config) PrepareSim() ([]FWCfgEntry, error) {
	if c.TEE.Kind != TEESim || c.TEE.Sim == nil {
		return nil, fmt.Errorf("prepare sim tee for vm %q: TEE.Kind is %q with Sim %v: want kind %q and TEE.Sim set", c.Name, c.TEE.Kind, c.TEE.Sim != nil, TEESim)
	}
	r, err := sim.LoadReporter(c.TEE.Sim.ChainDir)
	if err != nil {
		return nil, fmt.Errorf("prepare sim tee for vm %q: %w: regenerate it with `ccctl attest sim-chain` or fix sim_chain_dir", c.Name, err)
	}
	if err := r.WriteIdentity(c.SimIdentityPath()); err != nil {
		return nil, fmt.Errorf("prepare sim tee for vm %q: %w", c.Name, err)
	}
	m, err := sim.MeasureFiles(c.Kernel, c.Initrd, c.Cmdline)
	if err != nil {
		return nil, fmt.Errorf("prepare sim tee for vm %q: %w", c.Name, err)
	}
	return c.SimFWCfg(m), nil
}
