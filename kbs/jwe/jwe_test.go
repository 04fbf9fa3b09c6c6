package jwe

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/require"
)

func jwkJSON(t *testing.T, pub any, alg string) []byte {
	t.Helper()
	b, err := (&jose.JSONWebKey{Key: pub, Algorithm: alg}).MarshalJSON()
	require.NoError(t, err)
	return b
}

// TestRoundTrip encrypts to RSA and EC keys and checks the flattened
// serialization has exactly Trustee's members and a protected header with
// the right alg/enc (and epk for ECDH-ES).
func TestRoundTrip(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	for name, tc := range map[string]struct {
		priv, pub any
		alg       string
	}{
		"RSA-OAEP-256":        {rsaKey, &rsaKey.PublicKey, "RSA-OAEP-256"},
		"ECDH-ES+A256KW P256": {p256, &p256.PublicKey, "ECDH-ES+A256KW"},
		"ECDH-ES+A256KW P384": {p384, &p384.PublicKey, "ECDH-ES+A256KW"},
	} {
		t.Run(name, func(t *testing.T) {
			k, err := ParseKey(jwkJSON(t, tc.pub, tc.alg))
			require.NoError(t, err)
			out, err := Encrypt(k, []byte("secret value"))
			require.NoError(t, err)

			var members map[string]string
			require.NoError(t, json.Unmarshal(out, &members))
			keys := []string{}
			for k := range members {
				keys = append(keys, k)
			}
			require.ElementsMatch(t, []string{"protected", "encrypted_key", "iv", "ciphertext", "tag"}, keys)
			hdr, err := base64.RawURLEncoding.DecodeString(members["protected"])
			require.NoError(t, err)
			var h map[string]any
			require.NoError(t, json.Unmarshal(hdr, &h))
			require.Equal(t, tc.alg, h["alg"])
			require.Equal(t, "A256GCM", h["enc"])
			if tc.alg == "ECDH-ES+A256KW" {
				require.Contains(t, h, "epk")
			}

			pt, err := Decrypt(out, tc.priv)
			require.NoError(t, err)
			require.Equal(t, "secret value", string(pt))
		})
	}
}

func TestParseKeyRejects(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	for name, raw := range map[string][]byte{
		"empty":          nil,
		"null":           []byte("null"),
		"garbage":        []byte(`{"kty":"EC","crv":"P-256","x":"AA","y":"AA","alg":"ECDH-ES+A256KW"}`),
		"small RSA":      jwkJSON(t, &small.PublicKey, "RSA-OAEP-256"),
		"RSA1_5":         jwkJSON(t, &rsaKey.PublicKey, "RSA1_5"),
		"RSA no alg":     jwkJSON(t, &rsaKey.PublicKey, ""),
		"EC wrong alg":   jwkJSON(t, &ec.PublicKey, "ECDH-ES"),
		"private EC key": jwkJSON(t, ec, "ECDH-ES+A256KW"),
		"oct":            []byte(`{"kty":"oct","k":"AAAA","alg":"A256KW"}`),
	} {
		_, err := ParseKey(raw)
		require.ErrorIs(t, err, ErrUnsupportedKey, name)
	}
}
