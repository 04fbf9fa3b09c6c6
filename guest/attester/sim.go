package attester

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/google/go-sev-guest/abi"
)

// DefaultFWCfgRoot is where Linux's qemu_fw_cfg driver lists fw_cfg items
// by name; item NAME's bytes are in <root>/NAME/raw.
const DefaultFWCfgRoot = "/sys/firmware/qemu_fw_cfg/by_name"

// Sim is the simulated TEE's attester: it signs SNP-format reports with the
// test-only VCEK key the VMM passed through fw_cfg (sim.FWCfgIdentity),
// claiming the measurement (sim.FWCfgMeasurement) and HOST_DATA
// (sim.FWCfgHostData) the VMM computed. Evidence is the report plus a
// certificate table holding the VCEK. Safe for concurrent use.
type Sim struct {
	reporter    *sim.Reporter
	measurement []byte
	hostData    []byte
}

var _ Attester = (*Sim)(nil)

// NewSim reads the sim fw_cfg items under root (DefaultFWCfgRoot when
// empty). It fails, naming the file, if an item is missing (load the
// qemu_fw_cfg module; the VM must run with TEE kind sim) or malformed.
func NewSim(root string) (*Sim, error) {
	if root == "" {
		root = DefaultFWCfgRoot
	}
	ident, err := readFWCfg(root, sim.FWCfgIdentity)
	if err != nil {
		return nil, err
	}
	r, err := sim.ParseReporterPEM(ident)
	if err != nil {
		return nil, fmt.Errorf("sim attester: fw_cfg %s: %w", sim.FWCfgIdentity, err)
	}
	meas, err := readHexFWCfg(root, sim.FWCfgMeasurement, abi.MeasurementSize)
	if err != nil {
		return nil, err
	}
	host, err := readHexFWCfg(root, sim.FWCfgHostData, abi.HostDataSize)
	if err != nil {
		return nil, err
	}
	return &Sim{reporter: r, measurement: meas, hostData: host}, nil
}

// fwCfgPath returns the raw file of fw_cfg item name under root.
func fwCfgPath(root, name string) string { return filepath.Join(root, name, "raw") }

func readFWCfg(root, name string) ([]byte, error) {
	b, err := os.ReadFile(fwCfgPath(root, name))
	if err != nil {
		return nil, fmt.Errorf("sim attester: read fw_cfg item %s: %w: the VM must run with tee sim and the guest needs the qemu_fw_cfg module", name, err)
	}
	return b, nil
}

// readHexFWCfg reads an fw_cfg item of hex digits (surrounding whitespace
// and NULs ignored) encoding exactly n bytes.
func readHexFWCfg(root, name string, n int) ([]byte, error) {
	b, err := readFWCfg(root, name)
	if err != nil {
		return nil, err
	}
	v, err := hex.DecodeString(string(bytes.Trim(b, " \t\r\n\x00")))
	if err != nil || len(v) != n {
		return nil, fmt.Errorf("sim attester: fw_cfg item %s holds %q: want %d hex digits (%d bytes)", name, bytes.TrimSpace(b), 2*n, n)
	}
	return v, nil
}

// TEE returns attestation.TEESim.
func (s *Sim) TEE() attestation.TEE { return attestation.TEESim }

// Evidence returns a signed sim report whose REPORT_DATA is reportData
// zero-padded to 64 bytes, followed by a certificate table with the VCEK.
// It fails if reportData is longer than 64 bytes.
func (s *Sim) Evidence(_ context.Context, reportData []byte) ([]byte, error) {
	rd, err := padReportData(reportData)
	if err != nil {
		return nil, fmt.Errorf("sim evidence: %w", err)
	}
	return s.reporter.Evidence(sim.ReportOptions{Measurement: s.measurement, HostData: s.hostData, ReportData: rd[:]})
}

// InitDataBinding returns the 32-byte HOST_DATA the VMM launched the VM
// with.
func (s *Sim) InitDataBinding(context.Context) ([]byte, error) {
	return bytes.Clone(s.hostData), nil
}
