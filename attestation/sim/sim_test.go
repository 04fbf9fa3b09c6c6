package sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/snp"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	test "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/stretchr/testify/require"
)

var (
	testTCB  = kds.TCBParts{BlSpl: 4, SnpSpl: 22, UcodeSpl: 213}
	lowTCB   = kds.TCBParts{BlSpl: 3, SnpSpl: 8, UcodeSpl: 115}
	floorTCB = kds.TCBParts{BlSpl: 4, SnpSpl: 20, UcodeSpl: 200}
)

func genSigner(t testing.TB) *Signer {
	t.Helper()
	s, err := Generate(GenerateOptions{TCB: testTCB})
	require.NoError(t, err)
	return s
}

func reportData() []byte { return bytes.Repeat([]byte{0xab}, abi.ReportDataSize) }

func TestRoundTrip(t *testing.T) {
	s := genSigner(t)
	meas := bytes.Repeat([]byte{0x11}, abi.MeasurementSize)
	host := bytes.Repeat([]byte{0x22}, abi.HostDataSize)
	ev, err := s.Evidence(ReportOptions{Measurement: meas, HostData: host, ReportData: reportData()})
	require.NoError(t, err)

	v, err := NewVerifier(Config{RootPEM: s.RootPEM(), MinimumTCB: floorTCB})
	require.NoError(t, err)
	require.Equal(t, attestation.TEESim, v.TEE())
	claims, err := v.Verify(context.Background(), ev, attestation.VerifyOptions{ReportData: reportData(), HostData: host})
	require.NoError(t, err)
	tcb, _ := kds.ComposeTCBParts(testTCB)
	require.Equal(t, &attestation.Claims{
		TEE:          attestation.TEESim,
		Measurement:  hex.EncodeToString(meas),
		HostData:     hex.EncodeToString(host),
		ReportData:   hex.EncodeToString(reportData()),
		Policy:       DefaultPolicy,
		ReportedTCB:  uint64(tcb),
		CommittedTCB: uint64(tcb),
		LaunchTCB:    uint64(tcb),
		ChipID:       hex.EncodeToString(s.ChipID),
		Product:      Product,
	}, claims)

	// The report alone is SNP-format: go-sev-guest decodes it.
	raw, err := s.Report(ReportOptions{ReportData: reportData()})
	require.NoError(t, err)
	require.Len(t, raw, abi.ReportSize)
	pb, err := abi.ReportToProto(raw)
	require.NoError(t, err)
	require.EqualValues(t, 3, pb.GetVersion())
	require.Equal(t, reportData(), pb.GetReportData())
}

func TestWriteDirLoad(t *testing.T) {
	s := genSigner(t)
	dir := filepath.Join(t.TempDir(), "chain")
	require.NoError(t, s.WriteDir(dir))
	st, err := os.Stat(filepath.Join(dir, "vcek.key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	loaded, err := Load(dir)
	require.NoError(t, err)
	require.Equal(t, s.ChipID, loaded.ChipID)
	require.Equal(t, s.TCB, loaded.TCB)
	root, err := os.ReadFile(filepath.Join(dir, RootFile))
	require.NoError(t, err)
	require.Equal(t, s.RootPEM(), root)

	// Evidence signed by the loaded signer verifies against the written root.
	ev, err := loaded.Evidence(ReportOptions{ReportData: reportData()})
	require.NoError(t, err)
	v, err := NewVerifier(Config{RootPEM: root})
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), ev, attestation.VerifyOptions{ReportData: reportData()})
	require.NoError(t, err)

	// A key that does not match its certificate is refused.
	other := genSigner(t)
	otherDir := t.TempDir()
	require.NoError(t, other.WriteDir(otherDir))
	data, err := os.ReadFile(filepath.Join(otherDir, "vcek.key"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "vcek.key"), data, 0o600))
	_, err = Load(dir)
	require.ErrorContains(t, err, "does not match its certificate")

	_, err = Load(t.TempDir())
	require.ErrorContains(t, err, "load sim chain")
}

