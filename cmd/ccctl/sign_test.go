package main

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/log/logtest"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/guest/imagepolicy"
)

// runImageSign runs `ccctl image sign <args>` in-process and returns
// stdout.
func runImageSign(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := &cli.App{
		Name:      "ccctl",
		Commands:  []*cli.Command{{Name: "image", Subcommands: []*cli.Command{imageSignCommand()}}},
		Writer:    &out,
		ErrWriter: io.Discard,
	}
	err := app.Run(append([]string{"ccctl", "image", "sign"}, args...))
	return out.String(), err
}

// policyFromOutput parses the containers-policy.json that `image sign`
// prints after its summary.
func policyFromOutput(t *testing.T, out string) *imagepolicy.Policy {
	t.Helper()
	i := strings.Index(out, "\n{")
	require.GreaterOrEqual(t, i, 0, "no policy JSON in output:\n%s", out)
	p, err := imagepolicy.Parse([]byte(out[i+1:]))
	require.NoError(t, err)
	return p
}

func TestImageSign(t *testing.T) {
	ctx := logtest.WithT(context.Background(), t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := host + "/app/web:v1"
	img, err := random.Image(512, 2)
	require.NoError(t, err)
	r, err := name.ParseReference(ref)
	require.NoError(t, err)
	require.NoError(t, remote.Write(r, img))
	digest, err := img.Digest()
	require.NoError(t, err)

	dir := t.TempDir()
	key, otherKey := filepath.Join(dir, "cosign.key"), filepath.Join(dir, "other.key")
	out, err := runImageSign(t, "--generate-key", key)
	require.NoError(t, err)
	assert.Contains(t, out, "public key:  "+key+".pub")
	st, err := os.Stat(key)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	_, err = runImageSign(t, "--generate-key", key)
	require.ErrorContains(t, err, "file exists", "keys are never overwritten")
	_, err = runImageSign(t, "--generate-key", otherKey)
	require.NoError(t, err)

	_, err = runImageSign(t, ref)
	require.ErrorContains(t, err, "--key FILE is required")
	_, err = runImageSign(t, "--key", key+".pub", ref)
	require.ErrorContains(t, err, `PEM block is "PUBLIC KEY", want an unencrypted PKCS #8 "PRIVATE KEY"`)

	// Sign with the command, verify with the guest's policy package.
	out, err = runImageSign(t, "--key", key, "--insecure-registry", ref)
	require.NoError(t, err)
	t.Logf("output:\n%s", out)
	assert.Contains(t, out, "signed "+host+"/app/web@"+digest.String())
	assert.Contains(t, out, "identity:  "+ref)
	assert.Contains(t, out, "signature: "+host+"/app/web:sha256-"+digest.Hex+".sig (1 signature(s))")
	policy := policyFromOutput(t, out)
	require.NoError(t, policy.Verify(ctx, ref, digest.String(), imagepolicy.RegistryFetcher{}))

	// The other key's policy does not trust this signature.
	other, err := loadSigningKey(otherKey)
	require.NoError(t, err)
	doc, err := signingPolicy(host+"/app/web", other.Public())
	require.NoError(t, err)
	otherPolicy, err := imagepolicy.Parse(doc)
	require.NoError(t, err)
	var ue *imagepolicy.UntrustedSignatureError
	require.ErrorAs(t, otherPolicy.Verify(ctx, ref, digest.String(), imagepolicy.RegistryFetcher{}), &ue)

	// Images outside the signed repository are rejected by the policy.
	var re *imagepolicy.RejectedError
	require.ErrorAs(t, policy.Verify(ctx, host+"/app/other:v1", digest.String(), imagepolicy.RegistryFetcher{}), &re)
}
