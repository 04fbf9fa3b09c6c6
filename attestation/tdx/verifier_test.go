package tdx

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/attestation"
	testcases "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/stretchr/testify/require"
)

// sampleNow is inside the validity of the Sapphire Rapids sample quote's PCK
// chain and of the sample collateral (go-tdx-guest's verify tests use it).
var sampleNow = time.Date(2023, time.July, 1, 1, 0, 0, 0, time.UTC)

// Facts of go-tdx-guest's testdata/tdx_prod_quote_SPR_E4.dat.
const (
	sampleReportData = "6c62dec1b8191749a31dab490be532a35944dea47caef1f980863993d9899545eb7406a38d1eed313b987a467dacead6f0c87a6d766c66f6f29f8acb281f1113"
	sampleMRTD       = "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb"
	sampleRTMR0      = "2927da70461cd63266f43230cc1849c03ef25ebe490062a801d8fcc80af42976823adf08f833c1e50b51779c6593f32a"
	sampleTeeTcbSvn  = "03000400000000000000000000000000"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	return b
}

func sampleQuote() []byte { return append([]byte(nil), testdata.RawQuote...) }

func TestRealQuoteVerifies(t *testing.T) {
	v, err := NewVerifier(Config{
		MRTD:             [][]byte{unhex(t, sampleMRTD)},
		RTMR:             [4][]byte{unhex(t, sampleRTMR0)},
		MRConfigID:       make([]byte, 48),
		MinimumTeeTcbSvn: unhex(t, sampleTeeTcbSvn),
	})
	require.NoError(t, err)
	require.False(t, v.ChecksCollateral())
	claims, err := v.Verify(context.Background(), sampleQuote(), attestation.VerifyOptions{
		ReportData: unhex(t, sampleReportData), HostData: make([]byte, 48), Now: sampleNow,
	})
	require.NoError(t, err)
	require.Equal(t, attestation.TEETDX, claims.TEE)
	require.Equal(t, sampleMRTD, claims.Measurement)
	require.Equal(t, sampleMRTD, claims.MRTD)
	require.Equal(t, sampleReportData, claims.ReportData)
	require.Len(t, claims.RTMR, 4)
	require.Equal(t, sampleRTMR0, claims.RTMR[0])
	require.Equal(t, strings.Repeat("0", 96), claims.MRConfigID)
	require.Equal(t, sampleTeeTcbSvn, claims.TeeTCBSVN)
	require.False(t, claims.Debug)
	require.Equal(t, attestation.TEETDX, v.TEE())
}

func TestIntelRootMatchesSampleChain(t *testing.T) {
	root, err := IntelRoot()
	require.NoError(t, err)
	require.Equal(t, "Intel SGX Root CA", root.Subject.CommonName)
	q, err := ParseQuote(sampleQuote())
	require.NoError(t, err)
	chain := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	var last *x509.Certificate
	for rest := chain; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		last, err = x509.ParseCertificate(blk.Bytes)
		require.NoError(t, err)
	}
	require.True(t, last.Equal(root), "the quote's chain ends in the embedded Intel root")
}

