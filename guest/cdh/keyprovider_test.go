package cdh

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containers/ocicrypt"
	"github.com/containers/ocicrypt/config"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/kbs/client"
)

// fakeKBS is a ResourceGetter serving keys from a map and failing with
// errs[uri] when set. It counts fetches per URI.
type fakeKBS struct {
	mu      sync.Mutex
	keys    map[string][]byte
	errs    map[string]error
	fetches map[string]int
}

func newFakeKBS() *fakeKBS {
	return &fakeKBS{keys: map[string][]byte{}, errs: map[string]error{}, fetches: map[string]int{}}
}

func (f *fakeKBS) Resource(_ context.Context, uri string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches[uri]++
	if err := f.errs[uri]; err != nil {
		return nil, err
	}
	k, ok := f.keys[uri]
	if !ok {
		return nil, fmt.Errorf("resource %s: %w", uri, errdefs.ErrNotFound)
	}
	return bytes.Clone(k), nil // the provider zeroes what it gets
}

func randomKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, KEKSize)
	_, err := rand.Read(k)
	require.NoError(t, err)
	return k
}

const (
	kidA = "kbs:///default/key/a"
	kidB = "kbs:///default/key/b"
)

// layerDesc is a layer descriptor carrying annotation value v.
func layerDesc(v string) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType:   "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
		Digest:      digest.FromString("ciphertext " + v),
		Annotations: map[string]string{AnnotationKeyProvider: v},
	}
}

// cocoPacket builds an annotation value the way CoCo's coco-keyprovider
// does (trustee tools/coco-keyprovider enc_optsdata_gen_anno), with the
// standard library only, so the test does not use WrapLayerKey to check
// itself: JSON {kid, wrapped_data: b64(GCM ciphertext||tag), iv: b64(12
// bytes), wrap_type}, base64 again by ocicrypt. extra adds v2 fields.
func cocoPacket(t testing.TB, kek []byte, kid string, opts []byte, extra map[string]any) string {
	t.Helper()
	block, err := aes.NewCipher(kek)
	require.NoError(t, err)
	gcm, err := cipher.NewGCM(block)
	require.NoError(t, err)
	iv := make([]byte, 12)
	_, err = rand.Read(iv)
	require.NoError(t, err)
	m := map[string]any{
		"kid":          kid,
		"wrapped_data": base64.StdEncoding.EncodeToString(gcm.Seal(nil, iv, opts, nil)),
		"iv":           base64.StdEncoding.EncodeToString(iv),
		"wrap_type":    "A256GCM",
	}
	for k, v := range extra {
		m[k] = v
	}
	j, err := json.Marshal(m)
	require.NoError(t, err)
	return base64.StdEncoding.EncodeToString(j)
}

var testOpts = []byte(`{"symkey":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","cipheroptions":{"nonce":"AAECAwQFBgcICQoLDA0ODw=="}}`)

func TestUnwrapRoundTrip(t *testing.T) {
	kbs := newFakeKBS()
	kbs.keys[kidA] = randomKey(t)
	p := NewKeyProvider(kbs)
	ctx := context.Background()

	wrapped, err := WrapLayerKey(kbs.keys[kidA], kidA, testOpts)
	require.NoError(t, err)
	// The value is base64 of the CoCo packet JSON with exactly its fields.
	raw, err := base64.StdEncoding.DecodeString(wrapped)
	require.NoError(t, err)
	var fields map[string]string
	require.NoError(t, json.Unmarshal(raw, &fields))
	assert.Equal(t, kidA, fields["kid"])
	assert.Equal(t, "A256GCM", fields["wrap_type"])
	iv, err := base64.StdEncoding.DecodeString(fields["iv"])
	require.NoError(t, err)
	assert.Len(t, iv, 12)
	ct, err := base64.StdEncoding.DecodeString(fields["wrapped_data"])
	require.NoError(t, err)
	assert.Len(t, ct, len(testOpts)+16, "ciphertext with the 16-byte GCM tag")
	assert.Len(t, fields, 4)

	got, err := p.UnwrapLayerKey(ctx, layerDesc(wrapped))
	require.NoError(t, err)
	assert.Equal(t, testOpts, got)

	for name, extra := range map[string]map[string]any{
		"coco v1":           nil,
		"coco v2":           {"version": "0.1.0", "provider": "kbs", "provider_settings": map[string]any{}, "annotations": map[string]any{}},
		"kid with KBS host": {"kid": "kbs://10.0.0.1:8080/default/key/a"},
	} {
		t.Run(name, func(t *testing.T) {
			kid := kidA
			if k, ok := extra["kid"].(string); ok {
				kid = k
				kbs.keys[kid] = kbs.keys[kidA]
			}
			got, err := p.UnwrapLayerKey(ctx, layerDesc(cocoPacket(t, kbs.keys[kidA], kid, testOpts, extra)))
			require.NoError(t, err)
			assert.Equal(t, testOpts, got)
		})
	}
}

