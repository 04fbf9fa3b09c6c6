package protocol

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDecodeAttestationBody(t *testing.T) {
	raw := []byte{1, 2, 3, 0xfe}
	att := Attestation{
		InitData:    &InitData{Format: "toml", Body: "algorithm = \"sha256\""},
		RuntimeData: RuntimeData{Nonce: "bm9uY2U=", TEEPubKey: json.RawMessage(`{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":"AA","y":"AA"}`)},
		TEEEvidence: EncodeCompositeEvidence(raw, `{"gpu":"AAAA"}`),
	}
	body, err := json.Marshal(att)
	require.NoError(t, err)
	got, err := DecodeAttestationBody(body)
	require.NoError(t, err)
	require.NoError(t, got.EvidenceErr)
	require.Equal(t, att.InitData, got.InitData)
	require.Equal(t, att.RuntimeData.Nonce, got.RuntimeData.Nonce)
	require.JSONEq(t, string(att.RuntimeData.TEEPubKey), string(got.RuntimeData.TEEPubKey))
	require.Equal(t, &Evidence{Primary: raw, AdditionalEvidence: `{"gpu":"AAAA"}`}, got.Evidence)
	// The same as the two-step decoding.
	two, err := DecodeCompositeEvidence(att.TEEEvidence)
	require.NoError(t, err)
	require.Equal(t, two, got.Evidence)

	// Unknown members are ignored, at both levels; a bare base64 string
	// and a guest-components object are evidence too.
	got, err = DecodeAttestationBody([]byte(`{"x":[1,{"y":2}],"tee-evidence":{"z":null,"primary_evidence":"AQID"},"runtime-data":{"nonce":"n"}}`))
	require.NoError(t, err)
	require.Equal(t, []byte{1, 2, 3}, got.Evidence.Primary)
	got, err = DecodeAttestationBody([]byte(`{"tee-evidence":"AQID"}`))
	require.NoError(t, err)
	require.Equal(t, []byte{1, 2, 3}, got.Evidence.Primary)
	got, err = DecodeAttestationBody([]byte(`{"tee-evidence":{"primary_evidence":{"quote":"AQID"},"additional_evidence":""}}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"quote":"AQID"}`, string(got.Evidence.PrimaryJSON))

	// Malformed JSON.
	for _, b := range []string{"", "{", "[]", `"s"`, `{"tee-evidence":"AQID"} trailing`, `{"runtime-data":"x"}`,
		`{"tee-evidence":{"primary_evidence":}}`, `{"tee-evidence":[1,}`, `{"init-data":5}`} {
		_, err := DecodeAttestationBody([]byte(b))
		require.True(t, errors.Is(err, ErrMalformedJSON), "%q: %v", b, err)
	}
	// Well-formed, but no usable evidence: reported as EvidenceErr.
	for b, want := range map[string]string{
		`{}`:                     "tee-evidence is missing",
		`{"tee-evidence":null}`:  "tee-evidence is missing",
		`{"tee-evidence":[1,2]}`: "found an array",
		`{"tee-evidence":5}`:     "found float64",
		`{"tee-evidence":"%%%"}`: "decode tee-evidence base64",
		`{"tee-evidence":{"primary_evidence":5}}`:                               "found a number",
		`{"tee-evidence":{"primary_evidence":"AQID","additional_evidence":{}}}`: "additional_evidence must be a string",
	} {
		got, err := DecodeAttestationBody([]byte(b))
		require.NoError(t, err, b)
		require.ErrorContains(t, got.EvidenceErr, want, b)
		require.Nil(t, got.Evidence)
	}
}
