package main

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/kbs/config"
	"github.com/cofferhq/coffer/kbs/daemon"
	"github.com/cofferhq/coffer/kbs/protocol"
)

// runKBS runs `ccctl kbs <args>` in-process and returns stdout.
func runKBS(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{
		Name:      "ccctl",
		Commands:  []*cli.Command{kbsCommand()},
		Writer:    &out,
		ErrWriter: &errOut,
		Reader:    strings.NewReader(stdin),
	}
	err := app.Run(append([]string{"ccctl", "kbs"}, args...))
	return out.String(), err
}

// TestKBSCommands drives every `ccctl kbs` subcommand against a real
// cc-kbs (TLS with a generated certificate, pinned by fingerprint).
func TestKBSCommands(t *testing.T) {
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "admin.key"), filepath.Join(dir, "admin.pub")
	_, err := runKBS(t, "", "keygen-admin", "--private", priv, "--public", pub)
	require.NoError(t, err)
	st, err := os.Stat(priv)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	_, err = runKBS(t, "", "keygen-admin", "--private", priv, "--public", pub)
	require.ErrorContains(t, err, "file exists", "keys are never overwritten")

	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Admin.PublicKey = pub
	ctx, cancel := context.WithCancel(context.Background())
	var banner bytes.Buffer
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Options{Config: cfg, Out: &banner, Ready: func(a net.Addr) { ready <- a }})
	}()
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("cc-kbs exited: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("cc-kbs not ready")
	}
	t.Cleanup(func() {
		cancel()
		<-done
	})
	fp := regexp.MustCompile(`fingerprint ([0-9a-f]{64})`).FindStringSubmatch(banner.String())
	require.NotNil(t, fp, banner.String())
	base := []string{"--url", "https://" + addr.String(), "--admin-key", priv, "--cert-sha256", fp[1], "--subject", "ops"}
	kbs := func(stdin string, args ...string) string {
		t.Helper()
		out, err := runKBS(t, stdin, append(append([]string{}, base...), args...)...)
		require.NoError(t, err, "ccctl kbs %v", args)
		return out
	}

	secret := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(secret, []byte("s3cr3t\x00bin"), 0o600))
	out := kbs("", "resource", "set", "--file", secret, "default/key/app")
	var meta protocol.ResourceMeta
	require.NoError(t, json.Unmarshal([]byte(out), &meta))
	require.Equal(t, "default/key/app", meta.Path)
	kbs("", "resource", "set", "--value", "v", "default/key/other")
	require.Equal(t, "s3cr3t\x00bin", kbs("", "resource", "get", "default/key/app"))
	require.Contains(t, kbs("", "resource", "list"), `"default/key/other"`)
	_, err = runKBS(t, "", append(append([]string{}, base...), "resource", "set", "--value", "v", "../etc/x")...)
	require.ErrorContains(t, err, "invalid resource path")
	_, err = runKBS(t, "", append(append([]string{}, base...), "resource", "set", "a/b/c", "--value", "v")...)
	require.ErrorContains(t, err, "put flags such as --value before")

	m := strings.Repeat("ab", 48)
	require.Contains(t, kbs("", "reference-values", "add", "--tee", "snp", "--measurement", m), "reference-values@v1")
	require.Contains(t, kbs(`{"tee":"sim","measurement":"`+strings.Repeat("cd", 48)+`"}`, "reference-values", "add", "--from-json", "-"), "reference-values@v2")
	var rv protocol.DocumentView
	require.NoError(t, json.Unmarshal([]byte(kbs("", "reference-values", "get")), &rv))
	require.Len(t, rv.Values, 2)
	_, err = runKBS(t, "", append(append([]string{}, base...), "reference-values", "add", "--tee", "snp", "--measurement", "abc")...)
	require.Error(t, err)

	// --init-data digests the TOML file exactly as the guest and cc-kbs
	// do: the document's algorithm over its exact bytes.
	doc := "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"policy.rego\" = \"package agent_policy\"\n"
	idFile := filepath.Join(dir, "initdata.toml")
	require.NoError(t, os.WriteFile(idFile, []byte(doc), 0o600))
	sum := sha512.Sum384([]byte(doc))
	digest := hex.EncodeToString(sum[:])
	require.Regexp(t, `^reference-values@v3:sha256:[0-9a-f]{64}: sim init_data `+digest+` \(1 trusted\)\n$`, kbs("", "reference-values", "add", "--tee", "sim", "--init-data", idFile))
	require.Contains(t, kbs("", "reference-values", "add", "--tee", "sim", "--init-data", idFile), "reference-values@v3:", "the same document again is a no-op")
	other := strings.Repeat("ef", 32)
	require.Regexp(t, `^reference-values@v4:sha256:[0-9a-f]{64}: sim init_data `+other+` \(2 trusted\)\n$`, kbs("", "reference-values", "add", "--tee", "sim", "--init-data-digest", strings.ToUpper(other)))
	require.Contains(t, kbs(`{"tee":"snp","init_data":"`+digest+`"}`, "reference-values", "add", "--from-json", "-"), ": snp init_data "+digest+" (1 trusted)")
	require.NoError(t, json.Unmarshal([]byte(kbs("", "reference-values", "get")), &rv))
	require.Equal(t, []string{digest, other}, rv.Values.For(attestation.TEESim).InitData)
	require.Equal(t, []string{digest}, rv.Values.For(attestation.TEESNP).InitData)
	for _, bad := range [][]string{
		{"--init-data", idFile}, // no --tee
		{"--tee", "sim", "--init-data", idFile, "--measurement", m},    // two values
		{"--tee", "sim", "--init-data", filepath.Join(dir, "missing")}, // no file
		{"--tee", "sim", "--init-data", pub},                           // not init-data TOML
		{"--tee", "sim", "--init-data-digest", "abcd"},                 // wrong length
	} {
		_, err = runKBS(t, "", append(append(append([]string{}, base...), "reference-values", "add"), bad...)...)
		require.Error(t, err, "%v", bad)
	}
	require.NoError(t, json.Unmarshal([]byte(kbs("", "reference-values", "get")), &rv))
	require.Equal(t, uint64(5), rv.Version, "refused entries change nothing")

	pol := filepath.Join(dir, "resource.rego")
	require.NoError(t, os.WriteFile(pol, []byte("package policy\nimport rego.v1\ndefault allow := false\n"), 0o644))
	require.Contains(t, kbs("", "policy", "set", "--kind", "resource", pol), "resource-policy@v2")
	require.Equal(t, "package policy\nimport rego.v1\ndefault allow := false\n", kbs("", "policy", "get", "--kind", "resource"))
	var hist []protocol.DocumentView
	require.NoError(t, json.Unmarshal([]byte(kbs("", "policy", "history", "--kind", "resource")), &hist))
	require.Len(t, hist, 2)
	_, err = runKBS(t, "package policy\nnot rego", append(append([]string{}, base...), "policy", "set", "--kind", "attestation", "-")...)
	require.ErrorContains(t, err, "invalid-policy")

	var audit []protocol.AuditEntry
	require.NoError(t, json.Unmarshal([]byte(kbs("", "audit", "--limit", "0")), &audit))
	require.GreaterOrEqual(t, len(audit), 5)
	require.Equal(t, "ops", audit[len(audit)-1].Actor)

	// Without the pin the generated certificate is not trusted.
	_, err = runKBS(t, "", "--url", "https://"+addr.String(), "--admin-key", priv, "resource", "list")
	require.Error(t, err)
}