func TestUnwrapWrongKey(t *testing.T) {
	kbs := newFakeKBS()
	kbs.keys[kidA] = randomKey(t)
	desc := layerDesc(cocoPacket(t, randomKey(t), kidA, testOpts, nil)) // wrapped under another key
	_, err := NewKeyProvider(kbs).UnwrapLayerKey(context.Background(), desc)
	require.Error(t, err)
	t.Logf("error: %v", err)
	var ke *KeyError
	require.ErrorAs(t, err, &ke)
	assert.Equal(t, KeyWrong, ke.Kind)
	assert.Equal(t, kidA, ke.Kid)
	assert.Equal(t, desc.Digest.String(), ke.Layer)
	assert.ErrorContains(t, err, "wrong key for layer "+desc.Digest.String()+" (kid "+kidA+")")
	assert.True(t, errdefs.IsFailedPrecondition(err))

	t.Run("key of the wrong size", func(t *testing.T) {
		kbs.keys[kidA] = []byte("sixteen byte key")
		_, err := NewKeyProvider(kbs).UnwrapLayerKey(context.Background(), desc)
		t.Logf("error: %v", err)
		require.ErrorAs(t, err, &ke)
		assert.Equal(t, KeyWrong, ke.Kind)
		assert.ErrorContains(t, err, "key is 16 bytes, want 32 (AES-256)")
	})
}

func TestUnwrapKeyNotAvailable(t *testing.T) {
	desc := layerDesc(cocoPacket(t, randomKey(t), kidA, testOpts, nil))
	for _, tc := range []struct {
		name  string
		err   error // nil: the fake KBS has no such key
		kind  KeyErrorKind
		want  string
		class func(error) bool
	}{
		{"missing kid", nil, KeyNotFound, "key " + kidA + " for layer " + desc.Digest.String() + " was not found in the KBS", errdefs.IsNotFound},
		{"KBS 404", &client.ResponseError{Op: "GET /kbs/v0/resource/default/key/a", Status: 404}, KeyNotFound, "was not found in the KBS", errdefs.IsNotFound},
		{"KBS 403", &client.ResponseError{Op: "GET /kbs/v0/resource/default/key/a", Status: 403}, KeyNotReleased, "key " + kidA + " for layer " + desc.Digest.String() + " was not released by the KBS", errdefs.IsPermissionDenied},
		{"permission denied class", fmt.Errorf("resource policy denied: %w", errdefs.ErrPermissionDenied), KeyNotReleased, "was not released by the KBS: resource policy denied", errdefs.IsPermissionDenied},
		{"KBS down", errors.New("dial tcp 127.0.0.1:8080: connect: connection refused"), KeyUnavailable, "fetch key " + kidA + " for layer " + desc.Digest.String() + ": dial tcp", func(error) bool { return true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kbs := newFakeKBS()
			if tc.err != nil {
				kbs.errs[kidA] = tc.err
			}
			_, err := NewKeyProvider(kbs).UnwrapLayerKey(context.Background(), desc)
			require.Error(t, err)
			t.Logf("error: %v", err)
			var ke *KeyError
			require.ErrorAs(t, err, &ke)
			assert.Equal(t, tc.kind, ke.Kind)
			assert.ErrorContains(t, err, tc.want)
			assert.True(t, tc.class(err), "%v", err)
			if tc.err != nil {
				assert.ErrorIs(t, err, tc.err)
			}
		})
	}
}

