package sim

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/snp"
	"github.com/google/go-sev-guest/abi"
	"github.com/stretchr/testify/require"
)

func TestReporterEvidenceVerifies(t *testing.T) {
	s := genSigner(t)
	dir := filepath.Join(t.TempDir(), "chain")
	require.NoError(t, s.WriteDir(dir))
	fromDir, err := LoadReporter(dir)
	require.NoError(t, err)
	fromSigner, err := s.Reporter()
	require.NoError(t, err)
	require.Equal(t, s.ChipID, fromDir.ChipID)
	require.Equal(t, s.TCB, fromDir.TCB)

	// The identity blob round-trips, and is written 0600.
	path := filepath.Join(t.TempDir(), "identity.pem")
	require.NoError(t, fromDir.WriteIdentity(path))
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	r, err := ParseReporterPEM(b)
	require.NoError(t, err)
	require.Equal(t, fromDir.VCEK.Raw, r.VCEK.Raw)

	v, err := NewVerifier(Config{RootPEM: s.RootPEM(), MinimumTCB: floorTCB})
	require.NoError(t, err)
	meas := bytes.Repeat([]byte{0x33}, abi.MeasurementSize)
	host := bytes.Repeat([]byte{0x44}, abi.HostDataSize)
	for name, rep := range map[string]*Reporter{"dir": fromDir, "signer": fromSigner, "pem": r} {
		ev, err := rep.Evidence(ReportOptions{Measurement: meas, HostData: host, ReportData: reportData()})
		require.NoError(t, err, name)
		parsed, err := snp.Parse(ev)
		require.NoError(t, err, name)
		require.Len(t, parsed.Certs.Entries, 1, "%s: the cert table holds only the VCEK", name)
		claims, err := v.Verify(context.Background(), ev, attestation.VerifyOptions{ReportData: reportData(), HostData: host})
		require.NoError(t, err, name)
		require.Equal(t, hex.EncodeToString(meas), claims.Measurement, name)
		require.Equal(t, attestation.TEESim, claims.TEE)
	}

	// Same layout as the Signer's report: only the signature differs.
	a, err := s.Report(ReportOptions{Measurement: meas, ReportData: reportData()})
	require.NoError(t, err)
	c, err := fromDir.Report(ReportOptions{Measurement: meas, ReportData: reportData()})
	require.NoError(t, err)
	require.Equal(t, abi.SignedComponent(a), abi.SignedComponent(c))

	// Evidence from another chain's reporter fails against this root.
	other, err := genSigner(t).Reporter()
	require.NoError(t, err)
	ev, err := other.Evidence(ReportOptions{ReportData: reportData()})
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), ev, attestation.VerifyOptions{ReportData: reportData()})
	require.ErrorIs(t, err, attestation.ErrEvidenceInvalid)
}

func TestReporterErrors(t *testing.T) {
	s := genSigner(t)
	r, err := s.Reporter()
	require.NoError(t, err)
	_, err = r.Evidence(ReportOptions{ReportedTCB: &lowTCB})
	require.ErrorContains(t, err, "differs from the VCEK's TCB")

	other := genSigner(t)
	_, err = NewReporter(r.VCEK, other.vcekKey)
	require.ErrorContains(t, err, "does not match the VCEK certificate")

	_, err = ParseReporterPEM(certPEM(r.VCEK))
	require.ErrorContains(t, err, "found certificate=true key=false")
	_, err = ParseReporterPEM([]byte("junk"))
	require.ErrorContains(t, err, "not PEM")
	b, err := r.MarshalPEM()
	require.NoError(t, err)
	_, err = ParseReporterPEM(append(b, certPEM(r.VCEK)...))
	require.ErrorContains(t, err, `repeated PEM block "CERTIFICATE"`)

	_, err = LoadReporter(t.TempDir())
	require.ErrorContains(t, err, "vcek.pem")
}
