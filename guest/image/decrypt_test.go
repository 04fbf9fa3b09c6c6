package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/log/logtest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/guest/cdh"
)

const testKid = "kbs:///default/key/image"

// keyStore is a cdh.ResourceGetter serving one key, or failing with err.
type keyStore struct {
	mu      sync.Mutex
	key     []byte
	err     error
	fetches int
}

func (k *keyStore) Resource(_ context.Context, uri string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fetches++
	if k.err != nil {
		return nil, k.err
	}
	if uri != testKid {
		return nil, fmt.Errorf("resource %s: %w", uri, errdefs.ErrNotFound)
	}
	return bytes.Clone(k.key), nil
}

func newKEK(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, cdh.KEKSize)
	_, err := rand.Read(k)
	require.NoError(t, err)
	return k
}

// encLayer is a test layer and the annotations of its descriptor.
type encLayer struct {
	*testLayer
	annotations map[string]string
}

// encrypt encrypts l's blob as `ccctl image encrypt` does, naming
// plainDigest (normally the blob's digest) in the wrapped key options.
func encrypt(t testing.TB, l *testLayer, kek []byte, plainDigest string) encLayer {
	t.Helper()
	r, fin, err := cdh.EncryptLayer(bytes.NewReader(l.blob), plainDigest, kek, testKid)
	require.NoError(t, err)
	blob, err := io.ReadAll(r)
	require.NoError(t, err)
	ann, err := fin()
	require.NoError(t, err)
	return encLayer{&testLayer{blob: blob, tar: l.tar, diffID: l.diffID, mt: l.mt + encryptedSuffix}, ann}
}

// plain wraps an unencrypted layer.
func plain(l *testLayer) encLayer { return encLayer{testLayer: l} }

// annotatedImageOf is imageOf with per-layer descriptor annotations.
func annotatedImageOf(t testing.TB, layers ...encLayer) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, l := range layers {
		var err error
		img, err = mutate.Append(img, mutate.Addendum{Layer: l.testLayer, MediaType: l.mt, Annotations: l.annotations})
		require.NoError(t, err)
	}
	cfg, err := img.ConfigFile()
	require.NoError(t, err)
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	img, err = mutate.ConfigFile(img, cfg)
	require.NoError(t, err)
	return img
}

func TestPullEncrypted(t *testing.T) {
	reg := startRegistry(t, false, "")
	ref := reg.host + "/test/enc:latest"
	kek := newKEK(t)
	base := newLayer(t, types.OCILayer, tarOf(t, dir("etc/", 0o755), file("etc/base", 0o644, "plain layer")))
	gz := newLayer(t, types.OCILayer, tarOf(t, file("secret-gzip", 0o600, "gzip plaintext")))
	zs := newLayer(t, types.OCILayerZStd, tarOf(t, file("secret-zstd", 0o600, "zstd plaintext")))
	raw := newLayer(t, types.OCIUncompressedLayer, tarOf(t, file("secret-tar", 0o600, "tar plaintext")))
	layers := []encLayer{plain(base)}
	for _, l := range []*testLayer{gz, zs, raw} {
		layers = append(layers, encrypt(t, l, kek, hashOf(l.blob).String()))
	}
	reg.push(t, ref, annotatedImageOf(t, layers...))
	ks := &keyStore{key: kek}
	rootfs := filepath.Join(t.TempDir(), "rootfs")

	res, err := Pull(logtest.WithT(context.Background(), t), Request{
		Reference: ref,
		Registry:  RegistryConfig{Insecure: []string{reg.host}},
		Decrypt:   cdh.NewKeyProvider(ks),
	}, rootfs)
	require.NoError(t, err)
	assert.Equal(t, 3, res.DecryptedLayers)
	assert.Equal(t, 1, ks.fetches, "one kid, fetched once")
	for name, want := range map[string]string{"etc/base": "plain layer", "secret-gzip": "gzip plaintext", "secret-zstd": "zstd plaintext", "secret-tar": "tar plaintext"} {
		b, err := os.ReadFile(filepath.Join(rootfs, name))
		require.NoError(t, err)
		assert.Equal(t, want, string(b))
	}
	// The blobs in the registry are ciphertext: the plaintext is nowhere in them.
	for _, l := range layers[1:] {
		assert.NotContains(t, string(l.blob), "plaintext")
	}
}

