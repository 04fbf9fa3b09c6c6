package sealed

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeKBS is a cdh.ResourceGetter over a map.
type fakeKBS struct {
	res   map[string][]byte
	calls []string
}

func (f *fakeKBS) Resource(_ context.Context, uri string) ([]byte, error) {
	f.calls = append(f.calls, uri)
	v, ok := f.res[uri]
	if !ok {
		return nil, fmt.Errorf("resource %s: %w", uri, errdefs.ErrNotFound)
	}
	return v, nil
}

const (
	kid       = "kbs:///default/sealed-secret-key/1"
	secretURI = "kbs:///default/sealed-secret/db-password"
	value     = "s3cr3t-value"
)

// setup returns a signing key, a KBS holding its public JWK at kid and the
// secret value at secretURI, and a secret sealed with the key.
func setup(t *testing.T) (*ecdsa.PrivateKey, *fakeKBS, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	jwk, err := PublicJWK(key, kid)
	require.NoError(t, err)
	kbs := &fakeKBS{res: map[string][]byte{kid: jwk, secretURI: []byte(value)}}
	sec, err := NewVaultSecret(secretURI)
	require.NoError(t, err)
	s, err := Seal(sec, key, kid)
	require.NoError(t, err)
	return key, kbs, s
}

func TestIsSealed(t *testing.T) {
	assert.True(t, IsSealed("sealed.a.b.c"))
	assert.False(t, IsSealed("sealed"))
	assert.False(t, IsSealed("plain"))
	assert.False(t, IsSealed(" sealed.a.b.c"))
}

func TestSealUnseal(t *testing.T) {
	ctx := context.Background()
	_, kbs, s := setup(t)
	require.True(t, IsSealed(s))
	parts := strings.Split(s, ".")
	require.Len(t, parts, 4)
	hdr, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	assert.JSONEq(t, `{"alg":"ES256","kid":"`+kid+`"}`, string(hdr))
	pl, err := base64.RawURLEncoding.DecodeString(parts[2])
	require.NoError(t, err)
	assert.JSONEq(t, `{"version":"0.1.0","type":"vault","name":"`+secretURI+`","provider":"kbs","provider_settings":{},"annotations":{}}`, string(pl))

	v, err := Unseal(ctx, s, kbs)
	require.NoError(t, err)
	assert.Equal(t, value, string(v))
	assert.Equal(t, []string{kid, secretURI}, kbs.calls, "the key is fetched before the value")

	// A private JWK at kid (as guest-components' tests store) works too.
	key2, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	priv, err := jose.JSONWebKey{Key: key2, KeyID: kid}.MarshalJSON()
	require.NoError(t, err)
	kbs.res[kid] = priv
	sec, err := NewVaultSecret(secretURI)
	require.NoError(t, err)
	s2, err := Seal(sec, key2, kid)
	require.NoError(t, err)
	v, err = Unseal(ctx, s2, kbs)
	require.NoError(t, err)
	assert.Equal(t, value, string(v))
}

