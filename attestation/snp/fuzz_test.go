package snp

import (
	"context"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/attestation"
	"github.com/google/go-sev-guest/abi"
)

// FuzzParseSNP feeds arbitrary bytes to Parse and, when they parse, to a
// whole Verifier: neither may panic, and every failure must be a named
// check.
func FuzzParseSNP(f *testing.F) {
	chip := newFakeChip(f, goodTCB)
	ev := chip.evidence(f, reportOpts{})
	report := chip.report(f, reportOpts{})
	f.Add(ev)
	f.Add(report)
	f.Add(chip.evidence(f, reportOpts{policy: debugPolicy}))
	f.Add(ev[:ReportSize+abi.CertTableEntrySize])
	f.Add(ev[:ReportSize+3*abi.CertTableEntrySize+7])
	f.Add(report[:ReportSize-1])
	f.Add([]byte{})
	f.Add([]byte(strings.Repeat("\x02\x00\x00\x00", ReportSize/4+40)))

	v, err := NewVerifier(Config{TrustedRoots: chip.roots()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		parsed, err := Parse(data)
		if err != nil {
			if strings.Contains(err.Error(), parserFault) {
				t.Fatalf("decoder panicked: %v", err)
			}
			return
		}
		if len(parsed.Raw) != ReportSize || parsed.Report == nil || parsed.Certs == nil {
			t.Fatalf("Parse returned an incomplete Evidence without error: raw %d bytes", len(parsed.Raw))
		}
		_, err = v.Verify(context.Background(), data, attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow})
		if err != nil && attestation.FailedCheck(err) == "" {
			t.Fatalf("Verify error names no check: %v", err)
		}
	})
}

// FuzzDecodeSevJSON feeds arbitrary documents to DecodeSevJSON: it must not
// panic, and what it returns must parse as raw evidence.
func FuzzDecodeSevJSON(f *testing.F) {
	chip := newFakeChip(f, goodTCB)
	doc, err := EncodeSevJSON(chip.evidence(f, reportOpts{}))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(doc)
	f.Add([]byte(`{"attestation_report": {"version": 2, "report_data": "00"}, "cert_chain": null}`))
	f.Add([]byte(`{"attestation_report": {}, "cert_chain": [{"cert_type": {"OTHER": "not-a-uuid"}, "data": [1]}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		raw, err := DecodeSevJSON(data)
		if err != nil {
			return
		}
		if len(raw) < ReportSize {
			t.Fatalf("DecodeSevJSON returned %d bytes without error", len(raw))
		}
		if _, err := Parse(raw); err != nil && strings.Contains(err.Error(), parserFault) {
			t.Fatalf("decoded evidence made the parser panic: %v", err)
		}
	})
}
