package snp

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/attestation"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/stretchr/testify/require"
)

func ptr[T any](v T) *T { return &v }

func wantReportData() []byte { return filled(abi.ReportDataSize, 0x5d) }

func TestVerifyValid(t *testing.T) {
	chip := newFakeChip(t, goodTCB)
	v, err := NewVerifier(Config{TrustedRoots: chip.roots(), MinimumTCB: floorTCB})
	require.NoError(t, err)
	claims, err := v.Verify(context.Background(), chip.evidence(t, reportOpts{}),
		attestation.VerifyOptions{ReportData: wantReportData(), HostData: filled(abi.HostDataSize, 0x40), Now: testNow})
	require.NoError(t, err)
	composed, err := kds.ComposeTCBParts(goodTCB)
	require.NoError(t, err)
	tcb := uint64(composed)
	require.Equal(t, &attestation.Claims{
		TEE:          attestation.TEESNP,
		Measurement:  hex.EncodeToString(filled(abi.MeasurementSize, 0x3e)),
		HostData:     hex.EncodeToString(filled(abi.HostDataSize, 0x40)),
		ReportData:   hex.EncodeToString(wantReportData()),
		Policy:       basePolicy,
		ReportedTCB:  tcb,
		CommittedTCB: tcb,
		LaunchTCB:    tcb,
		ChipID:       hex.EncodeToString(testChipID()),
		Product:      Milan,
	}, claims)
	require.Equal(t, attestation.TEESNP, v.TEE())
}

