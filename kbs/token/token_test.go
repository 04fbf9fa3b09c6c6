package token

import (
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/kbs/ear"
)

func TestIssueVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	key, err := GenerateKey()
	require.NoError(t, err)
	s, err := NewSigner(key, Options{Issuer: "cc-kbs", TTL: time.Minute, Now: func() time.Time { return now }})
	require.NoError(t, err)
	c := &Claims{Submods: map[string]ear.Appraisal{Submod: {
		Status:      ear.StatusAffirming,
		TrustVector: ear.TrustVector{"executables": 3},
		AnnotatedEvidence: map[string]any{KeyRuntimeDataClaims: map[string]any{
			"nonce": "n", KeyTEEPubKey: map[string]string{"kty": "EC", "crv": "P-256"}}},
	}}}
	tok, payload, exp, err := s.Issue(c)
	require.NoError(t, err)
	require.Equal(t, now.Add(time.Minute), exp)
	got, err := s.Verify(tok)
	require.NoError(t, err)
	require.Equal(t, payload, got)
	pub, err := TEEPubKey(got)
	require.NoError(t, err)
	require.JSONEq(t, `{"kty":"EC","crv":"P-256"}`, string(pub))
	// The protected header is {"alg":"ES256","jwk":<signer key>,"typ":"JWT"}
	// and the token verifies with that embedded key.
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	require.NoError(t, err)
	h := jws.Signatures[0].Protected
	require.Equal(t, "ES256", h.Algorithm)
	require.Equal(t, "JWT", h.ExtraHeaders[jose.HeaderType])
	require.NotNil(t, h.JSONWebKey)
	require.True(t, h.JSONWebKey.IsPublic())
	_, err = jws.Verify(h.JSONWebKey)
	require.NoError(t, err)
	m, err := DecodePayload(got)
	require.NoError(t, err)
	require.Equal(t, ear.Profile, m["eat_profile"])

	other, _ := GenerateKey()
	s2, _ := NewSigner(other, Options{Issuer: "cc-kbs", Now: func() time.Time { return now }})
	_, err = s2.Verify(tok)
	require.ErrorIs(t, err, ErrInvalid, "another KBS's key")

	parts := strings.Split(tok, ".")
	_, err = s.Verify(parts[0] + "." + parts[1] + "A." + parts[2])
	require.ErrorIs(t, err, ErrInvalid, "tampered payload")

	now = now.Add(2 * time.Minute)
	_, err = s.Verify(tok)
	require.ErrorIs(t, err, ErrInvalid, "expired")
	require.Contains(t, err.Error(), "expired")

	_, err = TEEPubKey([]byte(`{"submods":{}}`))
	require.ErrorIs(t, err, ErrInvalid)
}
