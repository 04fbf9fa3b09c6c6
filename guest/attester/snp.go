package attester

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/snp"
	"github.com/google/go-configfs-tsm/configfs/configfsi"
	sevclient "github.com/google/go-sev-guest/client"
)

// DefaultSEVGuestDevice is the SEV-SNP guest device of Linux's sev-guest
// driver.
const DefaultSEVGuestDevice = "/dev/sev-guest"

// SNP is the AMD SEV-SNP attester. Evidence is the 1184-byte
// ATTESTATION_REPORT followed by the host's certificate table (extended
// report) when the host provides one. It asks configfs-tsm when it has a
// client, else the sev-guest device through go-sev-guest. Not tested on
// hardware.
type SNP struct {
	tsm    configfsi.Client
	device string
	open   func(path string) (sevclient.Device, error)
}

var _ Attester = (*SNP)(nil)

// NewSNP returns an SNP attester over configfs-tsm client tsm (nil: use the
// device) and the sev-guest device at devicePath ("" means
// DefaultSEVGuestDevice), opened by open (nil means go-sev-guest's Linux
// device; tests pass a fake).
func NewSNP(tsm configfsi.Client, devicePath string, open func(path string) (sevclient.Device, error)) *SNP {
	if devicePath == "" {
		devicePath = DefaultSEVGuestDevice
	}
	if open == nil {
		open = openSEVDevice
	}
	return &SNP{tsm: tsm, device: devicePath, open: open}
}

func openSEVDevice(path string) (sevclient.Device, error) {
	d := &sevclient.LinuxDevice{}
	if err := d.Open(path); err != nil {
		return nil, err
	}
	return d, nil
}

// TEE returns attestation.TEESNP.
func (a *SNP) TEE() attestation.TEE { return attestation.TEESNP }

// Evidence returns an SNP report with REPORT_DATA = reportData (zero-padded
// to 64 bytes), followed by the certificate table when available. It fails
// if reportData exceeds 64 bytes, or naming configfs-tsm or the device path
// when the firmware request fails.
func (a *SNP) Evidence(_ context.Context, reportData []byte) ([]byte, error) {
	rd, err := padReportData(reportData)
	if err != nil {
		return nil, fmt.Errorf("snp evidence: %w", err)
	}
	if a.tsm != nil {
		resp, err := tsmReport(a.tsm, providerSNP, rd, true)
		if err != nil {
			return nil, fmt.Errorf("snp evidence: %w", err)
		}
		return append(resp.OutBlob, resp.AuxBlob...), nil
	}
	d, err := a.open(a.device)
	if err != nil {
		return nil, fmt.Errorf("snp evidence: open %s: %w", a.device, err)
	}
	defer d.Close()
	rep, certs, err := sevclient.GetRawExtendedReport(d, rd)
	if err == nil {
		return append(rep, certs...), nil
	}
	// Hosts without a certificate table answer the extended request with
	// an error; the plain report still verifies with KDS-fetched certs.
	rep, plainErr := sevclient.GetRawReport(d, rd)
	if plainErr != nil {
		return nil, fmt.Errorf("snp evidence: %s: extended report: %v; report: %w", a.device, err, plainErr)
	}
	return rep, nil
}

// InitDataBinding returns the 32-byte HOST_DATA of a fresh report.
func (a *SNP) InitDataBinding(ctx context.Context) ([]byte, error) {
	ev, err := a.Evidence(ctx, nil)
	if err != nil {
		return nil, err
	}
	p, err := snp.Parse(ev)
	if err != nil {
		return nil, fmt.Errorf("snp host data: %w", err)
	}
	return p.Report.GetHostData(), nil
}
