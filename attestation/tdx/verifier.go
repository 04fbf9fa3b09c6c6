// Package tdx verifies Intel TDX DCAP quotes (version 4) with go-tdx-guest,
// keeping its steps apart: parse (abi) → verify the PCK chain to Intel's SGX
// root, the quote and QE report signatures and, when collateral is
// configured, the TCB info and QE identity from Intel PCS or an offline
// directory (verify) → validate the TD quote body against Coffer's fixed
// checks (validate).
package tdx

import (
	"bytes"
	"context"
	"crypto/x509"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cofferhq/coffer/attestation"
	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/validate"
	"github.com/google/go-tdx-guest/verify"
	"github.com/google/go-tdx-guest/verify/trust"
)

// intelRootPEM is the Intel SGX Root CA certificate (CN "Intel SGX Root CA",
// valid to 2049-12-31, SHA-256 fingerprint 44:A0:19:6B:...:74:D3), as
// published at https://certificates.trustedservices.intel.com/ and embedded
// in go-tdx-guest v0.3.1 verify/trusted_root.pem.
//
//go:embed intel_sgx_root_ca.pem
var intelRootPEM []byte

// IntelRoot returns the Intel SGX Root CA certificate.
func IntelRoot() (*x509.Certificate, error) {
	blk, _ := pem.Decode(intelRootPEM)
	if blk == nil {
		return nil, errors.New("embedded Intel SGX Root CA is not PEM")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// Sizes of TD quote body fields, in bytes.
const (
	MeasurementSize = abi.MrTdSize // MRTD, RTMRs, MRCONFIGID: 48
	TeeTcbSvnSize   = abi.TeeTcbSvnSize
	tdAttrDebug     = 1 // TDATTRIBUTES bit 0 (TUD.DEBUG)
)

// Config configures a Verifier. The zero value verifies the PCK chain to
// Intel's root and the quote's signatures only, with debug TDs refused.
type Config struct {
	// TrustedRoots is the root pool for the PCK chain and the collateral
	// signing chains; nil means the Intel SGX Root CA.
	TrustedRoots *x509.CertPool
	// CollateralDir is an offline collateral directory (see TCBInfoFile and
	// the other file names). Takes precedence over Getter.
	CollateralDir string
	// Getter fetches collateral from Intel PCS (e.g. PCSGetter()). It is
	// wrapped in a CachingGetter unless it is one already, so PCS sees one
	// request per FMSPC (and for QE identity and CRLs) per collateral
	// period.
	// With neither CollateralDir nor Getter, TCB status and QE identity are
	// NOT checked: only the PCK chain and the quote and QE signatures are.
	Getter trust.HTTPSGetter
	// CheckRevocations also checks the PCK CRL and Root CA CRL (collateral
	// needed; offline: PCKCRLFile, PCKCRLChainFile and RootCRLFile).
	CheckRevocations bool
	// MRTD lists acceptable MRTD values (48 bytes each); empty: any.
	MRTD [][]byte
	// RTMR holds the expected RTMR0..3 (48 bytes each); a nil entry is not
	// checked.
	RTMR [4][]byte
	// MRConfigID is the expected MRCONFIGID (48 bytes); nil: not checked.
	// VerifyOptions.HostData checks it per request too.
	MRConfigID []byte
	// MinimumTeeTcbSvn is the component-wise floor for TEE_TCB_SVN (16
	// bytes); nil: not checked.
	MinimumTeeTcbSvn []byte
	// AllowDebug accepts TDs with TDATTRIBUTES.DEBUG (development only).
	AllowDebug bool
}

// Verifier verifies TDX quotes; it implements attestation.Verifier.
type Verifier struct {
	cfg    Config
	roots  *x509.CertPool
	getter trust.HTTPSGetter
}

var _ attestation.Verifier = (*Verifier)(nil)

// NewVerifier checks cfg and returns a Verifier. It fails if a measurement
// or SVN has the wrong length, CollateralDir lacks a required file, or
// CheckRevocations is set without collateral.
func NewVerifier(cfg Config) (*Verifier, error) {
	for i, m := range cfg.MRTD {
		if len(m) != MeasurementSize {
			return nil, fmt.Errorf("configure TDX verifier: MRTD %d is %d bytes, want %d", i, len(m), MeasurementSize)
		}
	}
	for i, m := range cfg.RTMR {
		if m != nil && len(m) != MeasurementSize {
			return nil, fmt.Errorf("configure TDX verifier: RTMR%d is %d bytes, want %d", i, len(m), MeasurementSize)
		}
	}
	if cfg.MRConfigID != nil && len(cfg.MRConfigID) != MeasurementSize {
		return nil, fmt.Errorf("configure TDX verifier: MRCONFIGID is %d bytes, want %d", len(cfg.MRConfigID), MeasurementSize)
	}
	if cfg.MinimumTeeTcbSvn != nil && len(cfg.MinimumTeeTcbSvn) != TeeTcbSvnSize {
		return nil, fmt.Errorf("configure TDX verifier: minimum TEE_TCB_SVN is %d bytes, want %d", len(cfg.MinimumTeeTcbSvn), TeeTcbSvnSize)
	}
	v := &Verifier{cfg: cfg, roots: cfg.TrustedRoots, getter: cfg.Getter}
	if cfg.Getter != nil {
		if _, ok := cfg.Getter.(*CachingGetter); !ok {
			v.getter = NewCachingGetter(cfg.Getter, 0, nil)
		}
	}
	if v.roots == nil {
		root, err := IntelRoot()
		if err != nil {
			return nil, fmt.Errorf("configure TDX verifier: %w", err)
		}
		v.roots = x509.NewCertPool()
		v.roots.AddCert(root)
	}
	if cfg.CollateralDir != "" {
		st, err := os.Stat(cfg.CollateralDir)
		if err != nil {
			return nil, fmt.Errorf("configure TDX verifier: collateral directory: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("configure TDX verifier: collateral directory %s is not a directory", cfg.CollateralDir)
		}
		if err := checkCollateralDir(cfg.CollateralDir); err != nil {
			return nil, fmt.Errorf("configure TDX verifier: %w", err)
		}
		v.getter = dirGetter{dir: cfg.CollateralDir}
	}
	if cfg.CheckRevocations && v.getter == nil {
		return nil, errors.New("configure TDX verifier: CheckRevocations needs collateral (CollateralDir or Getter)")
	}
	return v, nil
}

// TEE returns attestation.TEETDX.
func (v *Verifier) TEE() attestation.TEE { return attestation.TEETDX }

// ChecksCollateral reports whether TCB info and QE identity are checked.
func (v *Verifier) ChecksCollateral() bool { return v.getter != nil }

// Verify parses a raw DCAP v4 quote, verifies it and validates its TD quote
// body. It returns claims (Measurement = MRTD) or a *attestation.CheckError
// naming the failed check: "parse", "trusted_root", "signature",
// "collateral", "report_data", "host_data" (VerifyOptions.HostData against
// MRCONFIGID), "debug", "measurement" (MRTD), "rtmr", "mr_config_id",
// "tee_tcb_svn" or "policy" (other go-tdx-guest validation).
func (v *Verifier) Verify(ctx context.Context, evidence []byte, opts attestation.VerifyOptions) (*attestation.Claims, error) {
	quote, err := ParseQuote(evidence)
	if err != nil {
		return nil, attestation.Fail(attestation.CheckParse, err)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	if err := v.verifyChain(quote, now); err != nil {
		return nil, attestation.Fail(attestation.CheckTrustedRoot, err)
	}
	// Chain and signatures (quote, QE report, QE report data binding).
	if err := verify.TdxQuote(quote, &verify.Options{Now: now, TrustedRoots: v.roots}); err != nil {
		return nil, attestation.Fail(attestation.CheckSignature, fmt.Errorf("verify TDX quote: %w", err))
	}
	if v.getter != nil {
		copts := &verify.Options{Now: now, TrustedRoots: v.roots, GetCollateral: true, Getter: v.getter, CheckRevocations: v.cfg.CheckRevocations}
		if err := verify.TdxQuote(quote, copts); err != nil {
			return nil, attestation.Fail(attestation.CheckCollateral, fmt.Errorf("verify TDX quote against Intel collateral: %w", err))
		}
	}
	if err := v.validate(quote, opts); err != nil {
		return nil, err
	}
	return claimsOf(quote), nil
}

// verifyChain checks that the quote's PCK certificate chains to a trusted
// root at now, so a foreign root is reported as such.
func (v *Verifier) verifyChain(q *pb.QuoteV4, now time.Time) error {
	chain := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	var certs []*x509.Certificate
	for rest := chain; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return fmt.Errorf("parse PCK certificate chain entry %d: %w", len(certs), err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return errors.New("quote carries no PCK certificate chain (certification data type 5 expected)")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: inter, CurrentTime: now}); err != nil {
		return fmt.Errorf("PCK certificate %q (issuer %q) does not chain to a trusted root at %s: %w",
			certs[0].Subject.CommonName, certs[0].Issuer.CommonName, now.UTC().Format(time.RFC3339), err)
	}
	return nil
}

func (v *Verifier) validate(q *pb.QuoteV4, opts attestation.VerifyOptions) error {
	body := q.GetTdQuoteBody()
	if !opts.SkipReportData {
		if err := checkBytes("REPORT_DATA", body.GetReportData(), opts.ReportData, abi.ReportDataSize,
			"the evidence is bound to another nonce or tee-pubkey"); err != nil {
			return attestation.Fail(attestation.CheckReportData, err)
		}
	}
	if opts.HostData != nil {
		if err := checkBytes("MRCONFIGID", body.GetMrConfigId(), opts.HostData, MeasurementSize,
			"the TD was launched with another configuration (init-data digest)"); err != nil {
			return attestation.Fail(attestation.CheckHostData, err)
		}
	}
	attrs := binary.LittleEndian.Uint64(body.GetTdAttributes())
	if attrs&tdAttrDebug != 0 && !v.cfg.AllowDebug {
		return attestation.Fail(attestation.CheckDebug, fmt.Errorf(
			"TD attributes 0x%016x have DEBUG (bit 0) set, so the host can read and modify TD memory; relaunch without debug (AllowDebug is for development only)", attrs))
	}
	if len(v.cfg.MRTD) > 0 {
		ok := false
		for _, m := range v.cfg.MRTD {
			ok = ok || bytes.Equal(m, body.GetMrTd())
		}
		if !ok {
			return attestation.Fail(attestation.CheckMeasurement, fmt.Errorf("quote's MRTD %s is not one of the %d expected values", hex.EncodeToString(body.GetMrTd()), len(v.cfg.MRTD)))
		}
	}
	for i, want := range v.cfg.RTMR {
		if want != nil && !bytes.Equal(want, body.GetRtmrs()[i]) {
			return attestation.Fail(attestation.CheckRTMR, fmt.Errorf("quote's RTMR%d is %s, want %s", i, hex.EncodeToString(body.GetRtmrs()[i]), hex.EncodeToString(want)))
		}
	}
	if v.cfg.MRConfigID != nil && !bytes.Equal(v.cfg.MRConfigID, body.GetMrConfigId()) {
		return attestation.Fail(attestation.CheckMRConfigID, fmt.Errorf("quote's MRCONFIGID is %s, want %s", hex.EncodeToString(body.GetMrConfigId()), hex.EncodeToString(v.cfg.MRConfigID)))
	}
	if floor := v.cfg.MinimumTeeTcbSvn; floor != nil {
		got := body.GetTeeTcbSvn()
		for i := range floor {
			if got[i] < floor[i] {
				return attestation.Fail(attestation.CheckTeeTCBSVN, fmt.Errorf(
					"quote's TEE_TCB_SVN %s is below the minimum %s at byte %d (%d < %d): update the TDX module",
					hex.EncodeToString(got), hex.EncodeToString(floor), i, got[i], floor[i]))
			}
		}
	}
	vopts := &validate.Options{TdQuoteBodyOptions: validate.TdQuoteBodyOptions{
		MinimumTeeTcbSvn: v.cfg.MinimumTeeTcbSvn,
		MrConfigID:       v.cfg.MRConfigID,
	}}
	if !opts.SkipReportData {
		vopts.TdQuoteBodyOptions.ReportData = opts.ReportData
	}
	if err := validate.TdxQuote(q, vopts); err != nil {
		return attestation.Fail(attestation.CheckPolicy, fmt.Errorf("validate TDX quote: %w", err))
	}
	return nil
}

func checkBytes(field string, got, want []byte, size int, hint string) error {
	if len(want) == 0 {
		return fmt.Errorf("no expected %s was given; it is required (set VerifyOptions.ReportData, or SkipReportData only for offline inspection)", field)
	}
	if len(want) != size {
		return fmt.Errorf("expected %s is %d bytes, want %d", field, len(want), size)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("quote's %s is %s, want %s: %s", field, hex.EncodeToString(got), hex.EncodeToString(want), hint)
	}
	return nil
}

func claimsOf(q *pb.QuoteV4) *attestation.Claims {
	body := q.GetTdQuoteBody()
	rtmr := make([]string, len(body.GetRtmrs()))
	for i, r := range body.GetRtmrs() {
		rtmr[i] = hex.EncodeToString(r)
	}
	mrtd := hex.EncodeToString(body.GetMrTd())
	return &attestation.Claims{
		TEE:         attestation.TEETDX,
		Measurement: mrtd,
		ReportData:  hex.EncodeToString(body.GetReportData()),
		Debug:       binary.LittleEndian.Uint64(body.GetTdAttributes())&tdAttrDebug != 0,
		MRTD:        mrtd,
		RTMR:        rtmr,
		MRConfigID:  hex.EncodeToString(body.GetMrConfigId()),
		TeeTCBSVN:   hex.EncodeToString(body.GetTeeTcbSvn()),
	}
}