func TestUnwrapMalformedAnnotation(t *testing.T) {
	kek := randomKey(t)
	kbs := newFakeKBS()
	kbs.keys[kidA] = kek
	packet := func(m map[string]any) string {
		j, err := json.Marshal(m)
		require.NoError(t, err)
		return base64.StdEncoding.EncodeToString(j)
	}
	good := map[string]any{"kid": kidA, "wrapped_data": "AAAA", "iv": base64.StdEncoding.EncodeToString(make([]byte, 12)), "wrap_type": "A256GCM"}
	with := func(k string, v any) string {
		m := map[string]any{}
		for kk, vv := range good {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return packet(m)
	}
	for _, tc := range []struct {
		name, value, want string
		class             func(error) bool
	}{
		{"not base64", "{not base64}", "decode base64", errdefs.IsInvalidArgument},
		{"not JSON", base64.StdEncoding.EncodeToString([]byte("kid=x")), "decode JSON", errdefs.IsInvalidArgument},
		{"no kid", with("kid", nil), "no kid", errdefs.IsInvalidArgument},
		{"kid not a resource URI", with("kid", "https://kbs/default/key/a"), `scheme "https", want "kbs"`, errdefs.IsInvalidArgument},
		{"kid with two segments", with("kid", "kbs:///default/key"), "has 2 segments", errdefs.IsInvalidArgument},
		{"kid with dot-dot", with("kid", "kbs:///default/../a"), "segment 2", errdefs.IsInvalidArgument},
		{"A256CTR", with("wrap_type", "A256CTR"), `wrap_type "A256CTR", want "A256GCM"`, errdefs.IsInvalidArgument},
		{"KMS provider", with("provider", "aliyun"), `provider "aliyun": only "kbs"`, errdefs.IsNotImplemented},
		{"other version", with("version", "0.2.0"), `version "0.2.0", want "0.1.0"`, errdefs.IsInvalidArgument},
		{"no wrapped_data", with("wrapped_data", nil), "no wrapped_data", errdefs.IsInvalidArgument},
		{"no iv", with("iv", nil), "no iv", errdefs.IsInvalidArgument},
		{"iv of 16 bytes", with("iv", base64.StdEncoding.EncodeToString(make([]byte, 16))), "iv is 16 bytes, want 12", errdefs.IsInvalidArgument},
		{"wrapped_data not base64", with("wrapped_data", "%%%"), "decode wrapped_data", errdefs.IsInvalidArgument},
		{"empty", "", "no " + AnnotationKeyProvider + " annotation: the layer is not encrypted with ocicrypt key wrapping", errdefs.IsInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			desc := layerDesc(tc.value)
			_, err := NewKeyProvider(kbs).UnwrapLayerKey(context.Background(), desc)
			require.Error(t, err)
			t.Logf("error: %v", err)
			assert.ErrorContains(t, err, tc.want)
			assert.ErrorContains(t, err, desc.Digest.String(), "errors name the layer")
			assert.True(t, tc.class(err), "%v", err)
		})
	}

	t.Run("encrypted for other key wrappers only", func(t *testing.T) {
		desc := ocispec.Descriptor{Digest: digest.FromString("x"), Annotations: map[string]string{
			"org.opencontainers.image.enc.keys.jwe": "eyJ9",
			"org.opencontainers.image.enc.keys.pgp": "AAAA",
		}}
		_, err := NewKeyProvider(kbs).UnwrapLayerKey(context.Background(), desc)
		require.Error(t, err)
		t.Logf("error: %v", err)
		assert.ErrorContains(t, err, "the layer is encrypted for key wrappers jwe, pgp only, not for the KBS")
	})
}

func TestUnwrapSeveralRecipientsAndLayers(t *testing.T) {
	kbs := newFakeKBS()
	kbs.keys[kidB] = randomKey(t)
	// The first packet's key is not in the KBS; the second one opens.
	two := cocoPacket(t, randomKey(t), kidA, []byte("not this"), nil) + "," + cocoPacket(t, kbs.keys[kidB], kidB, testOpts, nil)
	got, err := NewKeyProvider(kbs).UnwrapLayerKey(context.Background(), layerDesc(two))
	require.NoError(t, err)
	assert.Equal(t, testOpts, got)

	// Three layers under one kid: one fetch.
	kbs.fetches = map[string]int{}
	var descs []ocispec.Descriptor
	for i := range 3 {
		descs = append(descs, layerDesc(cocoPacket(t, kbs.keys[kidB], kidB, []byte(fmt.Sprint(i)), nil)))
	}
	all, err := NewKeyProvider(kbs).UnwrapLayerKeys(context.Background(), descs)
	require.NoError(t, err)
	assert.Equal(t, [][]byte{[]byte("0"), []byte("1"), []byte("2")}, all)
	assert.Equal(t, map[string]int{kidB: 1}, kbs.fetches)

	// Both recipients fail: both errors are reported.
	delete(kbs.keys, kidB)
	_, err = NewKeyProvider(kbs).UnwrapLayerKey(context.Background(), layerDesc(two))
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.ErrorContains(t, err, "key "+kidA+" for layer")
	assert.ErrorContains(t, err, "key "+kidB+" for layer")
}