func TestVerifyChecks(t *testing.T) {
	good := newFakeChip(t, goodTCB)
	low := newFakeChip(t, lowTCB)
	other := make([]byte, abi.ReportDataSize)

	tests := []struct {
		name      string
		chip      *fakeChip
		cfg       Config
		report    reportOpts
		opts      attestation.VerifyOptions
		mutate    func([]byte) []byte
		wantCheck string
		wantErr   string
	}{
		{
			name:      "wrong REPORT_DATA",
			opts:      attestation.VerifyOptions{ReportData: other},
			wantCheck: attestation.CheckReportData,
			wantErr:   "report's REPORT_DATA is 5d5d",
		},
		{
			name:      "expected REPORT_DATA missing",
			opts:      attestation.VerifyOptions{},
			wantCheck: attestation.CheckReportData,
			wantErr:   "no expected REPORT_DATA was given",
		},
		{
			name:      "expected REPORT_DATA wrong size",
			opts:      attestation.VerifyOptions{ReportData: make([]byte, 48)},
			wantCheck: attestation.CheckReportData,
			wantErr:   "expected REPORT_DATA is 48 bytes, want 64",
		},
		{
			name:      "wrong HOST_DATA",
			opts:      attestation.VerifyOptions{HostData: filled(abi.HostDataSize, 0x41)},
			wantCheck: attestation.CheckHostData,
			wantErr:   "report's HOST_DATA is 4040",
		},
		{
			name:      "debug policy",
			report:    reportOpts{policy: debugPolicy},
			wantCheck: attestation.CheckDebug,
			wantErr:   "guest policy 0xb0000 has DEBUG (bit 19) set",
		},
		{
			name:      "reported TCB below floor",
			chip:      low,
			cfg:       Config{MinimumTCB: floorTCB},
			report:    reportOpts{reported: &lowTCB, committed: &goodTCB, current: &goodTCB, launch: &goodTCB},
			wantCheck: attestation.CheckReportedTCB,
			wantErr:   "report's REPORTED_TCB 0x7308000000000003 (bl 3 tee 0 snp 8 ucode 115) is below the minimum",
		},
		{
			name:      "committed TCB below floor",
			cfg:       Config{MinimumTCB: floorTCB},
			report:    reportOpts{committed: &lowTCB},
			wantCheck: attestation.CheckCommittedTCB,
			wantErr:   "report's COMMITTED_TCB 0x7308000000000003 (bl 3 tee 0 snp 8 ucode 115) is below the minimum 0xc814000000000004 (bl 4 tee 0 snp 20 ucode 200)",
		},
		{
			name:      "launch TCB below floor",
			cfg:       Config{MinimumTCB: floorTCB},
			report:    reportOpts{launch: &lowTCB},
			wantCheck: attestation.CheckLaunchTCB,
			wantErr:   "report's LAUNCH_TCB 0x7308000000000003",
		},
		{
			name:      "launch TCB below its own floor",
			cfg:       Config{MinimumLaunchTCB: &floorTCB},
			report:    reportOpts{launch: &lowTCB},
			wantCheck: attestation.CheckLaunchTCB,
			wantErr:   "report's LAUNCH_TCB",
		},
		{
			name:   "bad signature",
			mutate: func(b []byte) []byte { b[0x90] ^= 1; return b }, // MEASUREMENT
			// Measurement flipped after signing.
			wantCheck: attestation.CheckSignature,
			wantErr:   "report signature verification error",
		},
		{
			name:      "untrusted root (fake chain against AMD's real roots)",
			cfg:       Config{TrustedRoots: nil},
			wantCheck: attestation.CheckTrustedRoot,
			wantErr:   "does not chain to a trusted Milan root",
		},
		{
			name:      "product pinned to another line",
			cfg:       Config{Product: Genoa},
			wantCheck: attestation.CheckProduct,
			wantErr:   `certificate is for product "Milan-B1" (line Milan), but the verifier is configured for Genoa`,
		},
		{
			name:      "CHIP_ID differs from the VCEK's HWID",
			report:    reportOpts{chipID: filled(abi.ChipIDSize, 0x77)},
			wantCheck: attestation.CheckPolicy,
			wantErr:   "CHIP_ID 7777",
		},
		{
			name:      "REPORTED_TCB differs from the VCEK's TCB",
			report:    reportOpts{reported: &lowTCB},
			wantCheck: attestation.CheckPolicy,
			wantErr:   "is not the TCB its VCEK is certified for",
		},
		{
			name:      "no VCEK anywhere",
			mutate:    func(b []byte) []byte { return b[:ReportSize] },
			wantCheck: attestation.CheckCertificates,
			wantErr:   "no VCEK found in the evidence's certificate table, and fetching from AMD KDS is not configured",
		},
		{
			name:      "truncated report",
			mutate:    func(b []byte) []byte { return b[:ReportSize-1] },
			wantCheck: attestation.CheckParse,
			wantErr:   "evidence is 1183 bytes, an SNP ATTESTATION_REPORT is 1184 bytes",
		},
		{
			name:      "garbage",
			mutate:    func(b []byte) []byte { return []byte(strings.Repeat("garbage!", 200)) },
			wantCheck: attestation.CheckParse,
			wantErr:   "report version is",
		},
		{
			name: "cert table entry out of range",
			mutate: func(b []byte) []byte {
				binary.LittleEndian.PutUint32(b[ReportSize+20:], 0x7fffffff) // first entry's length
				return b
			},
			wantCheck: attestation.CheckParse,
			wantErr:   "outside the data area",
		},
		{
			name: "cert table offset wraps 32 bits",
			mutate: func(b []byte) []byte {
				binary.LittleEndian.PutUint32(b[ReportSize+16:], 0xfffffff0)
				binary.LittleEndian.PutUint32(b[ReportSize+20:], 0x20)
				return b
			},
			wantCheck: attestation.CheckParse,
			wantErr:   "outside the data area",
		},
		{
			name:      "cert table without terminator",
			mutate:    func(b []byte) []byte { return b[:ReportSize+abi.CertTableEntrySize+3] },
			wantCheck: attestation.CheckParse,
			wantErr:   "no all-zero terminator",
		},
		{
			name:      "expired chain",
			opts:      attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow.Add(30 * 365 * 24 * time.Hour)},
			wantCheck: attestation.CheckTrustedRoot,
			wantErr:   "expired",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chip := tc.chip
			if chip == nil {
				chip = good
			}
			cfg := tc.cfg
			if cfg.TrustedRoots == nil && !strings.HasPrefix(tc.name, "untrusted root") {
				cfg.TrustedRoots = chip.roots()
			}
			v, err := NewVerifier(cfg)
			require.NoError(t, err)
			ev := chip.evidence(t, tc.report)
			if tc.mutate != nil {
				ev = tc.mutate(ev)
			}
			opts := tc.opts
			if opts.ReportData == nil && tc.wantCheck != attestation.CheckReportData {
				opts.ReportData = wantReportData()
			}
			if opts.Now.IsZero() {
				opts.Now = testNow
			}
			claims, err := v.Verify(context.Background(), ev, opts)
			require.Nil(t, claims)
			require.ErrorIs(t, err, attestation.ErrEvidenceInvalid)
			require.Equal(t, tc.wantCheck, attestation.FailedCheck(err), "error: %v", err)
			require.ErrorContains(t, err, tc.wantErr)
			require.True(t, strings.HasPrefix(err.Error(), "check "+tc.wantCheck+" failed: "), err.Error())
		})
	}
}