// fakeAMDEvidence is SNP evidence from go-sev-guest's fake AMD signer: the
// "real hardware" side of the cross-root tests.
func fakeAMDEvidence(t *testing.T) ([]byte, []byte) {
	t.Helper()
	signer, err := test.DefaultTestOnlyCertChain("Milan-B1", time.Now().Add(-time.Hour))
	require.NoError(t, err)
	r := &spb.Report{
		Version: 2, Policy: DefaultPolicy, SignatureAlgo: abi.SignEcdsaP384Sha384,
		ReportData: reportData(), Measurement: make([]byte, 48), HostData: make([]byte, 32),
		FamilyId: make([]byte, 16), ImageId: make([]byte, 16), IdKeyDigest: make([]byte, 48),
		AuthorKeyDigest: make([]byte, 48), ReportId: make([]byte, 32), ReportIdMa: make([]byte, 32),
		ChipId:    make([]byte, 64),
		Signature: make([]byte, abi.SignatureSize),
	}
	raw, err := abi.ReportToAbiBytes(r)
	require.NoError(t, err)
	rr, ss, err := signer.Sign(abi.SignedComponent(raw))
	require.NoError(t, err)
	require.NoError(t, abi.SetSignature(rr, ss, raw))
	table, err := signer.CertTableBytes()
	require.NoError(t, err)
	return append(raw, table...), snp.EncodeBundle(signer.Ask, signer.Ark)
}

func TestRootsDoNotCross(t *testing.T) {
	s := genSigner(t)
	simEv, err := s.Evidence(ReportOptions{ReportData: reportData()})
	require.NoError(t, err)
	amdEv, amdRoot := fakeAMDEvidence(t)
	opts := attestation.VerifyOptions{ReportData: reportData()}

	// The fake AMD evidence is valid against its own roots ...
	amdRoots, err := snp.RootsFromPEM(snp.Milan, amdRoot)
	require.NoError(t, err)
	fakeAMD, err := snp.NewVerifier(snp.Config{TrustedRoots: map[string][]*trust.AMDRootCerts{snp.Milan: amdRoots}})
	require.NoError(t, err)
	_, err = fakeAMD.Verify(context.Background(), amdEv, opts)
	require.NoError(t, err)

	realAMD, err := snp.NewVerifier(snp.Config{})
	require.NoError(t, err)
	simV, err := NewVerifier(Config{RootPEM: s.RootPEM()})
	require.NoError(t, err)
	otherSim, err := NewVerifier(Config{RootPEM: genSigner(t).RootPEM()})
	require.NoError(t, err)

	tests := []struct {
		name     string
		verifier attestation.Verifier
		evidence []byte
	}{
		{"sim evidence against AMD's real roots", realAMD, simEv},
		{"sim evidence against SNP (fake AMD) roots", fakeAMD, simEv},
		{"SNP evidence against the sim root", simV, amdEv},
		{"sim evidence against another sim root", otherSim, simEv},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			claims, err := tc.verifier.Verify(context.Background(), tc.evidence, opts)
			require.Nil(t, claims)
			require.ErrorIs(t, err, attestation.ErrEvidenceInvalid)
			require.Equal(t, attestation.CheckTrustedRoot, attestation.FailedCheck(err), "error: %v", err)
		})
	}
}

