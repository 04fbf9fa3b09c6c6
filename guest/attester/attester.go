// Package attester is the guest's source of TEE evidence: it produces the
// evidence a KBS verifies (kbs/client.Attester) and reports the value the
// TEE bound init-data to at launch, so the agent can refuse init-data whose
// digest does not match.
//
// Implementations: Sim (Coffer's simulated TEE, fw_cfg items from the
// VMM, attestation/sim), SNP (configfs-tsm, else /dev/sev-guest through
// go-sev-guest) and TDX (configfs-tsm, else /dev/tdx_guest through
// go-tdx-guest). Detect picks one by what the guest has.
//
// Only Sim runs on this project's CI machines; SNP and TDX are exercised
// against go-configfs-tsm's fake configfs and go-sev-guest / go-tdx-guest's
// fake devices, never against hardware.
package attester

import (
	"context"
	"errors"
	"fmt"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/snp"
	"github.com/cofferhq/coffer/attestation/tdx"
	"github.com/cofferhq/coffer/kbs/client"
)

// ReportDataSize is the size of REPORT_DATA in SNP and sim reports and TDX
// quotes, bytes. Shorter report data (a SHA-256 or SHA-384 runtime-data
// hash) is zero-padded to it, as Trustee's attesters do.
const ReportDataSize = 64

// Attester produces TEE evidence and names the launch-time init-data
// binding. It is a kbs/client.Attester.
type Attester interface {
	client.Attester
	// InitDataBinding returns the TEE field init-data's digest is bound to
	// at launch: HOST_DATA (32 bytes) for SNP and sim, MRCONFIGID
	// (48 bytes) for TDX. Compare it with initdata.Fit(digest, len).
	InitDataBinding(ctx context.Context) ([]byte, error)
}

var _ client.Attester = Attester(nil)

// ErrReportDataTooLong is wrapped when Evidence gets more than
// ReportDataSize bytes of report data.
var ErrReportDataTooLong = errors.New("report data longer than 64 bytes")

// padReportData returns rd zero-padded to ReportDataSize bytes.
func padReportData(rd []byte) ([ReportDataSize]byte, error) {
	var out [ReportDataSize]byte
	if len(rd) > ReportDataSize {
		return out, fmt.Errorf("report data is %d bytes: %w", len(rd), ErrReportDataTooLong)
	}
	copy(out[:], rd)
	return out, nil
}

// Measurement returns the launch measurement in evidence produced for tee:
// MEASUREMENT (48 bytes) of an SNP or sim report, MRTD (48 bytes) of a TDX
// quote. It fails if the evidence does not parse.
func Measurement(tee attestation.TEE, evidence []byte) ([]byte, error) {
	switch tee {
	case attestation.TEESNP, attestation.TEESim:
		ev, err := snp.Parse(evidence)
		if err != nil {
			return nil, fmt.Errorf("read %s measurement: %w", tee, err)
		}
		return ev.Report.GetMeasurement(), nil
	case attestation.TEETDX:
		q, err := tdx.ParseQuote(evidence)
		if err != nil {
			return nil, fmt.Errorf("read tdx measurement: %w", err)
		}
		return q.GetTdQuoteBody().GetMrTd(), nil
	}
	return nil, fmt.Errorf("read measurement: TEE %q is not sim, snp or tdx", tee)
}
