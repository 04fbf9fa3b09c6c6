package attester

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/tdx"
	"github.com/google/go-configfs-tsm/configfs/configfsi"
	tdxclient "github.com/google/go-tdx-guest/client"
)

// DefaultTDXGuestDevice is the TDX guest device of Linux's tdx-guest
// driver.
const DefaultTDXGuestDevice = "/dev/tdx_guest"

// TDX is the Intel TDX attester. Evidence is a TDX quote (version 4). It
// asks configfs-tsm when it has a client (the kernel gets the quote from
// the host's Quote Generation Service), else the tdx_guest device through
// go-tdx-guest. Not tested on hardware.
type TDX struct {
	tsm    configfsi.Client
	device string
	open   func(path string) (tdxclient.Device, error)
}

var _ Attester = (*TDX)(nil)

// NewTDX returns a TDX attester over configfs-tsm client tsm (nil: use the
// device) and the tdx_guest device at devicePath ("" means
// DefaultTDXGuestDevice), opened by open (nil means go-tdx-guest's Linux
// device; tests pass a fake).
func NewTDX(tsm configfsi.Client, devicePath string, open func(path string) (tdxclient.Device, error)) *TDX {
	if devicePath == "" {
		devicePath = DefaultTDXGuestDevice
	}
	if open == nil {
		open = openTDXDevice
	}
	return &TDX{tsm: tsm, device: devicePath, open: open}
}

func openTDXDevice(path string) (tdxclient.Device, error) {
	d := &tdxclient.LinuxDevice{}
	if err := d.Open(path); err != nil {
		return nil, err
	}
	return d, nil
}

// TEE returns attestation.TEETDX.
func (a *TDX) TEE() attestation.TEE { return attestation.TEETDX }

// Evidence returns a TDX quote with REPORTDATA = reportData (zero-padded to
// 64 bytes). It fails if reportData exceeds 64 bytes, or naming
// configfs-tsm or the device when the quote request fails.
func (a *TDX) Evidence(_ context.Context, reportData []byte) ([]byte, error) {
	rd, err := padReportData(reportData)
	if err != nil {
		return nil, fmt.Errorf("tdx evidence: %w", err)
	}
	if a.tsm != nil {
		resp, err := tsmReport(a.tsm, providerTDX, rd, false)
		if err != nil {
			return nil, fmt.Errorf("tdx evidence: %w", err)
		}
		return resp.OutBlob, nil
	}
	d, err := a.open(a.device)
	if err != nil {
		return nil, fmt.Errorf("tdx evidence: open %s: %w", a.device, err)
	}
	defer d.Close()
	q, err := tdxclient.GetRawQuote(d, rd)
	if err != nil {
		return nil, fmt.Errorf("tdx evidence: quote through %s: %w", a.device, err)
	}
	return q, nil
}

// InitDataBinding returns the 48-byte MRCONFIGID of a fresh quote.
func (a *TDX) InitDataBinding(ctx context.Context) ([]byte, error) {
	ev, err := a.Evidence(ctx, nil)
	if err != nil {
		return nil, err
	}
	q, err := tdx.ParseQuote(ev)
	if err != nil {
		return nil, fmt.Errorf("tdx mrconfigid: %w", err)
	}
	return q.GetTdQuoteBody().GetMrConfigId(), nil
}
