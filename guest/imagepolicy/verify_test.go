package imagepolicy

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/log/logtest"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startRegistry serves an in-memory registry over plain HTTP on loopback
// (go-containerregistry talks HTTP to 127.0.0.1 without name.Insecure)
// and returns its "127.0.0.1:port".
func startRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// pushRandom pushes a small random image to ref and returns its manifest
// digest.
func pushRandom(t *testing.T, ref string) string {
	t.Helper()
	img, err := random.Image(256, 1)
	require.NoError(t, err)
	require.NoError(t, remote.Write(mustRef(t, ref), img))
	d, err := img.Digest()
	require.NoError(t, err)
	return d.String()
}

// mustRef parses a reference or fails the test.
func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	require.NoError(t, err)
	return r
}

// signWith signs ref with key through Sign.
func signWith(t *testing.T, key *ecdsa.PrivateKey, ref string, opts SignOptions) *Signed {
	t.Helper()
	s, err := signature.LoadECDSASigner(key, crypto.SHA256)
	require.NoError(t, err)
	signed, err := Sign(context.Background(), ref, s, opts)
	require.NoError(t, err)
	return signed
}

// policyOf builds a policy whose default is reject and whose
// transports.docker scopes are given as scope → requirement JSON.
func policyOf(t *testing.T, scopes map[string]string) *Policy {
	t.Helper()
	docker := map[string]json.RawMessage{}
	for s, r := range scopes {
		docker[s] = json.RawMessage("[" + r + "]")
	}
	doc, err := json.Marshal(map[string]any{
		"default":    []map[string]string{{"type": "reject"}},
		"transports": map[string]any{"docker": docker},
	})
	require.NoError(t, err)
	p, err := Parse(doc)
	require.NoError(t, err)
	return p
}

func sigstoreReq(keyData string, identity string) string {
	if identity != "" {
		return fmt.Sprintf(`{"type": "sigstoreSigned", "keyData": %q, "signedIdentity": {"type": %q}}`, keyData, identity)
	}
	return fmt.Sprintf(`{"type": "sigstoreSigned", "keyData": %q}`, keyData)
}

// noFetcher fails the test when signatures are fetched.
type noFetcher struct{ t *testing.T }

func (f noFetcher) Manifest(context.Context, string, string) ([]byte, error) {
	f.t.Error("signatures fetched although no sigstoreSigned requirement applies")
	return nil, errors.New("unexpected fetch")
}

func (f noFetcher) Blob(context.Context, string, string, int64) ([]byte, error) {
	f.t.Error("signatures fetched although no sigstoreSigned requirement applies")
	return nil, errors.New("unexpected fetch")
}

func TestVerifyAcceptAndReject(t *testing.T) {
	ctx := logtest.WithT(context.Background(), t)
	digest := "sha256:" + strings.Repeat("1", 64)
	p := policyOf(t, map[string]string{
		"reg.example:5000/open": `{"type": "insecureAcceptAnything"}`,
		"reg.example:5000/both": `{"type": "insecureAcceptAnything"}, {"type": "reject"}`,
	})
	require.NoError(t, p.Verify(ctx, "reg.example:5000/open:v1", digest, noFetcher{t}))

	for _, ref := range []string{"reg.example:5000/closed:v1", "reg.example:5000/both:v1"} {
		err := p.Verify(ctx, ref, digest, noFetcher{t})
		require.Error(t, err)
		t.Logf("error: %v", err)
		var re *RejectedError
		require.ErrorAs(t, err, &re)
		assert.True(t, errdefs.IsPermissionDenied(err))
		assert.True(t, strings.HasPrefix(err.Error(), "image "+ref+" rejected by policy (reject)"), err.Error())
	}
	err := p.Verify(ctx, "reg.example:5000/closed:v1", digest, noFetcher{t})
	assert.EqualError(t, err, "image reg.example:5000/closed:v1 rejected by policy (reject): scope default")
	err = p.Verify(ctx, "reg.example:5000/both:v1", digest, noFetcher{t})
	assert.EqualError(t, err, `image reg.example:5000/both:v1 rejected by policy (reject): scope transports.docker["reg.example:5000/both"]`)
}

