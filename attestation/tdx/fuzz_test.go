package tdx

import (
	"context"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/attestation"
	"github.com/google/go-tdx-guest/testing/testdata"
)

// FuzzParseTDX feeds arbitrary bytes to ParseQuote and, when they parse, to
// a whole Verifier: neither may panic, and every failure must be a named
// check.
func FuzzParseTDX(f *testing.F) {
	q := testdata.RawQuote
	f.Add(append([]byte(nil), q...))
	f.Add(append([]byte(nil), q[:0x3FC]...))
	f.Add(append([]byte(nil), q[:0x27C+0x86+0x1C2]...))
	f.Add(append([]byte(nil), q[:len(q)-1]...))
	f.Add(append(append([]byte(nil), q...), 0))
	f.Add([]byte{4, 0, 2, 0, 0x81, 0, 0, 0})
	f.Add([]byte{})

	v, err := NewVerifier(Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		quote, err := ParseQuote(data)
		if err != nil {
			if strings.Contains(err.Error(), parserFault) {
				t.Fatalf("decoder panicked: %v", err)
			}
			return
		}
		if quote.GetTdQuoteBody() == nil || quote.GetSignedData() == nil {
			t.Fatal("ParseQuote returned an incomplete quote without error")
		}
		_, err = v.Verify(context.Background(), data, attestation.VerifyOptions{SkipReportData: true, Now: sampleNow})
		if err != nil && attestation.FailedCheck(err) == "" {
			t.Fatalf("Verify error names no check: %v", err)
		}
	})
}

// FuzzDecodeEvidenceJSON: DecodeEvidenceJSON must not panic on any
// document.
func FuzzDecodeEvidenceJSON(f *testing.F) {
	f.Add([]byte(`{"cc_eventlog": null, "quote": "BAACAIEAAAA="}`))
	f.Add([]byte(`{"cc_eventlog": "AAAA", "quote": ""}`))
	f.Add([]byte(`{"quote": 5}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		q, err := DecodeEvidenceJSON(data)
		if err == nil && len(q) == 0 && IsEvidenceJSON(data) {
			t.Fatal("DecodeEvidenceJSON returned an empty quote without error")
		}
	})
}
