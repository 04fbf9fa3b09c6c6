package initdata

import (
	"crypto/sha256"
	"crypto/sha512"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/kbs/protocol"
)

const tomlBody = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\nkey1 = \"value1\"\n"

func TestParseDigestsRawBody(t *testing.T) {
	r, err := Parse(&protocol.InitData{Format: "toml", Body: tomlBody})
	require.NoError(t, err)
	want := sha256.Sum256([]byte(tomlBody))
	require.Equal(t, want[:], r.Digest)
	require.Equal(t, map[string]string{"key1": "value1"}, r.Data)
	require.Equal(t, want[:], Fit(r.Digest, FieldSize(attestation.TEESNP)))

	body384 := "algorithm = \"sha384\"\nversion = \"0.1.0\"\n[data]\n"
	r, err = Parse(&protocol.InitData{Format: "toml", Body: body384})
	require.NoError(t, err)
	w := sha512.Sum384([]byte(body384))
	require.Equal(t, w[:32], Fit(r.Digest, 32), "SNP HOST_DATA takes the first 32 bytes")
	require.Equal(t, w[:], Fit(r.Digest, FieldSize(attestation.TEETDX)))

	r, err = Parse(&protocol.InitData{Format: "json", Body: `{"version":"0.1.0","algorithm":"sha512","data":{}}`})
	require.NoError(t, err)
	require.Len(t, r.Digest, 64)
}

func TestParseRejects(t *testing.T) {
	for name, in := range map[string]protocol.InitData{
		"format":    {Format: "yaml", Body: tomlBody},
		"bad toml":  {Format: "toml", Body: "algorithm = "},
		"algorithm": {Format: "toml", Body: "algorithm = \"md5\"\n"},
		"version":   {Format: "toml", Body: "version = \"9\"\nalgorithm = \"sha256\"\n"},
	} {
		_, err := Parse(&in)
		require.ErrorIs(t, err, ErrInvalid, name)
	}
}