func TestVerifyArguments(t *testing.T) {
	ctx := logtest.WithT(context.Background(), t)
	p := policyOf(t, nil)
	err := p.Verify(ctx, "reg.example:5000/app:v1", "sha256:abc", noFetcher{t})
	require.Error(t, err)
	assert.True(t, errdefs.IsInvalidArgument(err))
	assert.ErrorContains(t, err, `manifest digest "sha256:abc": want "sha256:" and 64 lowercase hex digits`)

	pinned := "reg.example:5000/app@sha256:" + strings.Repeat("a", 64)
	err = p.Verify(ctx, pinned, "sha256:"+strings.Repeat("b", 64), noFetcher{t})
	require.Error(t, err)
	assert.True(t, errdefs.IsInvalidArgument(err))
	assert.ErrorContains(t, err, "the reference pins sha256:aaaa")
}

func TestVerifySigstoreSigned(t *testing.T) {
	ctx := logtest.WithT(context.Background(), t)
	host := startRegistry(t)
	trusted, trustedData := newKey(t)
	other, otherData := newKey(t)
	f := RegistryFetcher{}

	signedRef := host + "/test/signed:v1"
	signedDigest := pushRandom(t, signedRef)
	s := signWith(t, trusted, signedRef, SignOptions{})
	assert.Equal(t, signedDigest, s.Digest)
	assert.Equal(t, host+"/test/signed:sha256-"+strings.TrimPrefix(signedDigest, "sha256:")+".sig", s.SignatureRef)
	assert.Equal(t, signedRef, s.Identity)
	assert.Equal(t, 1, s.Signatures)

	unsignedRef := host + "/test/unsigned:v1"
	unsignedDigest := pushRandom(t, unsignedRef)

	otherRef := host + "/test/other:v1"
	otherDigest := pushRandom(t, otherRef)
	signWith(t, other, otherRef, SignOptions{})

	p := policyOf(t, map[string]string{host + "/test": sigstoreReq(trustedData, "")})

	t.Run("valid signature", func(t *testing.T) {
		require.NoError(t, p.Verify(ctx, signedRef, signedDigest, f))
		require.NoError(t, p.Verify(ctx, host+"/test/signed@"+signedDigest, signedDigest, f), "by digest: same repository suffices")
	})
	t.Run("unsigned", func(t *testing.T) {
		err := p.Verify(ctx, unsignedRef, unsignedDigest, f)
		require.Error(t, err)
		t.Logf("error: %v", err)
		var ne *NoSignatureError
		require.ErrorAs(t, err, &ne)
		assert.True(t, errdefs.IsPermissionDenied(err))
		assert.True(t, strings.HasPrefix(err.Error(), "no signature for "+unsignedRef+"@"+unsignedDigest+" (sigstoreSigned requires one"), err.Error())
		assert.ErrorContains(t, err, "the registry has no signature manifest at "+ne.SignatureRef)
		assert.True(t, errdefs.IsNotFound(ne.Err), "%v", ne.Err)
		assert.Equal(t, host+"/test/unsigned:sha256-"+strings.TrimPrefix(unsignedDigest, "sha256:")+".sig", ne.SignatureRef)
	})
	t.Run("signed by another key", func(t *testing.T) {
		err := p.Verify(ctx, otherRef, otherDigest, f)
		require.Error(t, err)
		t.Logf("error: %v", err)
		var ue *UntrustedSignatureError
		require.ErrorAs(t, err, &ue)
		assert.True(t, errdefs.IsPermissionDenied(err))
		assert.True(t, strings.HasPrefix(err.Error(), "signature of "+otherRef+" is not by any trusted key"), err.Error())
		assert.Equal(t, 1, ue.Signatures)
		assert.Equal(t, 1, ue.Keys)
	})
	t.Run("one of several signatures is trusted", func(t *testing.T) {
		ref := host + "/test/cosigned:v1"
		digest := pushRandom(t, ref)
		signWith(t, other, ref, SignOptions{})
		require.Error(t, p.Verify(ctx, ref, digest, f))
		s := signWith(t, trusted, ref, SignOptions{})
		assert.Equal(t, 2, s.Signatures, "earlier signatures are kept")
		require.NoError(t, p.Verify(ctx, ref, digest, f))

		both := policyOf(t, map[string]string{host + "/test": fmt.Sprintf(`{"type": "sigstoreSigned", "keyDatas": [%q, %q]}`, otherData, trustedData)})
		require.NoError(t, both.Verify(ctx, otherRef, otherDigest, f), "keyDatas trusts either key")
	})
	t.Run("payload for another digest", func(t *testing.T) {
		ref := host + "/test/swapped:v1"
		digest := pushRandom(t, ref)
		// A genuine signature of the trusted key, for signedRef's digest,
		// replayed at this image's signature tag.
		signer, err := signature.LoadECDSASigner(trusted, crypto.SHA256)
		require.NoError(t, err)
		pl, err := json.Marshal(payload.Cosign{Image: mustRef(t, host+"/test/swapped@"+signedDigest).(name.Digest), ClaimedIdentity: ref})
		require.NoError(t, err)
		sig, err := signer.SignMessage(strings.NewReader(string(pl)))
		require.NoError(t, err)
		tag, err := SignatureTag(digest)
		require.NoError(t, err)
		_, err = pushSignature(mustRef(t, host+"/test/swapped:"+tag).(name.Tag), pl, sig, nil)
		require.NoError(t, err)

		err = p.Verify(ctx, ref, digest, f)
		require.Error(t, err)
		t.Logf("error: %v", err)
		var me *SignatureMismatchError
		require.ErrorAs(t, err, &me)
		assert.True(t, errdefs.IsPermissionDenied(err))
		assert.ErrorContains(t, err, "it signs manifest "+signedDigest+", not "+digest)
	})
	t.Run("signed identity", func(t *testing.T) {
		// The same manifest under a second tag: the signature claims :v1.
		v2 := host + "/test/signed:v2"
		img, err := remote.Image(mustRef(t, signedRef))
		require.NoError(t, err)
		require.NoError(t, remote.Write(mustRef(t, v2), img))

		err = p.Verify(ctx, v2, signedDigest, f)
		require.Error(t, err)
		t.Logf("error: %v", err)
		var me *SignatureMismatchError
		require.ErrorAs(t, err, &me)
		assert.ErrorContains(t, err, `it claims identity "`+signedRef+`", which signedIdentity matchRepoDigestOrExact does not accept for `+v2)

		repo := policyOf(t, map[string]string{host + "/test": sigstoreReq(trustedData, "matchRepository")})
		require.NoError(t, repo.Verify(ctx, v2, signedDigest, f))
		exact := policyOf(t, map[string]string{host + "/test": sigstoreReq(trustedData, "matchExact")})
		require.NoError(t, exact.Verify(ctx, signedRef, signedDigest, f))
		require.Error(t, exact.Verify(ctx, v2, signedDigest, f))

		// cosign's own default claims only the repository.
		ref := host + "/test/cosignstyle:v1"
		digest := pushRandom(t, ref)
		signWith(t, trusted, ref, SignOptions{Identity: host + "/test/cosignstyle"})
		require.Error(t, p.Verify(ctx, ref, digest, f), "matchRepoDigestOrExact needs the tag claimed")
		require.NoError(t, p.Verify(ctx, host+"/test/cosignstyle@"+digest, digest, f))
		require.NoError(t, repo.Verify(ctx, ref, digest, f))
	})
}

