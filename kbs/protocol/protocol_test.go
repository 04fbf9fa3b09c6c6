package protocol

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckVersion(t *testing.T) {
	require.NoError(t, CheckVersion("0.4.0"))
	require.NoError(t, CheckVersion("0.4.7"))
	for _, v := range []string{"", "0.1.0", "0.3.0", "1.4.0", "0.4", "0.4.x", "v0.4.0"} {
		require.Error(t, CheckVersion(v), v)
	}
}

func TestSelectHash(t *testing.T) {
	alg, extra, err := SelectHash(json.RawMessage(`""`))
	require.NoError(t, err)
	require.Equal(t, HashSHA384, alg)
	require.Equal(t, "", extra)

	alg, extra, err = SelectHash(json.RawMessage(`{"supported-hash-algorithms":["Sha256","sha512"]}`))
	require.NoError(t, err)
	require.Equal(t, HashSHA512, alg)
	require.Equal(t, map[string]string{ExtraSelectedHashAlgorithm: "sha512"}, extra)

	alg, _, err = SelectHash(json.RawMessage(`{"supported-hash-algorithms":["sha256","sha384","sha512"]}`))
	require.NoError(t, err)
	require.Equal(t, HashSHA384, alg)

	_, _, err = SelectHash(json.RawMessage(`{"supported-hash-algorithms":["md5"]}`))
	require.Error(t, err)
	_, _, err = SelectHash(json.RawMessage(`{"supported-hash-algorithms":"sha384"}`))
	require.Error(t, err)
}

func TestEvidenceRoundTrip(t *testing.T) {
	raw := []byte{1, 2, 3, 250, 251}
	got, err := DecodeEvidence(EncodeEvidence(raw))
	require.NoError(t, err)
	require.Equal(t, raw, got)

	got, err = DecodeEvidence(json.RawMessage(`"AQID-vs"`)) // URL alphabet, bare string
	require.NoError(t, err)
	require.Equal(t, raw, got)

	for _, bad := range []string{``, `null`, `42`, `[]`, `""`, `"!!"`, `{"primary_evidence":{"x":1}}`,
		`{"primary_evidence":"AQID","additional_evidence":"{\"gpu\":1}"}`, `{"primary_evidence":""}`} {
		_, err := DecodeEvidence(json.RawMessage(bad))
		require.Error(t, err, bad)
	}
}
