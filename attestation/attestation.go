// Package attestation holds the types shared by Coffer's evidence verifiers
// (attestation/snp, attestation/tdx, attestation/sim) and their callers (the
// KBS and ccctl attest verify).
//
// Each verifier keeps go-sev-guest's three steps apart: parse the evidence
// bytes, verify signatures and the certificate chain to the configured roots,
// then validate the fixed checks (REPORT_DATA, HOST_DATA, debug, TCB floors).
// The result is a Claims value; every failure is a *CheckError naming the
// check, wrapping ErrEvidenceInvalid.
package attestation

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// TEE names an evidence format.
type TEE string

const (
	// TEESNP is AMD SEV-SNP: a 1184-byte ATTESTATION_REPORT (SEV-SNP ABI spec
	// 56860, table 22), optionally followed by its certificate table.
	TEESNP TEE = "snp"
	// TEETDX is Intel TDX: a DCAP quote v4 (Intel TDX DCAP Quoting Library API).
	TEETDX TEE = "tdx"
	// TEESim is Coffer's software TEE: SNP-format reports signed by a
	// test-only ARK→ASK→VCEK chain. Never trusted unless configured explicitly.
	TEESim TEE = "sim"
)

// Claims are the facts verified evidence establishes (input to the
// attestation policy). Byte fields are lower-case hex strings.
type Claims struct {
	// TEE is the evidence format that was verified.
	TEE TEE `json:"tee"`
	// Measurement is the launch measurement: SNP MEASUREMENT (48 bytes) or
	// TDX MRTD (48 bytes), lower-case hex.
	Measurement string `json:"measurement,omitempty"`
	// HostData is SNP HOST_DATA (32 bytes), hex.
	HostData string `json:"host_data,omitempty"`
	// ReportData is REPORT_DATA (64 bytes), hex.
	ReportData string `json:"report_data"`
	// Policy is the SNP guest policy (SEV-SNP ABI spec table 9).
	Policy uint64 `json:"policy,omitempty"`
	// Debug is SNP policy bit DEBUG or TDX TD ATTRIBUTES.DEBUG.
	Debug bool `json:"debug"`
	// ReportedTCB is SNP REPORTED_TCB as a 64-bit TCB_VERSION.
	ReportedTCB uint64 `json:"reported_tcb,omitempty"`
	// CommittedTCB is SNP COMMITTED_TCB as a 64-bit TCB_VERSION.
	CommittedTCB uint64 `json:"committed_tcb,omitempty"`
	// LaunchTCB is SNP LAUNCH_TCB as a 64-bit TCB_VERSION.
	LaunchTCB uint64 `json:"launch_tcb,omitempty"`
	// ChipID is SNP CHIP_ID (64 bytes), hex.
	ChipID string `json:"chip_id,omitempty"`
	// MRTD is TDX MRTD (48 bytes), hex.
	MRTD string `json:"mr_td,omitempty"`
	// RTMR is TDX RTMR0..3, each 48 bytes, hex.
	RTMR []string `json:"rtmr,omitempty"`
	// MRConfigID is TDX MRCONFIGID (48 bytes), hex.
	MRConfigID string `json:"mr_config_id,omitempty"`
	// TeeTCBSVN is TDX TEE_TCB_SVN (16 bytes), hex.
	TeeTCBSVN string `json:"tee_tcb_svn,omitempty"`
	// Product is the processor family the evidence was verified for:
	// "Milan", "Genoa" or "Turin" for SNP, "sim" for sim, empty for TDX.
	Product string `json:"product,omitempty"`
}

// Verifier checks one TEE's evidence: parse, verify signatures and the
// certificate chain to the configured roots, and validate the fixed checks
// given in opts. It returns the verified claims, or an error that names the
// failed check: a *CheckError wrapping ErrEvidenceInvalid.
type Verifier interface {
	// TEE returns the evidence format this verifier accepts.
	TEE() TEE
	// Verify parses, verifies and validates evidence. Claims are nil on error.
	Verify(ctx context.Context, evidence []byte, opts VerifyOptions) (*Claims, error)
}