func TestVerifyPerRepository(t *testing.T) {
	ctx := logtest.WithT(context.Background(), t)
	host := startRegistry(t)
	keyA, dataA := newKey(t)
	keyB, dataB := newKey(t)
	f := RegistryFetcher{}

	aRef, bRef, openRef, closedRef := host+"/apps/a:v1", host+"/apps/b:v1", host+"/open/x:v1", host+"/elsewhere/y:v1"
	aDigest, bDigest := pushRandom(t, aRef), pushRandom(t, bRef)
	openDigest, closedDigest := pushRandom(t, openRef), pushRandom(t, closedRef)
	signWith(t, keyA, aRef, SignOptions{})
	signWith(t, keyB, bRef, SignOptions{})

	p := policyOf(t, map[string]string{
		host + "/apps/a": sigstoreReq(dataA, ""),
		host + "/apps":   sigstoreReq(dataB, ""),
		host + "/open":   `{"type": "insecureAcceptAnything"}`,
	})
	require.NoError(t, p.Verify(ctx, aRef, aDigest, f), "a: the repository scope trusts key A")
	require.NoError(t, p.Verify(ctx, bRef, bDigest, f), "b: the namespace scope trusts key B")
	require.NoError(t, p.Verify(ctx, openRef, openDigest, f))

	var re *RejectedError
	require.ErrorAs(t, p.Verify(ctx, closedRef, closedDigest, f), &re)

	// Swap the keys: each image is now signed by an untrusted key.
	swapped := policyOf(t, map[string]string{
		host + "/apps/a": sigstoreReq(dataB, ""),
		host + "/apps":   sigstoreReq(dataA, ""),
	})
	var ue *UntrustedSignatureError
	require.ErrorAs(t, swapped.Verify(ctx, aRef, aDigest, f), &ue)
	require.ErrorAs(t, swapped.Verify(ctx, bRef, bDigest, f), &ue)
}

