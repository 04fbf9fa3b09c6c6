package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/log/logtest"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/guest/cdh"
	"github.com/cofferhq/coffer/guest/image"
	"github.com/cofferhq/coffer/kbs/admin"
	"github.com/cofferhq/coffer/kbs/adminclient"
	"github.com/cofferhq/coffer/kbs/config"
	"github.com/cofferhq/coffer/kbs/daemon"
)

// runImageEncrypt runs `ccctl image encrypt <args>` in-process and returns
// stdout and stderr.
func runImageEncrypt(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{
		Name:      "ccctl",
		Commands:  []*cli.Command{{Name: "image", Subcommands: []*cli.Command{imageEncryptCommand()}}},
		Writer:    &out,
		ErrWriter: &errOut,
	}
	err := app.RunContext(context.Background(), append([]string{"ccctl", "image", "encrypt"}, args...))
	return out.String(), errOut.String(), err
}

// startTestRegistry serves an in-process registry over plain HTTP and
// returns its "127.0.0.1:port".
func startTestRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// pushPlainImage pushes a linux/amd64 image of two gzip layers, holding
// files "base" and "app/secret", to ref.
func pushPlainImage(t *testing.T, ref string) {
	t.Helper()
	img := mutate.MediaType(empty.Image, "application/vnd.oci.image.manifest.v1+json")
	img = mutate.ConfigMediaType(img, "application/vnd.oci.image.config.v1+json")
	for _, files := range []map[string]string{{"base": "lower layer"}, {"app/secret": "the plaintext secret"}} {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for n, body := range files {
			require.NoError(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(body))}))
			_, err := io.WriteString(tw, body)
			require.NoError(t, err)
		}
		require.NoError(t, tw.Close())
		tarBytes := b.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tarBytes)), nil },
			tarball.WithMediaType("application/vnd.oci.image.layer.v1.tar+gzip"))
		require.NoError(t, err)
		img, err = mutate.AppendLayers(img, l)
		require.NoError(t, err)
	}
	cf, err := img.ConfigFile()
	require.NoError(t, err)
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	img, err = mutate.ConfigFile(img, cf)
	require.NoError(t, err)
	r, err := name.ParseReference(ref, name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(r, img))
}

// keyGetter is a cdh.ResourceGetter returning one key for one kid.
type keyGetter struct {
	kid string
	get func(ctx context.Context) ([]byte, error)
}

func (k keyGetter) Resource(ctx context.Context, uri string) ([]byte, error) {
	if uri != k.kid {
		return nil, errors.New("unexpected kid " + uri)
	}
	return k.get(ctx)
}

// pullEncrypted pulls ref@digest in the guest's way with keys from g and
// checks the plaintext files.
func pullEncrypted(t *testing.T, host, ref, digest string, g cdh.ResourceGetter) {
	t.Helper()
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	res, err := image.Pull(logtest.WithT(context.Background(), t), image.Request{
		Reference: ref,
		Digest:    digest,
		Platform:  "linux/amd64",
		Registry:  image.RegistryConfig{Insecure: []string{host}},
		Decrypt:   cdh.NewKeyProvider(g),
	}, rootfs)
	require.NoError(t, err)
	assert.Equal(t, 2, res.DecryptedLayers)
	b, err := os.ReadFile(filepath.Join(rootfs, "app/secret"))
	require.NoError(t, err)
	assert.Equal(t, "the plaintext secret", string(b))
}