func TestQuoteChecks(t *testing.T) {
	otherRoot := x509.NewCertPool() // holds no Intel root
	tests := []struct {
		name      string
		cfg       Config
		opts      attestation.VerifyOptions
		mutate    func([]byte) []byte
		wantCheck string
		wantErr   string
	}{
		{name: "tampered TD quote body byte", mutate: func(b []byte) []byte { b[0x30+0x88] ^= 1; return b }, // MRTD
			wantCheck: attestation.CheckSignature, wantErr: "unable to verify message digest"},
		{name: "tampered QE report byte", mutate: func(b []byte) []byte { b[0x27C+0x86+0x40] ^= 1; return b },
			wantCheck: attestation.CheckSignature, wantErr: "QE report"},
		{name: "untrusted root", cfg: Config{TrustedRoots: otherRoot},
			wantCheck: attestation.CheckTrustedRoot, wantErr: `PCK certificate "Intel SGX PCK Certificate" (issuer "Intel SGX PCK Platform CA") does not chain to a trusted root`},
		{name: "outside PCK validity", opts: attestation.VerifyOptions{Now: time.Date(2053, 1, 1, 0, 0, 0, 0, time.UTC)},
			wantCheck: attestation.CheckTrustedRoot, wantErr: "expired"},
		{name: "wrong REPORT_DATA", opts: attestation.VerifyOptions{ReportData: make([]byte, 64)},
			wantCheck: attestation.CheckReportData, wantErr: "quote's REPORT_DATA is 6c62dec1"},
		{name: "REPORT_DATA missing", opts: attestation.VerifyOptions{ReportData: []byte{}},
			wantCheck: attestation.CheckReportData, wantErr: "no expected REPORT_DATA was given"},
		{name: "wrong MRCONFIGID per request", opts: attestation.VerifyOptions{HostData: bytes.Repeat([]byte{1}, 48)},
			wantCheck: attestation.CheckHostData, wantErr: "quote's MRCONFIGID is 0000"},
		{name: "MRTD not expected", cfg: Config{MRTD: [][]byte{make([]byte, 48)}},
			wantCheck: attestation.CheckMeasurement, wantErr: "quote's MRTD 6363b804"},
		{name: "RTMR2 not expected", cfg: Config{RTMR: [4][]byte{2: make([]byte, 48)}},
			wantCheck: attestation.CheckRTMR, wantErr: "quote's RTMR2 is 8652f0ca"},
		{name: "MRCONFIGID configured", cfg: Config{MRConfigID: bytes.Repeat([]byte{7}, 48)},
			wantCheck: attestation.CheckMRConfigID, wantErr: "want 0707"},
		{name: "TEE_TCB_SVN below floor", cfg: Config{MinimumTeeTcbSvn: unhex(t, "03000500000000000000000000000000")},
			wantCheck: attestation.CheckTeeTCBSVN, wantErr: "below the minimum 03000500000000000000000000000000 at byte 2 (4 < 5)"},
		{name: "truncated", mutate: func(b []byte) []byte { return b[:2000] },
			wantCheck: attestation.CheckParse, wantErr: "signed data size is"},
		{name: "too short", mutate: func(b []byte) []byte { return b[:100] },
			wantCheck: attestation.CheckParse, wantErr: "TDX quote is 100 bytes"},
		{name: "garbage", mutate: func(b []byte) []byte { return bytes.Repeat([]byte{0xff}, 5000) },
			wantCheck: attestation.CheckParse, wantErr: "TDX quote version is 65535, want 4"},
		{name: "SNP report is not a quote", mutate: func(b []byte) []byte { r := make([]byte, 1184); r[0] = 2; return r },
			wantCheck: attestation.CheckParse, wantErr: "version is 2, want 4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(tc.cfg)
			require.NoError(t, err)
			q := sampleQuote()
			if tc.mutate != nil {
				q = tc.mutate(q)
			}
			opts := tc.opts
			if opts.ReportData == nil {
				opts.ReportData = unhex(t, sampleReportData)
			}
			if opts.Now.IsZero() {
				opts.Now = sampleNow
			}
			claims, err := v.Verify(context.Background(), q, opts)
			require.Nil(t, claims)
			require.ErrorIs(t, err, attestation.ErrEvidenceInvalid)
			require.Equal(t, tc.wantCheck, attestation.FailedCheck(err), "error: %v", err)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

// TestValidateDebug exercises the validation step alone: a debug TD cannot
// be produced by re-signing Intel's sample quote.
func TestValidateDebug(t *testing.T) {
	q, err := ParseQuote(sampleQuote())
	require.NoError(t, err)
	q.TdQuoteBody.TdAttributes[0] |= 1
	opts := attestation.VerifyOptions{ReportData: unhex(t, sampleReportData)}

	v, err := NewVerifier(Config{})
	require.NoError(t, err)
	err = v.validate(q, opts)
	require.Equal(t, attestation.CheckDebug, attestation.FailedCheck(err), "error: %v", err)
	require.ErrorContains(t, err, "TD attributes 0x0000000040000001 have DEBUG (bit 0) set")
	require.True(t, claimsOf(q).Debug)

	dbg, err := NewVerifier(Config{AllowDebug: true})
	require.NoError(t, err)
	require.NoError(t, dbg.validate(q, opts))
}

// writeSampleCollateral writes go-tdx-guest's sample PCS responses in the
// offline collateral layout.
func writeSampleCollateral(t *testing.T) string {
	dir := t.TempDir()
	chain := func(h map[string][]string, name string) []byte {
		s, err := url.QueryUnescape(h[name][0])
		require.NoError(t, err)
		return []byte(s)
	}
	files := map[string][]byte{
		TCBInfoFile:         testdata.TcbInfoBody,
		TCBInfoChainFile:    chain(testcases.TcbInfoHeader, "Tcb-Info-Issuer-Chain"),
		QEIdentityFile:      testdata.QeIdentityBody,
		QEIdentityChainFile: chain(testcases.QeIdentityHeader, "Sgx-Enclave-Identity-Issuer-Chain"),
		PCKCRLFile:          testdata.PckCrlBody,
		PCKCRLChainFile:     chain(testcases.PckCrlHeader, "Sgx-Pck-Crl-Issuer-Chain"),
		RootCRLFile:         testdata.RootCrlBody,
	}
	for name, b := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
	}
	return dir
}

func TestOfflineCollateral(t *testing.T) {
	dir := writeSampleCollateral(t)
	opts := attestation.VerifyOptions{ReportData: unhex(t, sampleReportData), Now: sampleNow}

	// The sample collateral is newer than the sample quote: go-tdx-guest
	// finds no TCB level the quote meets. Getting there proves the
	// directory's TCB info and QE identity were loaded and their signatures
	// verified to the Intel root.
	for _, revocations := range []bool{false, true} {
		v, err := NewVerifier(Config{CollateralDir: dir, CheckRevocations: revocations})
		require.NoError(t, err)
		require.True(t, v.ChecksCollateral())
		_, err = v.Verify(context.Background(), sampleQuote(), opts)
		require.Equal(t, attestation.CheckCollateral, attestation.FailedCheck(err), "error: %v", err)
		require.ErrorContains(t, err, "no matching TCB level found")
	}

	// Collateral past its nextUpdate is refused as such.
	v, err := NewVerifier(Config{CollateralDir: dir})
	require.NoError(t, err)
	late := opts
	late.Now = time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err = v.Verify(context.Background(), sampleQuote(), late)
	require.Equal(t, attestation.CheckCollateral, attestation.FailedCheck(err), "error: %v", err)
	require.ErrorContains(t, err, "tcbInfo has expired")

	// A tampered TCB info body fails its Intel signature.
	body := bytes.Replace(testdata.TcbInfoBody, []byte(`"tcbEvaluationDataNumber":`), []byte(`"tcbEvaluationDataNumber" :`), 1)
	require.NoError(t, os.WriteFile(filepath.Join(dir, TCBInfoFile), body, 0o644))
	_, err = v.Verify(context.Background(), sampleQuote(), opts)
	require.Equal(t, attestation.CheckCollateral, attestation.FailedCheck(err), "error: %v", err)
	require.ErrorContains(t, err, "tcbInfo response verification failed")

	require.NoError(t, os.Remove(filepath.Join(dir, QEIdentityFile)))
	_, err = NewVerifier(Config{CollateralDir: dir})
	require.ErrorContains(t, err, "lacks qe_identity.json")
}

func TestNewVerifierConfigErrors(t *testing.T) {
	tests := []struct {
		cfg     Config
		wantErr string
	}{
		{Config{MRTD: [][]byte{{1}}}, "MRTD 0 is 1 bytes, want 48"},
		{Config{RTMR: [4][]byte{3: {1}}}, "RTMR3 is 1 bytes"},
		{Config{MRConfigID: []byte{1}}, "MRCONFIGID is 1 bytes"},
		{Config{MinimumTeeTcbSvn: []byte{1}}, "TEE_TCB_SVN is 1 bytes, want 16"},
		{Config{CheckRevocations: true}, "CheckRevocations needs collateral"},
		{Config{CollateralDir: "/nonexistent/coffer"}, "collateral directory"},
	}
	for _, tc := range tests {
		_, err := NewVerifier(tc.cfg)
		require.ErrorContains(t, err, tc.wantErr)
	}
}
