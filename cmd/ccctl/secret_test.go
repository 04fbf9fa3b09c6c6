package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/guest/cdh/sealed"
)

// runSecretSeal runs `ccctl secret seal <args>` in-process and returns
// stdout.
func runSecretSeal(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := &cli.App{Name: "ccctl", Commands: []*cli.Command{secretCommand()}, Writer: &out, ErrWriter: io.Discard}
	err := app.Run(append([]string{"ccctl", "secret", "seal"}, args...))
	return out.String(), err
}

// mapKBS is a cdh.ResourceGetter over a map.
type mapKBS map[string][]byte

func (m mapKBS) Resource(_ context.Context, uri string) ([]byte, error) {
	if v, ok := m[uri]; ok {
		return v, nil
	}
	return nil, fmt.Errorf("resource %s: %w", uri, errdefs.ErrNotFound)
}

func TestSecretSeal(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	key := filepath.Join(dir, "seal.key")
	const kid = "kbs:///default/sealed-secret-key/1"
	const res = "kbs:///default/sealed-secret/x"

	_, err := runSecretSeal(t, "--generate-key", key)
	require.ErrorContains(t, err, "--kid kbs:///REPO/TYPE/TAG is required")
	out, err := runSecretSeal(t, "--generate-key", key, "--kid", kid)
	require.NoError(t, err)
	assert.Contains(t, out, "store it in cc-kbs at "+kid)
	jwk, err := os.ReadFile(key + ".jwk")
	require.NoError(t, err)

	_, err = runSecretSeal(t, "--resource", res)
	require.ErrorContains(t, err, "--key FILE and --kid kbs:///REPO/TYPE/TAG are required")
	_, err = runSecretSeal(t, "--resource", "https://kbs/x", "--key", key, "--kid", kid)
	require.ErrorContains(t, err, "secret seal: --resource: parse resource URI")

	out, err = runSecretSeal(t, "--resource", res, "--key", key, "--kid", kid)
	require.NoError(t, err)
	s := strings.TrimSpace(out)
	require.True(t, sealed.IsSealed(s), s)

	kbs := mapKBS{kid: jwk, res: []byte("the value")}
	v, err := sealed.Unseal(ctx, s, kbs)
	require.NoError(t, err)
	assert.Equal(t, "the value", string(v))
	env, err := sealed.UnsealEnv(ctx, []string{"X=" + s}, kbs)
	require.NoError(t, err)
	assert.Equal(t, []string{"X=the value"}, env)

	out, err = runSecretSeal(t, "--resource", res, "--unsigned")
	require.NoError(t, err)
	unsigned := strings.TrimSpace(out)
	_, err = sealed.Unseal(ctx, unsigned, kbs)
	require.Error(t, err, "unsigned secrets need verification skipped")
	v, err = sealed.Unsealer{Resources: kbs, SkipVerification: true}.Unseal(ctx, unsigned)
	require.NoError(t, err)
	assert.Equal(t, "the value", string(v))
}