// TestOcicryptInterop checks the provider against ocicrypt itself: a layer
// encrypted by ocicrypt.EncryptLayer with the provider registered as
// "provider.attestation-agent" (wrapping from CoCo's keyid=…::keypath=…
// parameters) decrypts with ocicrypt.DecryptLayer through the same
// registered wrapper (keys from the KBS) and with EncryptLayer's
// counterpart; and a layer encrypted by EncryptLayer decrypts with
// ocicrypt.DecryptLayer.
func TestOcicryptInterop(t *testing.T) {
	kbs := newFakeKBS()
	kbs.keys[kidA] = randomKey(t)
	ctx := context.Background()
	ocicrypt.RegisterKeyWrapper("provider."+ProviderName, NewKeyProvider(kbs).KeyWrapper(ctx))
	keyPath := filepath.Join(t.TempDir(), "kek")
	require.NoError(t, os.WriteFile(keyPath, kbs.keys[kidA], 0o600))

	plain := bytes.Repeat([]byte("layer bytes "), 10000)
	plainDesc := ocispec.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: digest.FromBytes(plain), Size: int64(len(plain))}

	decrypt := func(t *testing.T, enc []byte, annotations map[string]string) []byte {
		t.Helper()
		desc := ocispec.Descriptor{MediaType: plainDesc.MediaType + "+encrypted", Digest: digest.FromBytes(enc), Size: int64(len(enc)), Annotations: annotations}
		dc := config.DecryptConfig{Parameters: map[string][][]byte{}}
		// ocicrypt.DecryptLayer's returned digest is always empty (its
		// block cipher does not echo the key options' digest): check the
		// key options through the provider instead.
		r, _, err := ocicrypt.DecryptLayer(&dc, bytes.NewReader(enc), desc, false)
		require.NoError(t, err)
		out, err := io.ReadAll(r)
		require.NoError(t, err)
		raw, err := NewKeyProvider(kbs).UnwrapLayerKey(ctx, desc)
		require.NoError(t, err)
		var opts struct {
			Digest digest.Digest `json:"digest"`
			Key    []byte        `json:"symkey"`
		}
		require.NoError(t, json.Unmarshal(raw, &opts))
		assert.Equal(t, plainDesc.Digest, opts.Digest, "the key options carry the plaintext digest")
		assert.Len(t, opts.Key, 32)
		return out
	}

	t.Run("ocicrypt encrypts", func(t *testing.T) {
		cc, err := config.EncryptWithKeyProvider([][]byte{[]byte(ProviderName + ":keyid=" + kidA + "::keypath=" + keyPath + "::algorithm=A256GCM")})
		require.NoError(t, err)
		r, fin, err := ocicrypt.EncryptLayer(cc.EncryptConfig, bytes.NewReader(plain), plainDesc)
		require.NoError(t, err)
		enc, err := io.ReadAll(r)
		require.NoError(t, err)
		annotations, err := fin()
		require.NoError(t, err)
		require.Contains(t, annotations, AnnotationKeyProvider)
		assert.Equal(t, plain, decrypt(t, enc, annotations))

	})

	t.Run("EncryptLayer encrypts", func(t *testing.T) {
		r, fin, err := EncryptLayer(bytes.NewReader(plain), plainDesc.Digest.String(), kbs.keys[kidA], kidA)
		require.NoError(t, err)
		enc, err := io.ReadAll(r)
		require.NoError(t, err)
		assert.NotEqual(t, plain, enc)
		annotations, err := fin()
		require.NoError(t, err)
		assert.Len(t, annotations, 2)
		assert.Equal(t, plain, decrypt(t, enc, annotations))
	})

	t.Run("ocicrypt with a wrong key in the KBS", func(t *testing.T) {
		r, fin, err := EncryptLayer(bytes.NewReader(plain), plainDesc.Digest.String(), randomKey(t), kidA)
		require.NoError(t, err)
		enc, err := io.ReadAll(r)
		require.NoError(t, err)
		annotations, err := fin()
		require.NoError(t, err)
		desc := ocispec.Descriptor{MediaType: plainDesc.MediaType + "+encrypted", Digest: digest.FromBytes(enc), Annotations: annotations}
		_, _, err = ocicrypt.DecryptLayer(&config.DecryptConfig{}, bytes.NewReader(enc), desc, false)
		require.Error(t, err)
		t.Logf("error: %v", err)
		assert.ErrorContains(t, err, "wrong key for a layer (kid "+kidA+")")
	})
}

func TestWrapRefusesBadInput(t *testing.T) {
	_, err := WrapLayerKey(make([]byte, 16), kidA, testOpts)
	assert.ErrorContains(t, err, "key is 16 bytes, want 32")
	_, err = WrapLayerKey(randomKey(t), "kbs:///only/two", testOpts)
	assert.ErrorContains(t, err, "has 2 segments")
	_, _, err = EncryptLayer(strings.NewReader(""), "sha256:nothex", randomKey(t), kidA)
	assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
	sum := sha256.Sum256(nil)
	_, _, err = EncryptLayer(strings.NewReader(""), digest.NewDigestFromBytes(digest.SHA256, sum[:]).String(), randomKey(t)[:31], kidA)
	assert.ErrorContains(t, err, "key is 31 bytes, want 32")
}