func TestUnsealRefuses(t *testing.T) {
	ctx := context.Background()
	key, kbs, s := setup(t)
	other, err := NewVaultSecret("kbs:///default/sealed-secret/other")
	require.NoError(t, err)
	otherSealed, err := Seal(other, key, kid)
	require.NoError(t, err)
	unsigned, err := SealUnsigned(Secret{Version: Version, Type: TypeVault, Name: secretURI, Provider: ProviderKBS})
	require.NoError(t, err)
	wrongKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	sec, err := NewVaultSecret(secretURI)
	require.NoError(t, err)
	byWrongKey, err := Seal(sec, wrongKey, kid)
	require.NoError(t, err)

	p := strings.Split(s, ".")
	op := strings.Split(otherSealed, ".")
	swapped := strings.Join([]string{p[0], p[1], op[2], p[3]}, ".")

	localKid := jwsWithKid(t, key, "test-key", `{"version":"0.1.0","type":"vault","name":"`+secretURI+`","provider":"kbs","provider_settings":{},"annotations":{}}`)
	envelope := jwsWithKid(t, key, kid, `{"version":"0.1.0","type":"envelope","provider":"kbs","key_id":"x","encrypted_key":"eA==","encrypted_data":"eA==","wrap_type":"A256GCM","iv":"eA==","provider_settings":{},"annotations":{}}`)
	aliyun := jwsWithKid(t, key, kid, `{"version":"0.1.0","type":"vault","name":"xxx","provider":"aliyun","provider_settings":{},"annotations":{}}`)
	v2 := jwsWithKid(t, key, kid, `{"version":"0.2.0","type":"vault","name":"`+secretURI+`","provider":"kbs"}`)
	badName := jwsWithKid(t, key, kid, `{"version":"0.1.0","type":"vault","name":"kbs:///default/../x","provider":"kbs"}`)
	missing := jwsWithKid(t, key, kid, `{"version":"0.1.0","type":"vault","name":"kbs:///default/sealed-secret/missing","provider":"kbs"}`)

	for _, tc := range []struct {
		name, s, want string
		class         func(error) bool
	}{
		{"not sealed", "secret", "not a sealed secret", errdefs.IsInvalidArgument},
		{"too few parts", "sealed.a.b", "has 2 dot-separated parts", errdefs.IsInvalidArgument},
		{"unsigned", unsigned, "parse sealed secret JWS", errdefs.IsInvalidArgument},
		{"payload swapped", swapped, "sealed secret signature does not verify with key " + kid, errdefs.IsPermissionDenied},
		{"signed by another key", byWrongKey, "sealed secret signature does not verify with key " + kid, errdefs.IsPermissionDenied},
		{"local kid", localKid, `kid "test-key" is not a kbs:// resource URI`, errdefs.IsNotImplemented},
		{"envelope", envelope, `type "envelope" is not supported`, errdefs.IsNotImplemented},
		{"other provider", aliyun, `provider "aliyun" is not supported`, errdefs.IsNotImplemented},
		{"version", v2, `version "0.2.0", want "0.1.0"`, errdefs.IsInvalidArgument},
		{"bad name", badName, "sealed secret name: parse resource URI", errdefs.IsInvalidArgument},
		{"value missing", missing, "fetch sealed secret value kbs:///default/sealed-secret/missing", errdefs.IsNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Unseal(ctx, tc.s, kbs)
			require.Error(t, err)
			t.Logf("error: %v", err)
			assert.ErrorContains(t, err, tc.want)
			assert.True(t, tc.class(err), "class of %v", err)
			assert.NotContains(t, err.Error(), value)
		})
	}

	t.Run("key missing", func(t *testing.T) {
		_, err := Unseal(ctx, s, &fakeKBS{res: map[string][]byte{secretURI: []byte(value)}})
		require.Error(t, err)
		assert.ErrorContains(t, err, "fetch sealed secret verification key "+kid)
		assert.True(t, errdefs.IsNotFound(err))
	})
	t.Run("key not P-256", func(t *testing.T) {
		_, err := Unseal(ctx, s, &fakeKBS{res: map[string][]byte{kid: []byte(`{"kty":"oct","k":"AAAA"}`), secretURI: []byte(value)}})
		require.Error(t, err)
		assert.ErrorContains(t, err, "want an EC P-256 JWK")
	})
}

// jwsWithKid seals payload (raw JSON) with key under kid, bypassing Seal's
// checks, to build secrets Seal would not make.
func jwsWithKid(t *testing.T, key *ecdsa.PrivateKey, kid, payload string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	require.NoError(t, err)
	jws, err := signer.Sign([]byte(payload))
	require.NoError(t, err)
	c, err := jws.CompactSerialize()
	require.NoError(t, err)
	return Prefix + c
}

