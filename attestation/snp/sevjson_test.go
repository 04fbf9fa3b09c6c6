package snp

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
)

// TestSevJSONRoundTrip converts fake-signed go-sev-guest evidence to the
// JSON guest-components sends and back, checks the document has the sev
// crate's shape, and verifies the decoded evidence end to end.
func TestSevJSONRoundTrip(t *testing.T) {
	chip := newFakeChip(t, goodTCB)
	ev := chip.evidence(t, reportOpts{reportData: wantReportData()})
	doc, err := EncodeSevJSON(ev)
	require.NoError(t, err)

	// The sev crate's serde shape, member by member.
	var shape struct {
		Report    map[string]json.RawMessage   `json:"attestation_report"`
		CertChain []map[string]json.RawMessage `json:"cert_chain"`
	}
	require.NoError(t, json.Unmarshal(doc, &shape))
	for _, k := range []string{"version", "guest_svn", "policy", "family_id", "image_id", "vmpl", "sig_algo", "current_tcb",
		"plat_info", "key_info", "report_data", "measurement", "host_data", "id_key_digest", "author_key_digest",
		"report_id", "report_id_ma", "reported_tcb", "cpuid_fam_id", "cpuid_mod_id", "cpuid_step", "chip_id",
		"committed_tcb", "current", "committed", "launch_tcb", "launch_mit_vector", "current_mit_vector", "signature"} {
		require.Contains(t, shape.Report, k)
	}
	require.Len(t, shape.Report, 29)
	var rd []int
	require.NoError(t, json.Unmarshal(shape.Report["report_data"], &rd))
	require.Len(t, rd, 64)
	require.JSONEq(t, `{"fmc":null,"bootloader":4,"tee":0,"snp":22,"microcode":213}`, string(shape.Report["reported_tcb"]))
	require.JSONEq(t, `null`, string(shape.Report["cpuid_fam_id"])) // a version 2 report
	var sig struct{ R, S []int }
	require.NoError(t, json.Unmarshal(shape.Report["signature"], &sig))
	require.Len(t, sig.R, 72)
	require.Len(t, sig.S, 72)
	var types []string
	for _, e := range shape.CertChain {
		var ct string
		if json.Unmarshal(e["cert_type"], &ct) == nil { // else {"OTHER": uuid}
			types = append(types, ct)
		}
	}
	require.Contains(t, types, "VCEK")

	back, err := DecodeSevJSON(doc)
	require.NoError(t, err)
	require.Equal(t, ev[:ReportSize], back[:ReportSize], "the rebuilt report must be the signed bytes")

	v, err := NewVerifier(Config{TrustedRoots: chip.roots(), MinimumTCB: floorTCB})
	require.NoError(t, err)
	claims, err := v.Verify(context.Background(), back, attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow})
	require.NoError(t, err)
	require.Equal(t, Milan, claims.Product)

	// Byte arrays as hex strings are accepted too.
	var generic map[string]any
	require.NoError(t, json.Unmarshal(doc, &generic))
	generic["attestation_report"].(map[string]any)["measurement"] = "3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e"
	hexDoc, _ := json.Marshal(generic)
	back2, err := DecodeSevJSON(hexDoc)
	require.NoError(t, err)
	require.Equal(t, ev[:ReportSize], back2[:ReportSize])
}

func TestSevJSONErrors(t *testing.T) {
	chip := newFakeChip(t, goodTCB)
	ev := chip.evidence(t, reportOpts{reportData: wantReportData()})
	doc, err := EncodeSevJSON(ev)
	require.NoError(t, err)
	v, err := NewVerifier(Config{TrustedRoots: chip.roots()})
	require.NoError(t, err)

	edit := func(f func(r map[string]any)) []byte {
		var m map[string]any
		require.NoError(t, json.Unmarshal(doc, &m))
		f(m["attestation_report"].(map[string]any))
		b, _ := json.Marshal(m)
		return b
	}
	// A changed field no longer matches the signature.
	tampered := edit(func(r map[string]any) { r["guest_svn"] = 7 })
	raw, err := DecodeSevJSON(tampered)
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), raw, attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow})
	require.Equal(t, attestation.CheckSignature, attestation.FailedCheck(err))

	_, err = DecodeSevJSON(edit(func(r map[string]any) { r["measurement"] = []int{1, 2, 3} }))
	require.EqualError(t, err, "SNP evidence JSON attestation_report.measurement has 3 bytes, want 48")
	_, err = DecodeSevJSON(edit(func(r map[string]any) { r["chip_id"] = []int{300} }))
	require.ErrorContains(t, err, "byte array element 0 is 300: want 0-255")
	_, err = DecodeSevJSON([]byte(`{"cert_chain": []}`))
	require.ErrorContains(t, err, `SNP evidence JSON has no "attestation_report"`)
	var m map[string]any
	require.NoError(t, json.Unmarshal(doc, &m))
	m["cert_chain"] = []any{map[string]any{"cert_type": "PEK", "data": []int{}}}
	badType, _ := json.Marshal(m)
	_, err = DecodeSevJSON(badType)
	require.ErrorContains(t, err, "cert_type \"PEK\" is not VCEK, VLEK, ASK, ARK, CRL, Empty")
	require.True(t, IsSevJSON(doc))
	require.False(t, IsSevJSON([]byte(`{"quote": "AAAA"}`)))
}