func TestPullEncryptedRefused(t *testing.T) {
	kek := newKEK(t)
	secret := newLayer(t, types.OCILayer, tarOf(t, file("secret", 0o600, "plaintext")))
	good := encrypt(t, secret, kek, hashOf(secret.blob).String())
	encD, _ := good.Digest()
	lower := plain(newLayer(t, types.OCILayer, tarOf(t, file("lower", 0o644, "x"))))

	badHMAC := encLayer{good.testLayer, map[string]string{}}
	for k, v := range good.annotations {
		badHMAC.annotations[k] = v
	}
	var pub map[string]any
	raw, _ := base64.StdEncoding.DecodeString(good.annotations[cdh.AnnotationPubOpts])
	require.NoError(t, json.Unmarshal(raw, &pub))
	pub["hmac"] = base64.StdEncoding.EncodeToString(make([]byte, 32))
	raw, _ = json.Marshal(pub)
	badHMAC.annotations[cdh.AnnotationPubOpts] = base64.StdEncoding.EncodeToString(raw)

	badDiffID := encrypt(t, secret, kek, hashOf(secret.blob).String())
	badDiffID.diffID = hashOf([]byte("another tar"))
	badDiffIDD, _ := badDiffID.Digest()

	badDigest := encrypt(t, secret, kek, hashOf([]byte("another blob")).String())
	badDigestD, _ := badDigest.Digest()

	for _, tc := range []struct {
		name      string
		layer     encLayer
		ks        *keyStore
		noDecrypt bool
		want      []string
		class     func(error) bool
		// onlyConfig: refused before any layer blob was fetched.
		onlyConfig bool
	}{
		{name: "wrong key", layer: good, ks: &keyStore{key: newKEK(t)}, onlyConfig: true,
			want: []string{"wrong key for layer " + encD.String() + " (kid " + testKid + ")"}, class: errdefs.IsFailedPrecondition},
		{name: "key not released", layer: good, ks: &keyStore{err: fmt.Errorf("KBS resource policy denied %s: %w", testKid, errdefs.ErrPermissionDenied)}, onlyConfig: true,
			want: []string{"key " + testKid + " for layer " + encD.String() + " was not released by the KBS"}, class: errdefs.IsPermissionDenied},
		{name: "key not found", layer: good, ks: &keyStore{err: errdefs.ErrNotFound}, onlyConfig: true,
			want: []string{"key " + testKid + " for layer " + encD.String() + " was not found in the KBS"}, class: errdefs.IsNotFound},
		{name: "no decryption source", layer: good, noDecrypt: true, onlyConfig: true,
			want: []string{"layer " + encD.String() + " is encrypted", "no decryption source is configured (Request.Decrypt)"}, class: errdefs.IsFailedPrecondition},
		{name: "altered HMAC", layer: badHMAC, ks: &keyStore{key: kek},
			want: []string{"decrypt layer " + encD.String() + ": the HMAC-SHA256 of the ciphertext does not match the one in its org.opencontainers.image.enc.pubopts annotation"}, class: errdefs.IsDataLoss},
		{name: "plaintext diff_id", layer: badDiffID, ks: &keyStore{key: kek},
			want: []string{"layer " + badDiffIDD.String() + ": diff_id mismatch"}, class: errdefs.IsDataLoss},
		{name: "plaintext digest", layer: badDigest, ks: &keyStore{key: kek},
			want: []string{"layer " + badDigestD.String() + ": plaintext digest mismatch: expected " + hashOf([]byte("another blob")).String() + ", actual " + hashOf(secret.blob).String()}, class: errdefs.IsDataLoss},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := startRegistry(t, false, "")
			ref := reg.host + "/test/enc:latest"
			reg.push(t, ref, annotatedImageOf(t, lower, tc.layer))
			rootfs := filepath.Join(t.TempDir(), "rootfs")
			req := Request{Reference: ref, Registry: RegistryConfig{Insecure: []string{reg.host}}}
			if !tc.noDecrypt {
				req.Decrypt = cdh.NewKeyProvider(tc.ks)
			}
			before := reg.blobGets.Load()
			_, err := Pull(logtest.WithT(context.Background(), t), req, rootfs)
			require.Error(t, err)
			t.Logf("error: %v", err)
			for _, w := range tc.want {
				assert.ErrorContains(t, err, w)
			}
			assert.True(t, tc.class(err), "%v", err)
			if tc.onlyConfig {
				assert.EqualValues(t, 1, reg.blobGets.Load()-before, "only the config blob may be fetched")
			}
			requireEmptyDir(t, rootfs)
		})
	}
}