func TestAllowDebug(t *testing.T) {
	chip := newFakeChip(t, goodTCB)
	v, err := NewVerifier(Config{TrustedRoots: chip.roots(), AllowDebug: true})
	require.NoError(t, err)
	claims, err := v.Verify(context.Background(), chip.evidence(t, reportOpts{policy: debugPolicy}),
		attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow})
	require.NoError(t, err)
	require.True(t, claims.Debug)
}

func TestSkipReportData(t *testing.T) {
	chip := newFakeChip(t, goodTCB)
	v, err := NewVerifier(Config{TrustedRoots: chip.roots()})
	require.NoError(t, err)
	claims, err := v.Verify(context.Background(), chip.evidence(t, reportOpts{}),
		attestation.VerifyOptions{SkipReportData: true, Now: testNow})
	require.NoError(t, err)
	require.Equal(t, hex.EncodeToString(wantReportData()), claims.ReportData)
}

func TestCertDir(t *testing.T) {
	chip := newFakeChip(t, goodTCB)
	dir := t.TempDir()
	tcb, _ := kds.ComposeTCBParts(goodTCB)
	sub := filepath.Join(dir, "vcek", hex.EncodeToString(testChipID()))
	require.NoError(t, os.MkdirAll(sub, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(sub, TCBFileName(Milan, uint64(tcb))+"_vcek.der"), chip.chip.VCEK().Raw, 0o644))
	require.Equal(t, "bl04_tee00_snp22_ucode213", TCBFileName(Milan, uint64(tcb)))

	v, err := NewVerifier(Config{TrustedRoots: chip.roots(), CertDir: dir})
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), chip.report(t, reportOpts{}), attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow})
	require.NoError(t, err)

	// The flat fallback name works too.
	require.NoError(t, os.Rename(filepath.Join(sub, TCBFileName(Milan, uint64(tcb))+"_vcek.der"), filepath.Join(sub, "vcek.der")))
	v, err = NewVerifier(Config{TrustedRoots: chip.roots(), CertDir: dir})
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), chip.report(t, reportOpts{}), attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow})
	require.NoError(t, err)

	_, err = NewVerifier(Config{CertDir: filepath.Join(dir, "missing")})
	require.ErrorContains(t, err, "certificate directory")
}

// countingKDS serves one body at its URL and counts requests: all of
// them, and those for url (a verifier also asks for the product CRL, which
// it does not serve).
type countingKDS struct {
	url      string
	der      []byte
	calls    atomic.Int32
	urlCalls atomic.Int32
	gate     chan struct{}
}

func (k *countingKDS) Get(url string) ([]byte, error) {
	k.calls.Add(1)
	if url == k.url {
		k.urlCalls.Add(1)
	}
	if k.gate != nil {
		<-k.gate
	}
	if url != k.url {
		return nil, errors.New("404 not found: " + url)
	}
	return k.der, nil
}

func TestKDSFetchedOncePerChipAndTCB(t *testing.T) {
	chip := newFakeChip(t, goodTCB)
	tcb, _ := kds.ComposeTCBParts(goodTCB)
	fake := &countingKDS{url: kds.VCEKCertURL(Milan, testChipID(), tcb), der: chip.chip.VCEK().Raw}
	getter := NewCachingGetter(fake, 0)

	// Two verifiers sharing one getter (e.g. after a KBS config reload) and
	// different reports from the same chip and TCB: one KDS request.
	for i := 0; i < 2; i++ {
		v, err := NewVerifier(Config{TrustedRoots: chip.roots(), Getter: getter, Product: Milan})
		require.NoError(t, err)
		for j := 0; j < 3; j++ {
			rd := filled(abi.ReportDataSize, byte(i*10+j))
			_, err = v.Verify(context.Background(), chip.report(t, reportOpts{reportData: rd}),
				attestation.VerifyOptions{ReportData: rd, Now: testNow})
			require.NoError(t, err)
		}
	}
	require.EqualValues(t, 1, fake.urlCalls.Load())
	require.Equal(t, 1, getter.Len())

	// Without Product a version 2 report gives no KDS product line.
	v, err := NewVerifier(Config{TrustedRoots: chip.roots(), Getter: getter})
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), chip.report(t, reportOpts{}), attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow})
	require.Equal(t, attestation.CheckCertificates, attestation.FailedCheck(err))
	require.ErrorContains(t, err, "set the verifier's Product")
}