func TestSkipVerification(t *testing.T) {
	ctx := context.Background()
	_, kbs, s := setup(t)
	u := Unsealer{Resources: kbs, SkipVerification: true}

	// CoCo's documented unsigned example (docs/SEALED_SECRET.md).
	coco := "sealed.fakejwsheader.ewogICAgInZlcnNpb24iOiAiMC4xLjAiLAogICAgInR5cGUiOiAidmF1bHQiLAogICAgIm5hbWUiOiAia2JzOi8vL2RlZmF1bHQvc2VhbGVkLXNlY3JldC90ZXN0IiwKICAgICJwcm92aWRlciI6ICJrYnMiLAogICAgInByb3ZpZGVyX3NldHRpbmdzIjoge30sCiAgICAiYW5ub3RhdGlvbnMiOiB7fQp9Cg.fakesignature"
	kbs.res["kbs:///default/sealed-secret/test"] = []byte("from-coco-example")
	v, err := u.Unseal(ctx, coco)
	require.NoError(t, err)
	assert.Equal(t, "from-coco-example", string(v))
	_, err = Unseal(ctx, coco, kbs)
	require.Error(t, err, "verification is on by default")

	unsigned, err := SealUnsigned(Secret{Version: Version, Type: TypeVault, Name: secretURI, Provider: ProviderKBS})
	require.NoError(t, err)
	v, err = u.Unseal(ctx, unsigned)
	require.NoError(t, err)
	assert.Equal(t, value, string(v))

	kbs.calls = nil
	v, err = u.Unseal(ctx, s)
	require.NoError(t, err, "signed secrets are accepted too")
	assert.Equal(t, value, string(v))
	assert.Equal(t, []string{secretURI}, kbs.calls, "no key is fetched")

	_, err = u.Unseal(ctx, "sealed.h.!!!.s")
	require.Error(t, err)
	assert.True(t, errdefs.IsInvalidArgument(err))
	assert.ErrorContains(t, err, "decode sealed secret payload: want base64url")
}

func TestUnsealEnv(t *testing.T) {
	ctx := context.Background()
	key, kbs, s := setup(t)
	env := []string{"PATH=/bin", "DB_PASSWORD=" + s, "EMPTY=", "NOEQUALS", "PLAIN=sealed-looking-but-not"}
	out, err := UnsealEnv(ctx, env, kbs)
	require.NoError(t, err)
	assert.Equal(t, []string{"PATH=/bin", "DB_PASSWORD=" + value, "EMPTY=", "NOEQUALS", "PLAIN=sealed-looking-but-not"}, out)
	assert.Equal(t, "DB_PASSWORD="+s, env[1], "the input is not modified")

	_, err = UnsealEnv(ctx, []string{"A=" + s, "BROKEN=sealed.x.y"}, kbs)
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.ErrorContains(t, err, "unseal environment variable BROKEN: ")
	assert.NotContains(t, err.Error(), value)

	nul := "kbs:///default/sealed-secret/binary"
	kbs.res[nul] = []byte("top\x00secret")
	sec, err := NewVaultSecret(nul)
	require.NoError(t, err)
	sn, err := Seal(sec, key, kid)
	require.NoError(t, err)
	_, err = UnsealEnv(ctx, []string{"BIN=" + sn}, kbs)
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.ErrorContains(t, err, "unseal environment variable BIN: the secret value contains a NUL byte")
	assert.NotContains(t, err.Error(), "secret\x00")
	assert.NotContains(t, err.Error(), "top")
}

func TestSealChecks(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	sec, err := NewVaultSecret(secretURI)
	require.NoError(t, err)
	_, err = Seal(sec, key, kid)
	assert.ErrorContains(t, err, "want an ECDSA P-256 key")
	_, err = NewVaultSecret("https://example/x")
	assert.True(t, errdefs.IsInvalidArgument(err))
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	_, err = Seal(sec, p256, "local-key")
	assert.ErrorContains(t, err, "seal secret: kid: parse resource URI")
}