func TestImageEncryptKeyFile(t *testing.T) {
	host := startTestRegistry(t)
	src, dst := host+"/app/plain:v1", host+"/app/enc:v1"
	pushPlainImage(t, src)
	kek := make([]byte, cdh.KEKSize)
	_, err := rand.Read(kek)
	require.NoError(t, err)
	keyFile := filepath.Join(t.TempDir(), "kek")
	require.NoError(t, os.WriteFile(keyFile, kek, 0o600))
	kid := "kbs:///default/key/app"

	out, errOut, err := runImageEncrypt(t, "--key-file", keyFile, "--key-id", kid, "--insecure-registry", src, dst)
	require.NoError(t, err, errOut)
	t.Logf("stderr: %s", errOut)
	digest := strings.TrimSpace(out)
	require.Regexp(t, `^sha256:[0-9a-f]{64}$`, digest)

	// The pushed manifest has encrypted layers, in CoCo's annotation format.
	r, err := name.ParseReference(dst+"@"+digest, name.Insecure)
	require.NoError(t, err)
	img, err := remote.Image(r)
	require.NoError(t, err)
	m, err := img.Manifest()
	require.NoError(t, err)
	require.Len(t, m.Layers, 2)
	for _, l := range m.Layers {
		assert.Equal(t, "application/vnd.oci.image.layer.v1.tar+gzip+encrypted", string(l.MediaType))
		assert.Contains(t, l.Annotations, cdh.AnnotationKeyProvider)
		assert.Contains(t, l.Annotations, cdh.AnnotationPubOpts)
	}

	pullEncrypted(t, host, dst, digest, keyGetter{kid: kid, get: func(context.Context) ([]byte, error) { return kek, nil }})

	t.Run("wrong key refused at pull", func(t *testing.T) {
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		_, err := image.Pull(logtest.WithT(context.Background(), t), image.Request{
			Reference: dst, Digest: digest, Platform: "linux/amd64",
			Registry: image.RegistryConfig{Insecure: []string{host}},
			Decrypt:  cdh.NewKeyProvider(keyGetter{kid: kid, get: func(context.Context) ([]byte, error) { return make([]byte, 32), nil }}),
		}, rootfs)
		require.Error(t, err)
		t.Logf("error: %v", err)
		assert.ErrorContains(t, err, "wrong key for layer "+m.Layers[0].Digest.String()+" (kid "+kid+")")
	})

	t.Run("bad arguments", func(t *testing.T) {
		short := filepath.Join(t.TempDir(), "short")
		require.NoError(t, os.WriteFile(short, kek[:16], 0o600))
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--key-file", short, "--key-id", kid, src, dst}, "holds 16 bytes, want exactly 32 raw bytes"},
			{[]string{"--key-file", keyFile, "--key-id", "kbs:///default/key", src, dst}, "--key-id: parse resource URI"},
			{[]string{"--key-id", kid, src, dst}, "give --kbs URL (with --admin-key) to register a new key in cc-kbs, or --key-file FILE"},
			{[]string{"--key-file", keyFile, "--kbs", "https://127.0.0.1:1", "--key-id", kid, src, dst}, "not both"},
			{[]string{"--key-file", keyFile, "--key-id", kid, src}, "want SRC and DST"},
			{[]string{"--key-file", keyFile, "--key-id", kid, "--insecure-registry", dst, host + "/app/twice:v1"}, "the layer is already encrypted"},
		} {
			_, _, err := runImageEncrypt(t, tc.args...)
			require.Error(t, err, "%v", tc.args)
			t.Logf("error: %v", err)
			assert.ErrorContains(t, err, tc.want)
		}
	})
}

// TestImageEncryptKBS encrypts with a fresh key registered in a real
// cc-kbs (TLS, its generated certificate passed as --kbs-cert), then pulls
// with the key as the KBS stores it.
func TestImageEncryptKBS(t *testing.T) {
	dir := t.TempDir()
	privPEM, pubPEM, err := admin.GenerateKey()
	require.NoError(t, err)
	priv, pub := filepath.Join(dir, "admin.key"), filepath.Join(dir, "admin.pub")
	require.NoError(t, os.WriteFile(priv, privPEM, 0o600))
	require.NoError(t, os.WriteFile(pub, pubPEM, 0o644))
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Admin.PublicKey = pub
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Options{Config: cfg, Out: io.Discard, Ready: func(a net.Addr) { ready <- a }})
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
	kbsURL := "https://" + addr.String()
	certFile, _, _ := cfg.TLSPaths()

	host := startTestRegistry(t)
	src, dst := host+"/app/plain:v1", host+"/app/enc:v1"
	pushPlainImage(t, src)
	kid := "kbs:///default/key/app-kek"
	args := []string{"--kbs", kbsURL, "--kbs-cert", certFile, "--admin-key", priv, "--key-id", kid, "--insecure-registry", src, dst}

	out, errOut, err := runImageEncrypt(t, args...)
	require.NoError(t, err, errOut)
	t.Logf("stderr: %s", errOut)
	assert.Contains(t, errOut, "key-encryption key registered in "+kbsURL+" as "+kid)
	digest := strings.TrimSpace(out)

	// The key the KBS holds (read here through the admin API; in the guest
	// the attestation agent gets it after attestation) decrypts the image.
	key, err := admin.LoadPrivateKey(priv)
	require.NoError(t, err)
	hc, err := adminclient.NewHTTPClient(adminclient.HTTPClientOptions{CACert: certFile})
	require.NoError(t, err)
	ac := adminclient.New(kbsURL, key, adminclient.Options{HTTPClient: hc})
	pullEncrypted(t, host, dst, digest, keyGetter{kid: kid, get: func(ctx context.Context) ([]byte, error) {
		return ac.GetResource(ctx, "default/key/app-kek")
	}})

	// A second run must not replace the key the first image needs.
	_, _, err = runImageEncrypt(t, args...)
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.ErrorContains(t, err, "the KBS already holds resource default/key/app-kek")

	// Without --admin-key nothing is attempted.
	_, _, err = runImageEncrypt(t, "--kbs", kbsURL, "--kbs-cert", certFile, "--key-id", "kbs:///default/key/other", "--insecure-registry", src, dst)
	assert.ErrorContains(t, err, "--kbs needs --admin-key")
}