func TestRootNotConfigured(t *testing.T) {
	s := genSigner(t)
	ev, err := s.Evidence(ReportOptions{ReportData: reportData()})
	require.NoError(t, err)
	v, err := NewVerifier(Config{})
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), ev, attestation.VerifyOptions{ReportData: reportData()})
	require.ErrorIs(t, err, ErrRootNotConfigured)
	require.ErrorIs(t, err, attestation.ErrEvidenceInvalid)
	require.Equal(t, attestation.CheckTrustedRoot, attestation.FailedCheck(err))

	_, err = NewVerifier(Config{RootPEM: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")})
	require.ErrorContains(t, err, "configure sim verifier")
}

func TestSimChecks(t *testing.T) {
	s := genSigner(t)
	v, err := NewVerifier(Config{RootPEM: s.RootPEM(), MinimumTCB: floorTCB})
	require.NoError(t, err)
	tests := []struct {
		name      string
		report    ReportOptions
		opts      attestation.VerifyOptions
		wantCheck string
	}{
		{"wrong REPORT_DATA", ReportOptions{ReportData: make([]byte, 64)}, attestation.VerifyOptions{ReportData: reportData()}, attestation.CheckReportData},
		{"wrong HOST_DATA", ReportOptions{ReportData: reportData()}, attestation.VerifyOptions{ReportData: reportData(), HostData: bytes.Repeat([]byte{1}, 32)}, attestation.CheckHostData},
		{"debug", ReportOptions{ReportData: reportData(), Policy: DefaultPolicy | 1<<19}, attestation.VerifyOptions{ReportData: reportData()}, attestation.CheckDebug},
		{"reported TCB", ReportOptions{ReportData: reportData(), ReportedTCB: &lowTCB}, attestation.VerifyOptions{ReportData: reportData()}, attestation.CheckReportedTCB},
		{"committed TCB", ReportOptions{ReportData: reportData(), CommittedTCB: &lowTCB}, attestation.VerifyOptions{ReportData: reportData()}, attestation.CheckCommittedTCB},
		{"launch TCB", ReportOptions{ReportData: reportData(), LaunchTCB: &lowTCB}, attestation.VerifyOptions{ReportData: reportData()}, attestation.CheckLaunchTCB},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := s.Evidence(tc.report)
			require.NoError(t, err)
			_, err = v.Verify(context.Background(), ev, tc.opts)
			require.Equal(t, tc.wantCheck, attestation.FailedCheck(err), "error: %v", err)
		})
	}

	// A VCEK minted for a low TCB is consistent: without a floor it passes.
	open, err := NewVerifier(Config{RootPEM: s.RootPEM()})
	require.NoError(t, err)
	ev, err := s.Evidence(ReportOptions{ReportData: reportData(), ReportedTCB: &lowTCB})
	require.NoError(t, err)
	_, err = open.Verify(context.Background(), ev, attestation.VerifyOptions{ReportData: reportData()})
	require.NoError(t, err)
}

func TestReportOptionErrors(t *testing.T) {
	s := genSigner(t)
	_, err := s.Report(ReportOptions{Measurement: make([]byte, 47)})
	require.ErrorContains(t, err, "MEASUREMENT is 47 bytes, want 48")
	_, err = s.Report(ReportOptions{ReportedTCB: &kds.TCBParts{SnpSpl: 128}})
	require.ErrorContains(t, err, "SnpSpl")
	_, err = Generate(GenerateOptions{ChipID: []byte{1}})
	require.ErrorContains(t, err, "chip ID is 1 bytes, want 64")
}

// TestLaunchMeasurement pins the sim launch measurement for fixed inputs
// (computed independently with coreutils: sha256sum of each input, then
// sha384sum of the domain string and the three raw digests) and checks that
// MeasureFiles agrees and that each input changes it.
func TestLaunchMeasurement(t *testing.T) {
	dir := t.TempDir()
	kp, ip := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
	require.NoError(t, os.WriteFile(kp, []byte("kernel"), 0o644))
	require.NoError(t, os.WriteFile(ip, []byte("initrd"), 0o644))
	got, err := MeasureFiles(kp, ip, "console=hvc0")
	require.NoError(t, err)
	m := LaunchMeasurement(sha256.Sum256([]byte("kernel")), sha256.Sum256([]byte("initrd")), "console=hvc0")
	require.Equal(t, m, got)
	require.Equal(t, simMeasurementVector, hex.EncodeToString(got[:]))

	other := LaunchMeasurement(sha256.Sum256([]byte("kernel")), sha256.Sum256([]byte("initrd")), "console=hvc0 x")
	require.NotEqual(t, m, other)
	other = LaunchMeasurement(sha256.Sum256([]byte("kernel2")), sha256.Sum256([]byte("initrd")), "console=hvc0")
	require.NotEqual(t, m, other)
	_, err = MeasureFiles(filepath.Join(dir, "missing"), ip, "")
	require.ErrorContains(t, err, "kernel")
}

const simMeasurementVector = "00c06c01b46c4bb9e00afe1b80b807d9681d8019c74bb54e2db1212a100b2fece92296a7d005c1180a9d75412b7e8467"
