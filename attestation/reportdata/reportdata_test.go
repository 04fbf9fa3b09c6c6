package reportdata

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/hex"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/require"
)

// testECKey is the P-256 public key of the private scalar 0x0102...20, with
// "use" and "kid" that must not reach the hash.
const testECKey = `{"kty":"EC","crv":"P-256","x":"UVw9brnjlrkE0_7Kf1T9zQzB6Ze_N13KUVrQpsO0A18",` +
	`"y":"RTa-OlDzGPv5pUdZAqIhUCvvDVfgjFOyzApW8X2fk1Q","use":"enc","kid":"1","alg":"ECDH-ES+A256KW"}`

const testNonce = "3q2+7w8fHy8vPz9PT19fb29/f4+Pn5+vr7+/z8/f3+8="

// wantCanonical was written by hand following RFC 8785; the digests below
// were computed from it with coreutils sha384sum / sha256sum.
const wantCanonical = `{"additional-evidence":"","nonce":"3q2+7w8fHy8vPz9PT19fb29/f4+Pn5+vr7+/z8/f3+8=",` +
	`"tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC",` +
	`"x":"UVw9brnjlrkE0_7Kf1T9zQzB6Ze_N13KUVrQpsO0A18","y":"RTa-OlDzGPv5pUdZAqIhUCvvDVfgjFOyzApW8X2fk1Q"}}`

const (
	wantSHA384 = "dc2e2bb237e4f7bac0d09da613e3f4cddd1dbcedcd35a8001020b72c2f079d9ee51ffd83c4576587d8da4ac63fe45316"
	wantSHA256 = "1e4054530f7d79b3792c768d6d324819a284e0bdf6e582015fcad48da2edb43c"
)

func ecKey(t *testing.T) *jose.JSONWebKey {
	t.Helper()
	var k jose.JSONWebKey
	require.NoError(t, k.UnmarshalJSON([]byte(testECKey)))
	return &k
}

func TestCanonicalJSON(t *testing.T) {
	got, err := RuntimeData{Nonce: testNonce, TeePubKey: ecKey(t)}.CanonicalJSON()
	require.NoError(t, err)
	require.Equal(t, wantCanonical, string(got))
}

func TestRuntimeDataHashVectors(t *testing.T) {
	tests := []struct {
		alg  string
		want string
	}{
		{alg: "", want: wantSHA384 + strings.Repeat("00", 16)},
		{alg: "sha384", want: wantSHA384 + strings.Repeat("00", 16)},
		{alg: "SHA384", want: wantSHA384 + strings.Repeat("00", 16)},
		{alg: "sha256", want: wantSHA256 + strings.Repeat("00", 32)},
	}
	for _, tc := range tests {
		got, err := RuntimeDataHash(testNonce, ecKey(t), tc.alg)
		require.NoError(t, err, tc.alg)
		require.Len(t, got, Size)
		require.Equal(t, tc.want, hex.EncodeToString(got), tc.alg)
	}
	got, err := RuntimeDataHash(testNonce, ecKey(t), "sha512")
	require.NoError(t, err)
	want := sha512.Sum512([]byte(wantCanonical))
	require.Equal(t, want[:], got, "SHA-512 fills REPORT_DATA exactly")
}

func TestBindsEveryInput(t *testing.T) {
	base, err := RuntimeDataHash(testNonce, ecKey(t), "")
	require.NoError(t, err)

	otherNonce, err := RuntimeDataHash(testNonce+"x", ecKey(t), "")
	require.NoError(t, err)
	require.NotEqual(t, base, otherNonce, "nonce must change REPORT_DATA")

	withEvidence, err := RuntimeData{Nonce: testNonce, TeePubKey: ecKey(t), AdditionalEvidence: `{"nvidia":{}}`}.Hash("")
	require.NoError(t, err)
	require.NotEqual(t, base, withEvidence, "additional evidence must change REPORT_DATA")

	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	other := &jose.JSONWebKey{Key: &priv.PublicKey, Algorithm: "ECDH-ES+A256KW"}
	otherKey, err := RuntimeDataHash(testNonce, other, "")
	require.NoError(t, err)
	require.NotEqual(t, base, otherKey, "tee-pubkey must change REPORT_DATA")

	// The private key hashes like its public half.
	fromPriv, err := RuntimeDataHash(testNonce, &jose.JSONWebKey{Key: priv, Algorithm: "ECDH-ES+A256KW"}, "")
	require.NoError(t, err)
	require.Equal(t, otherKey, fromPriv)
}

func TestRSAKeyFields(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	doc, err := RuntimeData{Nonce: "n", TeePubKey: &jose.JSONWebKey{Key: priv, Algorithm: "RSA-OAEP-256", KeyID: "dropped", Use: "enc"}}.CanonicalJSON()
	require.NoError(t, err)
	s := string(doc)
	require.True(t, strings.HasPrefix(s, `{"additional-evidence":"","nonce":"n","tee-pubkey":{"alg":"RSA-OAEP-256","e":"AQAB","kty":"RSA","n":"`), s)
	require.NotContains(t, s, "dropped")
	require.NotContains(t, s, `"d"`)
}

func TestStringEscaping(t *testing.T) {
	in := "q\"b\\s/\b\t\n\f\r\x01\x1f<>&\u2028é\xff"
	doc, err := RuntimeData{Nonce: "n", TeePubKey: ecKey(t), AdditionalEvidence: in}.CanonicalJSON()
	require.NoError(t, err)
	// RFC 8785: only '"', '\' and C0 controls are escaped; '/', '<', '>',
	// '&' and U+2028 are literal; invalid UTF-8 becomes U+FFFD.
	want := `{"additional-evidence":"q\"b\\s/\b\t\n\f\r\u0001\u001f<>&` + "\u2028é\ufffd" + `","nonce":"n",`
	require.True(t, strings.HasPrefix(string(doc), want), string(doc))
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name    string
		key     *jose.JSONWebKey
		alg     string
		wantErr string
	}{
		{name: "nil key", key: nil, wantErr: "tee-pubkey is missing"},
		{name: "no alg", key: func() *jose.JSONWebKey { k := ecKey(t); k.Algorithm = ""; return k }(), wantErr: `no "alg" member`},
		{name: "symmetric key", key: &jose.JSONWebKey{Key: []byte("0123456789abcdef"), Algorithm: "A128KW"}, wantErr: "has no public half"},
		{name: "unknown hash", key: ecKey(t), alg: "md5", wantErr: `unknown hash algorithm "md5"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := RuntimeDataHash(testNonce, tc.key, tc.alg)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}
