package admin

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/require"
)

func TestSignVerify(t *testing.T) {
	privPEM, pubPEM, err := GenerateKey()
	require.NoError(t, err)
	priv, err := ParsePrivateKey(privPEM)
	require.NoError(t, err)
	pub, err := ParsePublicKey(pubPEM)
	require.NoError(t, err)
	now := time.Unix(1_800_000_000, 0)
	v, err := NewVerifier(pub, Options{Now: func() time.Time { return now }})
	require.NoError(t, err)

	tok, err := Sign(priv, "alice", now, 5*time.Minute)
	require.NoError(t, err)
	c, err := v.Verify("Bearer " + tok)
	require.NoError(t, err)
	require.Equal(t, "alice", c.Subject)

	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	forged, err := Sign(otherPriv, "mallory", now, 5*time.Minute)
	require.NoError(t, err)
	expired, err := Sign(priv, "alice", now.Add(-time.Hour), 5*time.Minute)
	require.NoError(t, err)
	long, err := Sign(priv, "alice", now, 48*time.Hour)
	require.NoError(t, err)
	future, err := Sign(priv, "alice", now.Add(time.Hour), 5*time.Minute)
	require.NoError(t, err)
	parts := strings.Split(tok, ".")
	tampered := parts[0] + "." + parts[1] + "x." + parts[2]

	// A token without exp, and one with the wrong audience.
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, nil)
	noExp, _ := signer.Sign([]byte(`{"sub":"alice","aud":"cc-kbs-admin"}`))
	noExpTok, _ := noExp.CompactSerialize()
	wrongAud, _ := signer.Sign([]byte(`{"sub":"alice","aud":"other","exp":` + "1800000100" + `}`))
	wrongAudTok, _ := wrongAud.CompactSerialize()

	for name, h := range map[string]string{
		"missing":   "",
		"scheme":    "Basic " + tok,
		"empty":     "Bearer ",
		"garbage":   "Bearer not.a.jwt",
		"forged":    "Bearer " + forged,
		"expired":   "Bearer " + expired,
		"too long":  "Bearer " + long,
		"future":    "Bearer " + future,
		"tampered":  "Bearer " + tampered,
		"no exp":    "Bearer " + noExpTok,
		"wrong aud": "Bearer " + wrongAudTok,
	} {
		_, err := v.Verify(h)
		require.ErrorIs(t, err, ErrUnauthenticated, name)
	}
}
