package snp

import (
	"encoding/hex"

	"github.com/cofferhq/coffer/attestation"
	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
)

// claimsOf returns the claims of a verified report; product is the product
// line it was verified for.
func claimsOf(r *spb.Report, product string) *attestation.Claims {
	policy, _ := abi.ParseSnpPolicy(r.GetPolicy())
	return &attestation.Claims{
		TEE:          attestation.TEESNP,
		Measurement:  hex.EncodeToString(r.GetMeasurement()),
		HostData:     hex.EncodeToString(r.GetHostData()),
		ReportData:   hex.EncodeToString(r.GetReportData()),
		Policy:       r.GetPolicy(),
		Debug:        policy.Debug,
		ReportedTCB:  r.GetReportedTcb(),
		CommittedTCB: r.GetCommittedTcb(),
		LaunchTCB:    r.GetLaunchTcb(),
		ChipID:       hex.EncodeToString(r.GetChipId()),
		Product:      product,
	}
}