// tamperFetcher serves the real signature manifest but altered payloads.
type tamperFetcher struct{ RegistryFetcher }

func (f tamperFetcher) Blob(ctx context.Context, repo, digest string, maxBytes int64) ([]byte, error) {
	b, err := f.RegistryFetcher.Blob(ctx, repo, digest, maxBytes)
	if err != nil {
		return nil, err
	}
	return []byte(strings.Replace(string(b), "sha256:", "sha256:0", 1)[:len(b)]), nil
}

// brokenFetcher fails like a registry answering 500.
type brokenFetcher struct{}

func (brokenFetcher) Manifest(context.Context, string, string) ([]byte, error) {
	return nil, fmt.Errorf("fetch manifest: HTTP 500 Internal Server Error: %w", errdefs.ErrUnavailable)
}

func (brokenFetcher) Blob(context.Context, string, string, int64) ([]byte, error) {
	return nil, fmt.Errorf("fetch blob: HTTP 500 Internal Server Error: %w", errdefs.ErrUnavailable)
}

func TestVerifyUntrustedTransport(t *testing.T) {
	ctx := logtest.WithT(context.Background(), t)
	host := startRegistry(t)
	key, data := newKey(t)
	ref := host + "/test/app:v1"
	digest := pushRandom(t, ref)
	signWith(t, key, ref, SignOptions{})
	p := policyOf(t, map[string]string{host + "/test": sigstoreReq(data, "")})

	err := p.Verify(ctx, ref, digest, tamperFetcher{})
	require.Error(t, err)
	t.Logf("error: %v", err)
	var ue *UntrustedSignatureError
	require.ErrorAs(t, err, &ue)
	assert.ErrorContains(t, err, "payload (")
	assert.ErrorContains(t, err, "does not match its descriptor")

	err = p.Verify(ctx, ref, digest, brokenFetcher{})
	require.Error(t, err)
	t.Logf("error: %v", err)
	var ne *NoSignatureError
	assert.False(t, errors.As(err, &ne), "a failing registry is not an unsigned image")
	assert.True(t, errdefs.IsUnavailable(err))
	assert.ErrorContains(t, err, "fetch signatures of "+ref+": fetch manifest: HTTP 500")
}
