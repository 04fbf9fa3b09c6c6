package imagepolicy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// SignOptions configures Sign.
type SignOptions struct {
	// Identity is the reference the signature claims
	// (critical.identity.docker-reference). "" means the reference as
	// given, normalized ("docker.io/library/busybox:latest"), or only its
	// repository when it names a digest (as cosign does).
	Identity string
	// NameOptions parse the reference, e.g. name.Insecure for a
	// plain-HTTP registry.
	NameOptions []name.Option
	// RemoteOptions are passed to every registry call (transport, auth);
	// remote.WithContext is added.
	RemoteOptions []remote.Option
}

// Signed describes a signature pushed by Sign.
type Signed struct {
	// Digest is the "sha256:<hex>" signed: what the reference resolved to
	// (an index digest for a multi-platform image).
	Digest string
	// Repository is the image's repository, normalized as policy scopes
	// are written: "host[:port]/path", Docker Hub as "docker.io/library/…".
	Repository string
	// SignatureRef is where the signature manifest was pushed,
	// "host/repo:sha256-<hex>.sig".
	SignatureRef string
	// Identity is the docker-reference claimed.
	Identity string
	// Payload is the simple-signing JSON signed.
	Payload []byte
	// Signature is the signature over Payload (ASN.1 DER for ECDSA).
	Signature []byte
	// Signatures counts the signature layers now at SignatureRef
	// (earlier signatures are kept, as cosign does).
	Signatures int
}

// Sign resolves ref at its registry, signs its digest with signer
// (sigstore signature.Signer, e.g. signature.LoadECDSASigner(key,
// crypto.SHA256)), and pushes the signature in cosign's layout: a
// simple-signing payload layer with the base64 signature in annotation
// SignatureAnnotation, appended to the manifest at SignatureTag(digest)
// in the same repository. Errors name the step that failed ("resolve",
// "sign", "push") and wrap the registry's error.
func Sign(ctx context.Context, ref string, signer signature.Signer, opts SignOptions) (*Signed, error) {
	r, err := name.ParseReference(ref, opts.NameOptions...)
	if err != nil {
		return nil, fmt.Errorf("sign %s: parse reference: %w", ref, invalid(err))
	}
	ropts := append(append([]remote.Option(nil), opts.RemoteOptions...), remote.WithContext(ctx))
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return nil, fmt.Errorf("sign %s: resolve: %w", ref, classify(err))
	}
	named, err := parseImageRef(ref)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", ref, err)
	}
	identity := opts.Identity
	if identity == "" {
		identity = defaultIdentity(named)
	}
	digest := desc.Digest.String()
	pl, err := json.Marshal(payload.Cosign{Image: r.Context().Digest(digest), ClaimedIdentity: identity})
	if err != nil {
		return nil, fmt.Errorf("sign %s: encode payload: %w", ref, err)
	}
	sig, err := signer.SignMessage(bytes.NewReader(pl))
	if err != nil {
		return nil, fmt.Errorf("sign %s: sign payload: %w", ref, err)
	}
	tag, err := SignatureTag(digest)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", ref, err)
	}
	sigRef := r.Context().Tag(tag)
	n, err := pushSignature(sigRef, pl, sig, ropts)
	if err != nil {
		return nil, fmt.Errorf("sign %s: push signature to %s: %w", ref, sigRef, err)
	}
	return &Signed{
		Digest: digest, Repository: named.Name(), SignatureRef: sigRef.String(),
		Identity: identity, Payload: pl, Signature: sig, Signatures: n,
	}, nil
}

// defaultIdentity is the identity Sign claims for named (from
// parseImageRef): the reference with its tag ("latest" when none), or the
// repository alone for a reference by digest.
func defaultIdentity(named reference.Named) string {
	if _, ok := named.(reference.Digested); ok {
		return named.Name()
	}
	return named.String()
}

// pushSignature appends a signature layer (payload pl, signature sig) to
// the signature manifest at sigRef, creating it when absent, and returns
// how many signature layers it now holds.
func pushSignature(sigRef name.Tag, pl, sig []byte, ropts []remote.Option) (int, error) {
	base, err := remote.Image(sigRef, ropts...)
	switch {
	case errdefs.IsNotFound(classify(err)):
		base = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	case err != nil:
		return 0, fmt.Errorf("read existing signatures: %w", err)
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(pl, SimpleSigningMediaType),
		Annotations: map[string]string{SignatureAnnotation: base64.StdEncoding.EncodeToString(sig)},
	})
	if err != nil {
		return 0, fmt.Errorf("add signature layer: %w", err)
	}
	if err := remote.Write(sigRef, img, ropts...); err != nil {
		return 0, err
	}
	layers, err := img.Layers()
	if err != nil {
		return 0, err
	}
	return len(layers), nil
}
