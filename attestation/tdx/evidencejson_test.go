package tdx

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
)

// TestEvidenceJSON decodes the document guest-components sends, built
// from the real Sapphire Rapids sample quote, and verifies the quote.
func TestEvidenceJSON(t *testing.T) {
	doc, err := json.Marshal(map[string]any{
		"cc_eventlog": base64.StdEncoding.EncodeToString([]byte("CCEL table bytes")),
		"quote":       base64.StdEncoding.EncodeToString(testdata.RawQuote),
	})
	require.NoError(t, err)
	require.True(t, IsEvidenceJSON(doc))
	q, err := DecodeEvidenceJSON(doc)
	require.NoError(t, err)
	require.Equal(t, testdata.RawQuote, q)

	v, err := NewVerifier(Config{})
	require.NoError(t, err)
	claims, err := v.Verify(context.Background(), q, attestation.VerifyOptions{SkipReportData: true, Now: sampleNow})
	require.NoError(t, err)
	require.Equal(t, attestation.TEETDX, claims.TEE)

	// cc_eventlog may be null.
	_, err = DecodeEvidenceJSON([]byte(`{"cc_eventlog": null, "quote": "` + base64.StdEncoding.EncodeToString(testdata.RawQuote) + `"}`))
	require.NoError(t, err)

	_, err = DecodeEvidenceJSON([]byte(`{"cc_eventlog": null}`))
	require.ErrorContains(t, err, `TDX evidence JSON has no "quote"`)
	_, err = DecodeEvidenceJSON([]byte(`{"quote": "not*base64"}`))
	require.ErrorContains(t, err, "decode TDX evidence JSON quote base64")
	require.False(t, IsEvidenceJSON([]byte(`{"attestation_report": {}}`)))
}