// VerifyOptions are the per-request expectations a Verifier checks.
type VerifyOptions struct {
	// ReportData is the exact 64 bytes expected in REPORT_DATA (binds the
	// nonce and tee-pubkey; see attestation/reportdata). Required: nil fails
	// check "report_data" unless SkipReportData is set.
	ReportData []byte
	// SkipReportData disables the REPORT_DATA check. Only for offline
	// inspection of historic samples (ccctl attest verify without
	// --report-data); the KBS never sets it.
	SkipReportData bool
	// HostData is optional: 32 bytes expected in SNP/sim HOST_DATA, or for
	// TDX the 48 bytes expected in MRCONFIGID. Nil: not checked.
	HostData []byte
	// Now is the time certificates and collateral are checked against;
	// zero means time.Now().
	Now time.Time
}

// Names of the checks a Verifier reports in CheckError.Check.
const (
	CheckParse        = "parse"         // evidence bytes malformed or truncated
	CheckCertificates = "certificates"  // VCEK/VLEK/PCK or collateral missing or unparsable
	CheckTrustedRoot  = "trusted_root"  // chain does not end in a configured root
	CheckSignature    = "signature"     // report/quote signature does not verify
	CheckProduct      = "product"       // processor family not recognised or not the one configured
	CheckReportData   = "report_data"   // REPORT_DATA differs from VerifyOptions.ReportData
	CheckHostData     = "host_data"     // HOST_DATA (TDX: MRCONFIGID) differs from VerifyOptions.HostData
	CheckDebug        = "debug"         // debug allowed by the guest policy / TD attributes
	CheckPolicy       = "policy"        // other guest-policy or TD-attribute requirement
	CheckReportedTCB  = "reported_tcb"  // SNP REPORTED_TCB below the floor
	CheckCommittedTCB = "committed_tcb" // SNP COMMITTED_TCB below the floor
	CheckLaunchTCB    = "launch_tcb"    // SNP LAUNCH_TCB below the floor
	CheckCurrentTCB   = "current_tcb"   // SNP CURRENT_TCB below the floor
	CheckTeeTCBSVN    = "tee_tcb_svn"   // TDX TEE_TCB_SVN below the floor
	CheckMeasurement  = "measurement"   // SNP MEASUREMENT / TDX MRTD not as expected
	CheckRTMR         = "rtmr"          // a TDX RTMR not as expected
	CheckMRConfigID   = "mr_config_id"  // TDX MRCONFIGID not as configured
	CheckCollateral   = "collateral"    // TDX collateral (TCB info, QE identity, CRLs) missing, invalid, or TCB status not acceptable
)

// ErrEvidenceInvalid is wrapped by every verification failure.
var ErrEvidenceInvalid = errors.New("evidence invalid")

// CheckError is a verification failure of one named check, e.g. "parse",
// "signature", "report_data", "host_data", "debug", "reported_tcb".
// It unwraps to both Err and ErrEvidenceInvalid.
type CheckError struct {
	// Check names the failed check.
	Check string
	// Err says what was wrong.
	Err error
}

// Error returns "check <Check> failed: <Err>".
func (e *CheckError) Error() string {
	return fmt.Sprintf("check %s failed: %v", e.Check, e.Err)
}

// Unwrap returns Err and ErrEvidenceInvalid, so errors.Is matches either.
func (e *CheckError) Unwrap() []error {
	return []error{e.Err, ErrEvidenceInvalid}
}

// Fail returns a *CheckError for check wrapping err.
func Fail(check string, err error) error {
	return &CheckError{Check: check, Err: err}
}

// FailedCheck returns the Check of the first *CheckError in err's chain, or
// "" if there is none.
func FailedCheck(err error) string {
	var ce *CheckError
	if errors.As(err, &ce) {
		return ce.Check
	}
	return ""
}
