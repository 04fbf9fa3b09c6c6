package imagepolicy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// Cosign signature layout (sigstore cosign, specs/SIGNATURE_SPEC.md).
const (
	// SignatureAnnotation is the layer annotation holding the base64
	// (standard alphabet) signature over the layer's payload bytes.
	SignatureAnnotation = "dev.cosignproject.cosign/signature"
	// SimpleSigningMediaType is the media type of a signature layer.
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
)

// Bounds on what is read from the registry for one image's signatures.
const (
	maxSignatureLayers = 64      // signature layers examined per image
	maxPayloadSize     = 1 << 20 // bytes per simple-signing payload
)

var sha256Digest = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// SignatureTag returns cosign's signature tag for a manifest digest:
// "sha256:<hex>" → "sha256-<hex>.sig". It returns an
// errdefs.ErrInvalidArgument-classed error for anything but a sha256
// digest.
func SignatureTag(digest string) (string, error) {
	if !sha256Digest.MatchString(digest) {
		return "", fmt.Errorf("signature tag for digest %q: want \"sha256:\" and 64 lowercase hex digits: %w", digest, errdefs.ErrInvalidArgument)
	}
	return "sha256-" + strings.TrimPrefix(digest, "sha256:") + ".sig", nil
}

// Verify decides whether the image ref may run under the policy. ref is
// the reference pulled ("host[:port]/repo:tag" or "…@sha256:<hex>");
// manifestDigest ("sha256:<hex>") is the digest ref resolves to at the
// registry: the index digest when ref names an index (that is what
// cosign and `ccctl image sign` sign), else the image manifest digest.
// Signatures are read through f only when a sigstoreSigned requirement
// applies.
//
// It returns nil when every requirement of the applicable scope holds,
// and otherwise one of (all matching errdefs.ErrPermissionDenied):
// *RejectedError, *NoSignatureError, *UntrustedSignatureError,
// *SignatureMismatchError. A bad ref or digest is
// errdefs.ErrInvalidArgument; a registry failure while fetching
// signatures is returned wrapped ("fetch signatures of <ref>: …"), never
// treated as "unsigned" unless the registry said the tag does not exist.
func (p *Policy) Verify(ctx context.Context, ref, manifestDigest string, f Fetcher) error {
	named, err := parseImageRef(ref)
	if err != nil {
		return err
	}
	if !sha256Digest.MatchString(manifestDigest) {
		return fmt.Errorf("verify %s: manifest digest %q: want \"sha256:\" and 64 lowercase hex digits: %w", ref, manifestDigest, errdefs.ErrInvalidArgument)
	}
	if d, ok := named.(reference.Digested); ok && d.Digest().String() != manifestDigest {
		return fmt.Errorf("verify %s: the reference pins %s but the manifest verified is %s: pass the digest the reference resolves to: %w", ref, d.Digest(), manifestDigest, errdefs.ErrInvalidArgument)
	}
	scope, reqs, err := p.Scope(ref)
	if err != nil {
		return err
	}
	var sigs *signatureSet
	for _, r := range reqs {
		switch r.Type {
		case InsecureAcceptAnything:
		case Reject:
			return &RejectedError{Ref: ref, Scope: scope}
		case SigstoreSigned:
			if sigs == nil {
				if sigs, err = fetchSignatures(ctx, f, named, manifestDigest); err != nil {
					return fmt.Errorf("fetch signatures of %s: %w", ref, err)
				}
			}
			if err := r.verify(named, ref, manifestDigest, scope, sigs); err != nil {
				return err
			}
		}
	}
	log.G(ctx).WithField("ref", ref).WithField("digest", manifestDigest).WithField("scope", scope).
		WithField("requirements", len(reqs)).Info("image accepted by the image security policy")
	return nil
}

// signatureSet is what the registry holds at an image's signature tag.
type signatureSet struct {
	ref      string // "host/repo:sha256-<hex>.sig"
	found    bool   // whether the signature manifest exists
	notFound error  // the registry's not-found answer when !found
	layers   []sigLayer
}

// sigLayer is one signature layer: a payload and its signature, or why it
// could not be read.
type sigLayer struct {
	digest  string
	payload []byte
	sig     []byte
	problem string // non-empty when the layer is unusable
}