func TestCachingGetterConcurrentAndFailures(t *testing.T) {
	fake := &countingKDS{url: "https://kds/a", der: []byte("cert"), gate: make(chan struct{})}
	g := NewCachingGetter(fake, 0)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := g.Get("https://kds/a")
			require.NoError(t, err)
			require.Equal(t, "cert", string(b))
		}()
	}
	// Let every goroutine reach the cache before the one fetch completes.
	time.Sleep(50 * time.Millisecond)
	close(fake.gate)
	wg.Wait()
	require.EqualValues(t, 1, fake.calls.Load())

	// Failures are not cached.
	_, err := g.Get("https://kds/missing")
	require.ErrorContains(t, err, "404")
	_, err = g.Get("https://kds/missing")
	require.ErrorContains(t, err, "404")
	require.EqualValues(t, 3, fake.calls.Load())
	require.Equal(t, 1, g.Len())

	// A full cache still serves, without keeping.
	small := NewCachingGetter(fake, 1)
	_, err = small.Get("https://kds/a")
	require.NoError(t, err)
	_, err = small.Get("https://kds/missing")
	require.Error(t, err)
	require.Equal(t, 1, small.Len())
}

func TestChainCache(t *testing.T) {
	chip := newFakeChip(t, goodTCB)
	v, err := NewVerifier(Config{TrustedRoots: chip.roots()})
	require.NoError(t, err)
	ev := chip.evidence(t, reportOpts{})
	opts := attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow}
	_, err = v.Verify(context.Background(), ev, opts)
	require.NoError(t, err)
	_, ok := v.chains.get(chip.chip.VCEK().Raw, abi.VcekReportSigner, testNow)
	require.True(t, ok, "verified chain is cached")

	// A cached chain still has its signature checked ...
	bad := append([]byte(nil), ev...)
	bad[0x90] ^= 1
	_, err = v.Verify(context.Background(), bad, opts)
	require.Equal(t, attestation.CheckSignature, attestation.FailedCheck(err))
	// ... and is not used outside its validity.
	opts.Now = chip.chip.VCEK().NotAfter.Add(time.Hour)
	_, err = v.Verify(context.Background(), ev, opts)
	require.Equal(t, attestation.CheckTrustedRoot, attestation.FailedCheck(err))
}

func TestNewVerifierConfigErrors(t *testing.T) {
	tests := []struct {
		cfg     Config
		wantErr string
	}{
		{Config{Product: "Rome"}, `product "Rome"`},
		{Config{MinimumTCB: kds.TCBParts{SnpSpl: 200}}, "minimum TCB"},
		{Config{MinimumLaunchTCB: ptr(kds.TCBParts{BlSpl: 128})}, "minimum launch TCB"},
	}
	for _, tc := range tests {
		_, err := NewVerifier(tc.cfg)
		require.ErrorContains(t, err, tc.wantErr)
	}
}

func TestDefaultRoots(t *testing.T) {
	roots, err := DefaultRoots()
	require.NoError(t, err)
	for _, line := range []string{Milan, Genoa, Turin} {
		require.Len(t, roots[line], 1, line)
		pc := roots[line][0].ProductCerts
		require.Equal(t, "ARK-"+line, pc.Ark.Subject.CommonName)
		require.Equal(t, "SEV-"+line, pc.Ask.Subject.CommonName)
		require.Equal(t, "SEV-VLEK-"+line, pc.Asvk.Subject.CommonName)
	}
	_, err = RootsFromPEM(Milan, []byte("not pem"))
	require.Error(t, err)
}
