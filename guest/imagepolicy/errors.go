package imagepolicy

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// RejectedError reports an image refused by a "reject" requirement. It
// matches errdefs.ErrPermissionDenied with errors.Is.
type RejectedError struct {
	Ref   string // the image reference as given to Verify
	Scope string // the policy scope that applied: `transports.docker["…"]` or "default"
}

// Error implements error: "image <ref> rejected by policy (reject): scope …".
func (e *RejectedError) Error() string {
	return fmt.Sprintf("image %s rejected by policy (reject): scope %s", e.Ref, e.Scope)
}

// Unwrap makes errors.Is(err, errdefs.ErrPermissionDenied) true.
func (e *RejectedError) Unwrap() error { return errdefs.ErrPermissionDenied }

// NoSignatureError reports that a sigstoreSigned requirement applies but
// the registry holds no signature manifest for the image. It matches
// errdefs.ErrPermissionDenied with errors.Is.
type NoSignatureError struct {
	Ref          string // the image reference as given to Verify
	Digest       string // the manifest digest verified, "sha256:<hex>"
	SignatureRef string // where the signature was looked for: "host/repo:sha256-<hex>.sig"
	Scope        string // the policy scope that applied
	Err          error  // the registry's not-found answer, or nil when the manifest exists but holds no signature layer
}

// Error implements error: "no signature for <ref>@<digest> (sigstoreSigned
// requires one): …".
func (e *NoSignatureError) Error() string {
	what := "the registry has no signature manifest at " + e.SignatureRef
	if e.Err == nil {
		what = "the signature manifest at " + e.SignatureRef + " has no cosign signature layer"
	}
	return fmt.Sprintf("no signature for %s@%s (sigstoreSigned requires one, scope %s): %s: sign the image with `ccctl image sign` or `cosign sign --key`",
		e.Ref, e.Digest, e.Scope, what)
}

// Unwrap makes errors.Is(err, errdefs.ErrPermissionDenied) true.
func (e *NoSignatureError) Unwrap() error { return errdefs.ErrPermissionDenied }

// UntrustedSignatureError reports that none of the image's signatures
// verifies with a key of the sigstoreSigned requirement. It matches
// errdefs.ErrPermissionDenied with errors.Is.
type UntrustedSignatureError struct {
	Ref          string   // the image reference as given to Verify
	SignatureRef string   // "host/repo:sha256-<hex>.sig"
	Scope        string   // the policy scope that applied
	Signatures   int      // signature layers examined
	Keys         int      // trusted keys tried
	Problems     []string // per-layer reasons other than a wrong key (malformed layers)
}

// Error implements error: "signature of <ref> is not by any trusted key: …".
func (e *UntrustedSignatureError) Error() string {
	s := fmt.Sprintf("signature of %s is not by any trusted key: none of the %d signature(s) at %s verifies with the %d key(s) of scope %s",
		e.Ref, e.Signatures, e.SignatureRef, e.Keys, e.Scope)
	if len(e.Problems) > 0 {
		s += " (" + strings.Join(e.Problems, "; ") + ")"
	}
	return s + ": sign the image with a trusted key, or add its public key to the policy"
}

// Unwrap makes errors.Is(err, errdefs.ErrPermissionDenied) true.
func (e *UntrustedSignatureError) Unwrap() error { return errdefs.ErrPermissionDenied }

// SignatureMismatchError reports signatures that verify with a trusted key
// but do not apply to this image: they sign another manifest digest, claim
// an identity the policy's signedIdentity does not accept, or are not
// cosign image signatures. It matches errdefs.ErrPermissionDenied with
// errors.Is.
type SignatureMismatchError struct {
	Ref     string   // the image reference as given to Verify
	Digest  string   // the manifest digest verified
	Scope   string   // the policy scope that applied
	Reasons []string // one per trusted signature, e.g. "it signs manifest sha256:…, not sha256:…"
}

// Error implements error.
func (e *SignatureMismatchError) Error() string {
	return fmt.Sprintf("signature of %s@%s by a trusted key does not apply to this image (scope %s): %s",
		e.Ref, e.Digest, e.Scope, strings.Join(e.Reasons, "; "))
}

// Unwrap makes errors.Is(err, errdefs.ErrPermissionDenied) true.
func (e *SignatureMismatchError) Unwrap() error { return errdefs.ErrPermissionDenied }