// fetchSignatures reads the signature manifest of named@digest and its
// payloads, checking each payload's digest and size.
func fetchSignatures(ctx context.Context, f Fetcher, named reference.Named, digest string) (*signatureSet, error) {
	tag, err := SignatureTag(digest)
	if err != nil {
		return nil, err
	}
	repo := named.Name()
	set := &signatureSet{ref: repo + ":" + tag}
	raw, err := f.Manifest(ctx, repo, tag)
	if errdefs.IsNotFound(err) {
		set.notFound = err
		return set, nil
	}
	if err != nil {
		return nil, err
	}
	set.found = true
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse signature manifest %s: %w", set.ref, invalid(err))
	}
	if len(m.Layers) > maxSignatureLayers {
		return nil, fmt.Errorf("signature manifest %s has %d layers, more than the %d examined: remove stale signatures: %w", set.ref, len(m.Layers), maxSignatureLayers, errdefs.ErrInvalidArgument)
	}
	for i, l := range m.Layers {
		sl := sigLayer{digest: l.Digest.String()}
		b64, ok := l.Annotations[SignatureAnnotation]
		switch {
		case l.MediaType != SimpleSigningMediaType:
			continue // not a signature (e.g. another artifact); cosign ignores it too
		case !ok:
			sl.problem = fmt.Sprintf("layer %d has no %s annotation", i, SignatureAnnotation)
		case l.Size < 0 || l.Size > maxPayloadSize:
			sl.problem = fmt.Sprintf("layer %d payload is %d bytes, outside 0..%d", i, l.Size, maxPayloadSize)
		}
		if sl.problem == "" {
			if sl.sig, err = base64.StdEncoding.DecodeString(b64); err != nil {
				sl.problem = fmt.Sprintf("layer %d signature annotation is not base64: %v", i, err)
			}
		}
		if sl.problem == "" {
			sl.payload, err = f.Blob(ctx, repo, sl.digest, l.Size)
			if err != nil {
				return nil, fmt.Errorf("fetch signature payload %s: %w", sl.digest, err)
			}
			if got := sha256Hex(sl.payload); got != sl.digest || int64(len(sl.payload)) != l.Size {
				sl.problem = fmt.Sprintf("layer %d payload (%d bytes, %s) does not match its descriptor (%d bytes, %s)", i, len(sl.payload), got, l.Size, sl.digest)
			}
		}
		set.layers = append(set.layers, sl)
	}
	return set, nil
}

// verify checks a sigstoreSigned requirement against the fetched
// signatures: one signature must verify with a trusted key, sign
// digest, be a cosign image signature and claim an identity the
// requirement's signedIdentity accepts.
func (r Requirement) verify(named reference.Named, ref, digest, scope string, set *signatureSet) error {
	if !set.found || len(set.layers) == 0 {
		return &NoSignatureError{Ref: ref, Digest: digest, SignatureRef: set.ref, Scope: scope, Err: set.notFound}
	}
	var problems, mismatches []string
	for _, sl := range set.layers {
		if sl.problem != "" {
			problems = append(problems, sl.problem)
			continue
		}
		if !r.trusts(sl) {
			continue
		}
		why := r.applies(named, digest, sl.payload)
		if why == "" {
			return nil
		}
		mismatches = append(mismatches, why)
	}
	if len(mismatches) > 0 {
		return &SignatureMismatchError{Ref: ref, Digest: digest, Scope: scope, Reasons: mismatches}
	}
	return &UntrustedSignatureError{Ref: ref, SignatureRef: set.ref, Scope: scope, Signatures: len(set.layers), Keys: len(r.Keys), Problems: problems}
}

// trusts reports whether sl's signature verifies with one of the
// requirement's keys.
func (r Requirement) trusts(sl sigLayer) bool {
	for _, v := range r.verifiers {
		if v.VerifySignature(bytes.NewReader(sl.sig), bytes.NewReader(sl.payload)) == nil {
			return true
		}
	}
	return false
}

// applies returns "" when a verified payload applies to named@digest, or
// why it does not.
func (r Requirement) applies(named reference.Named, digest string, raw []byte) string {
	var p payload.SimpleContainerImage
	if err := json.Unmarshal(raw, &p); err != nil {
		return fmt.Sprintf("its payload is not simple-signing JSON: %v", err)
	}
	if p.Critical.Type != payload.CosignSignatureType {
		return fmt.Sprintf("its critical.type is %q, want %q", p.Critical.Type, payload.CosignSignatureType)
	}
	if got := p.Critical.Image.DockerManifestDigest; got != digest {
		return fmt.Sprintf("it signs manifest %s, not %s", got, digest)
	}
	if claimed := p.Critical.Identity.DockerReference; !r.Identity.matches(named, claimed) {
		return fmt.Sprintf("it claims identity %q, which signedIdentity %s does not accept for %s", claimed, r.Identity.Type, named)
	}
	return ""
}

// sha256Hex is "sha256:<hex>" of b.
func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
