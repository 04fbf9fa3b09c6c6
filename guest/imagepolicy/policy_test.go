package imagepolicy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newKey returns a fresh ECDSA P-256 key and the keyData (base64 of the
// PEM public key) that trusts it.
func newKey(t *testing.T) (*ecdsa.PrivateKey, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	pemPub, err := cryptoutils.MarshalPublicKeyToPEM(k.Public())
	require.NoError(t, err)
	return k, base64.StdEncoding.EncodeToString(pemPub)
}

func TestParse(t *testing.T) {
	_, keyData := newKey(t)
	_, keyData2 := newKey(t)
	good := fmt.Sprintf(`{
		"default": [{"type": "reject"}],
		"transports": {
			"docker": {
				"registry.example:5000/app": [{"type": "sigstoreSigned", "keyData": %q}],
				"registry.example:5000/multi": [{"type": "sigstoreSigned", "keyDatas": [%q, %q], "signedIdentity": {"type": "matchRepository"}}],
				"registry.example:5000/exact": [{"type": "sigstoreSigned", "keyData": %q, "signedIdentity": {"type": "exactRepository", "dockerRepository": "registry.example:5000/other"}}],
				"*.example.com": [{"type": "insecureAcceptAnything"}],
				"": [{"type": "reject"}]
			},
			"atomic": {"whatever": [{"type": "signedBy", "keyType": "GPGKeys"}]}
		}
	}`, keyData, keyData, keyData2, keyData)
	p, err := Parse([]byte(good))
	require.NoError(t, err)
	require.Len(t, p.Default, 1)
	assert.Equal(t, Reject, p.Default[0].Type)
	app := p.Docker["registry.example:5000/app"]
	require.Len(t, app, 1)
	assert.Equal(t, SigstoreSigned, app[0].Type)
	assert.Len(t, app[0].Keys, 1)
	assert.Equal(t, MatchRepoDigestOrExact, app[0].Identity.Type, "the default signedIdentity")
	assert.Len(t, p.Docker["registry.example:5000/multi"][0].Keys, 2)
	assert.Equal(t, MatchRepository, p.Docker["registry.example:5000/multi"][0].Identity.Type)
	assert.Equal(t, IdentityMatch{Type: ExactRepository, DockerRepository: "registry.example:5000/other"}, p.Docker["registry.example:5000/exact"][0].Identity)

	pemText, err := base64.StdEncoding.DecodeString(keyData)
	require.NoError(t, err)
	p, err = Parse(fmt.Appendf(nil, `{"default": [{"type": "sigstoreSigned", "keyData": %q}]}`, pemText))
	require.NoError(t, err, "PEM text as is is accepted too")
	assert.Len(t, p.Default[0].Keys, 1)

	for _, tc := range []struct {
		name, doc, want string
		class           func(error) bool
	}{
		{"not JSON", `{`, "parse image policy: want containers-policy.json", errdefs.IsInvalidArgument},
		{"unknown top-level field", `{"default": [{"type": "reject"}], "defaults": []}`, `unknown field "defaults"`, errdefs.IsInvalidArgument},
		{"no default", `{"transports": {}}`, `"default" is missing or empty`, errdefs.IsInvalidArgument},
		{"empty scope list", `{"default": [{"type": "reject"}], "transports": {"docker": {"a.b/c": []}}}`, `transports.docker["a.b/c"] is an empty list`, errdefs.IsInvalidArgument},
		{"scheme in scope", `{"default": [{"type": "reject"}], "transports": {"docker": {"docker://a.b/c": [{"type": "reject"}]}}}`, "without \"docker://\"", errdefs.IsInvalidArgument},
		{"bad wildcard", `{"default": [{"type": "reject"}], "transports": {"docker": {"a.*.com": [{"type": "reject"}]}}}`, `"*" is allowed only as a leading "*."`, errdefs.IsInvalidArgument},
		{"unknown type", `{"default": [{"type": "acceptEverything"}]}`, `default: requirement 0: unknown type "acceptEverything"`, errdefs.IsInvalidArgument},
		{"missing type", `{"default": [{}]}`, `"type" is missing`, errdefs.IsInvalidArgument},
		{"extra field on reject", `{"default": [{"type": "reject", "keyData": "x"}]}`, `reject takes no fields but has "keyData"`, errdefs.IsInvalidArgument},
		{"signedBy", `{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k"}]}`, "signedBy (GPG simple signing) is not supported", errdefs.IsNotImplemented},
		{"keyPath", `{"default": [{"type": "sigstoreSigned", "keyPath": "/etc/cosign.pub"}]}`, `field "keyPath": keyPath names a file, and the guest has no trusted files: embed the public key as keyData`, errdefs.IsNotImplemented},
		{"fulcio", `{"default": [{"type": "sigstoreSigned", "fulcio": {}}]}`, "keyless (Fulcio) verification is not supported", errdefs.IsNotImplemented},
		{"rekor", fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyData": %q, "rekorPublicKeyData": "eA=="}]}`, keyData), "Rekor transparency-log verification is not supported", errdefs.IsNotImplemented},
		{"unknown sigstore field", fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyData": %q, "keydata": "x"}]}`, keyData), `sigstoreSigned has unknown field "keydata"`, errdefs.IsInvalidArgument},
		{"no key", `{"default": [{"type": "sigstoreSigned"}]}`, "sigstoreSigned has no keyData", errdefs.IsInvalidArgument},
		{"both keyData and keyDatas", fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyData": %q, "keyDatas": [%q]}]}`, keyData, keyData), "both keyData and keyDatas", errdefs.IsInvalidArgument},
		{"keyData not base64", `{"default": [{"type": "sigstoreSigned", "keyData": "not base64!"}]}`, "sigstoreSigned keyData: decode base64", errdefs.IsInvalidArgument},
		{"keyData not PEM", `{"default": [{"type": "sigstoreSigned", "keyData": "aGVsbG8="}]}`, "no PEM public key found", errdefs.IsInvalidArgument},
		{"keyData private key", fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyDatas": [%q, %q]}]}`, keyData, base64.StdEncoding.EncodeToString([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))), `keyDatas[1]: parse PEM block "PRIVATE KEY"`, errdefs.IsInvalidArgument},
		{"remapIdentity", fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyData": %q, "signedIdentity": {"type": "remapIdentity", "prefix": "a", "signedPrefix": "b"}}]}`, keyData), "remapIdentity is not supported", errdefs.IsNotImplemented},
		{"exactReference without reference", fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyData": %q, "signedIdentity": {"type": "exactReference"}}]}`, keyData), `exactReference needs "dockerReference"`, errdefs.IsInvalidArgument},
		{"exactReference name only", fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyData": %q, "signedIdentity": {"type": "exactReference", "dockerReference": "a.b/c"}}]}`, keyData), `has no tag or digest`, errdefs.IsInvalidArgument},
		{"matchRepository with extra", fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyData": %q, "signedIdentity": {"type": "matchRepository", "dockerRepository": "a.b/c"}}]}`, keyData), `matchRepository does not take "dockerRepository"`, errdefs.IsInvalidArgument},
		{"unknown identity", fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyData": %q, "signedIdentity": {"type": "matchAll"}}]}`, keyData), `unknown type "matchAll"`, errdefs.IsInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			require.Error(t, err)
			t.Logf("error: %v", err)
			assert.ErrorContains(t, err, tc.want)
			assert.True(t, tc.class(err), "error class of %v", err)
		})
	}
}

func TestScope(t *testing.T) {
	p, err := Parse([]byte(`{
		"default": [{"type": "reject"}],
		"transports": {"docker": {
			"reg.example.com:5000/ns/app:v1": [{"type": "insecureAcceptAnything"}],
			"reg.example.com:5000/ns/app": [{"type": "insecureAcceptAnything"}],
			"reg.example.com:5000/ns": [{"type": "insecureAcceptAnything"}],
			"reg.example.com:5000": [{"type": "insecureAcceptAnything"}],
			"*.example.com": [{"type": "insecureAcceptAnything"}],
			"docker.io/library/busybox": [{"type": "insecureAcceptAnything"}]
		}}
	}`))
	require.NoError(t, err)
	for ref, want := range map[string]string{
		"reg.example.com:5000/ns/app:v1":                                `transports.docker["reg.example.com:5000/ns/app:v1"]`,
		"reg.example.com:5000/ns/app:v2":                                `transports.docker["reg.example.com:5000/ns/app"]`,
		"reg.example.com:5000/ns/app":                                   `transports.docker["reg.example.com:5000/ns/app"]`, // :latest
		"reg.example.com:5000/ns/other:v1":                              `transports.docker["reg.example.com:5000/ns"]`,
		"reg.example.com:5000/ns/deep/app:v1":                           `transports.docker["reg.example.com:5000/ns"]`,
		"reg.example.com:5000/top:v1":                                   `transports.docker["reg.example.com:5000"]`,
		"reg.example.com:6000/ns/app:v1":                                `transports.docker["*.example.com"]`,
		"other.example.com/x:y":                                         `transports.docker["*.example.com"]`,
		"busybox":                                                       `transports.docker["docker.io/library/busybox"]`,
		"index.docker.io/library/busybox:1.36":                          `transports.docker["docker.io/library/busybox"]`,
		"example.org/x:y":                                               "default",
		"reg.example.com:5000/ns/app@sha256:" + strings.Repeat("a", 64): `transports.docker["reg.example.com:5000/ns/app"]`,
	} {
		got, _, err := p.Scope(ref)
		require.NoError(t, err, ref)
		assert.Equal(t, want, got, ref)
	}

	p, err = Parse([]byte(`{"default": [{"type": "reject"}], "transports": {"docker": {"": [{"type": "insecureAcceptAnything"}]}}}`))
	require.NoError(t, err)
	got, reqs, err := p.Scope("example.org/x:y")
	require.NoError(t, err)
	assert.Equal(t, `transports.docker[""]`, got, "the transport-wide scope comes before default")
	assert.Equal(t, InsecureAcceptAnything, reqs[0].Type)

	_, _, err = p.Scope("Not A Reference")
	require.Error(t, err)
	assert.True(t, errdefs.IsInvalidArgument(err))
	assert.ErrorContains(t, err, `parse image reference "Not A Reference"`)
}
