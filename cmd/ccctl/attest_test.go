package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevtest "github.com/google/go-sev-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/attestation/sim"
)

// runAttest runs `ccctl attest <args>` in-process.
func runAttest(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{Name: "ccctl", Commands: []*cli.Command{attestCommand()}, Writer: &out, ErrWriter: &errOut}
	err = app.RunContext(context.Background(), append([]string{"ccctl", "attest"}, args...))
	return out.String(), errOut.String(), err
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

const (
	tdxSampleNow        = "2023-07-01T01:00:00Z"
	tdxSampleMRTD       = "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb"
	tdxSampleReportData = "6c62dec1b8191749a31dab490be532a35944dea47caef1f980863993d9899545eb7406a38d1eed313b987a467dacead6f0c87a6d766c66f6f29f8acb281f1113"
)

func TestAttestVerifyTDX(t *testing.T) {
	dir := t.TempDir()
	quote := writeFile(t, dir, "quote.dat", testdata.RawQuote)

	out, errOut, err := runAttest(t, "verify", "--tee", "tdx", "--evidence", quote, "--now", tdxSampleNow)
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	for _, k := range []string{"tee", "measurement", "mr_td", "rtmr", "mr_config_id", "report_data"} {
		require.Contains(t, got, k)
	}
	require.Equal(t, "tdx", got["tee"])
	require.Equal(t, tdxSampleMRTD, got["mr_td"])
	require.Len(t, got["rtmr"], 4)
	require.Equal(t, false, got["report_data_checked"])
	require.Contains(t, errOut, "REPORT_DATA was not checked")
	require.Contains(t, errOut, "TCB status and QE identity were not checked")

	// With REPORT_DATA and reference values.
	refs := writeFile(t, dir, "refs.json", []byte(`{"measurement": ["`+strings.ToUpper(tdxSampleMRTD)+`"]}`))
	out, _, err = runAttest(t, "verify", "--tee", "tdx", "--evidence", quote, "--now", tdxSampleNow,
		"--report-data", tdxSampleReportData, "--reference-values", refs)
	require.NoError(t, err)
	require.Contains(t, out, `"report_data_checked": true`)

	// A tampered byte fails, naming the check; nothing on stdout.
	bad := append([]byte(nil), testdata.RawQuote...)
	bad[0x30+0x88] ^= 1
	out, errOut, err = runAttest(t, "verify", "--tee", "tdx", "--evidence", writeFile(t, dir, "bad.dat", bad), "--now", tdxSampleNow)
	require.ErrorContains(t, err, "check signature failed")
	require.Empty(t, out)
	// No note about skipped checks after a failure: it would read as the cause.
	require.NotContains(t, errOut, "note:")

	// Unparsable evidence: the parse error only, no notes.
	_, errOut, err = runAttest(t, "verify", "--tee", "tdx", "--evidence", writeFile(t, dir, "short.dat", []byte("not a quote")), "--now", tdxSampleNow)
	require.ErrorContains(t, err, "check parse failed")
	require.NotContains(t, errOut, "note:")

	// Wrong REPORT_DATA.
	_, _, err = runAttest(t, "verify", "--tee", "tdx", "--evidence", quote, "--now", tdxSampleNow, "--report-data", "00")
	require.ErrorContains(t, err, "check report_data failed")

	// Measurement not in the reference values (cc-kbs document form).
	doc := writeFile(t, dir, "doc.json", []byte(`{"tdx": {"measurements": ["`+strings.Repeat("ab", 48)+`"]}}`))
	_, _, err = runAttest(t, "verify", "--tee", "tdx", "--evidence", quote, "--now", tdxSampleNow, "--reference-values", doc)
	require.ErrorContains(t, err, "check measurement failed: measurement "+tdxSampleMRTD+" is not among the 1 reference values")

	// The cc-kbs document's TEE_TCB_SVN floor applies.
	doc = writeFile(t, dir, "doc2.json", []byte(`{"tdx": {"measurements": ["`+tdxSampleMRTD+`"], "min_tee_tcb_svn": "03000500000000000000000000000000"}}`))
	_, _, err = runAttest(t, "verify", "--tee", "tdx", "--evidence", quote, "--now", tdxSampleNow, "--reference-values", doc)
	require.ErrorContains(t, err, "check tee_tcb_svn failed")

	_, _, err = runAttest(t, "verify", "--tee", "tdx", "--evidence", quote, "--now", "yesterday")
	require.ErrorContains(t, err, "--now \"yesterday\": want RFC 3339")
	_, _, err = runAttest(t, "verify", "--tee", "tdx", "--evidence", quote, "--vcek", quote)
	require.ErrorContains(t, err, "--vcek applies to snp and sim evidence")
}

func TestAttestVerifySim(t *testing.T) {
	dir := t.TempDir()
	tcb := kds.TCBParts{BlSpl: 4, SnpSpl: 22, UcodeSpl: 213}
	s, err := sim.Generate(sim.GenerateOptions{TCB: tcb})
	require.NoError(t, err)
	chainDir := filepath.Join(dir, "chain")
	require.NoError(t, s.WriteDir(chainDir))
	root := filepath.Join(chainDir, sim.RootFile)
	rd := bytes.Repeat([]byte{0x42}, 48) // a SHA-384 digest; zero-padded to 64
	meas := bytes.Repeat([]byte{0x11}, 48)
	full, err := s.Evidence(sim.ReportOptions{ReportData: append(rd, make([]byte, 16)...), Measurement: meas})
	require.NoError(t, err)
	evidence := writeFile(t, dir, "sim.bin", full)

	out, _, err := runAttest(t, "verify", "--tee", "sim", "--evidence", evidence, "--sim-root", root, "--report-data", hex.EncodeToString(rd))
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	for _, k := range []string{"tee", "measurement", "host_data", "report_data", "policy", "reported_tcb", "chip_id"} {
		require.Contains(t, got, k)
	}
	require.Equal(t, "sim", got["tee"])
	require.Equal(t, "sim", got["product"])
	require.Equal(t, hex.EncodeToString(meas), got["measurement"])
	require.Equal(t, hex.EncodeToString(s.ChipID), got["chip_id"])

	// The bare report plus --vcek (PEM) verifies too.
	report := writeFile(t, dir, "report.bin", full[:abi.ReportSize])
	_, _, err = runAttest(t, "verify", "--tee", "sim", "--evidence", report, "--sim-root", root,
		"--vcek", filepath.Join(chainDir, sim.VCEKFile))
	require.NoError(t, err)
	_, _, err = runAttest(t, "verify", "--tee", "sim", "--evidence", report, "--sim-root", root)
	require.ErrorContains(t, err, "check certificates failed")

	// Without the sim root, sim evidence is refused.
	_, _, err = runAttest(t, "verify", "--tee", "sim", "--evidence", evidence)
	require.ErrorContains(t, err, "check trusted_root failed: sim evidence is accepted only when the configuration names the sim root")
	// As SNP, sim evidence does not chain to AMD.
	_, _, err = runAttest(t, "verify", "--tee", "snp", "--evidence", evidence)
	require.ErrorContains(t, err, "check trusted_root failed")
	// TCB floor.
	_, _, err = runAttest(t, "verify", "--tee", "sim", "--evidence", evidence, "--sim-root", root, "--min-tcb", "0xd518000000000004")
	require.ErrorContains(t, err, "check reported_tcb failed")
	_, _, err = runAttest(t, "verify", "--tee", "sim", "--evidence", evidence, "--sim-root", root, "--min-tcb", "lots")
	require.ErrorContains(t, err, "--min-tcb \"lots\"")
	// Debug guests need --allow-debug.
	dbg, err := s.Evidence(sim.ReportOptions{Policy: sim.DefaultPolicy | 1<<19})
	require.NoError(t, err)
	dbgFile := writeFile(t, dir, "dbg.bin", dbg)
	_, _, err = runAttest(t, "verify", "--tee", "sim", "--evidence", dbgFile, "--sim-root", root)
	require.ErrorContains(t, err, "check debug failed")
	out, _, err = runAttest(t, "verify", "--tee", "sim", "--evidence", dbgFile, "--sim-root", root, "--allow-debug")
	require.NoError(t, err)
	require.Contains(t, out, `"debug": true`)
	// Truncated evidence.
	_, _, err = runAttest(t, "verify", "--tee", "sim", "--evidence", writeFile(t, dir, "short.bin", full[:100]), "--sim-root", root)
	require.ErrorContains(t, err, "check parse failed")
}

func TestAttestVerifySNPFakeChainIsUntrusted(t *testing.T) {
	dir := t.TempDir()
	signer, err := sevtest.DefaultTestOnlyCertChain("Milan-B1", time.Now().Add(-time.Hour))
	require.NoError(t, err)
	r := &spb.Report{
		Version: 2, Policy: 0x30000, SignatureAlgo: abi.SignEcdsaP384Sha384,
		ReportData: make([]byte, 64), Measurement: make([]byte, 48), HostData: make([]byte, 32),
		FamilyId: make([]byte, 16), ImageId: make([]byte, 16), IdKeyDigest: make([]byte, 48),
		AuthorKeyDigest: make([]byte, 48), ReportId: make([]byte, 32), ReportIdMa: make([]byte, 32),
		ChipId: make([]byte, 64), Signature: make([]byte, abi.SignatureSize),
	}
	raw, err := abi.ReportToAbiBytes(r)
	require.NoError(t, err)
	rr, ss, err := signer.Sign(abi.SignedComponent(raw))
	require.NoError(t, err)
	require.NoError(t, abi.SetSignature(rr, ss, raw))
	report := writeFile(t, dir, "report.bin", raw)
	vcek := writeFile(t, dir, "vcek.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: signer.Vcek.Raw}))
	vcekDER := writeFile(t, dir, "vcek.der", signer.Vcek.Raw)

	// go-sev-guest's test-only chain is not AMD's: the check names the root.
	for _, v := range []string{vcek, vcekDER} {
		_, _, err = runAttest(t, "verify", "--tee", "snp", "--evidence", report, "--vcek", v)
		require.ErrorContains(t, err, "check trusted_root failed: VCEK certificate")
		require.ErrorContains(t, err, "does not chain to a trusted Milan root")
	}
	_, _, err = runAttest(t, "verify", "--tee", "snp", "--evidence", report)
	require.ErrorContains(t, err, "check certificates failed: no VCEK found")
	_, _, err = runAttest(t, "verify", "--tee", "sgx", "--evidence", report)
	require.ErrorContains(t, err, `--tee "sgx": want snp, tdx or sim`)
}
