package imagepolicy

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// RequirementType is a containers-policy.json requirement "type".
type RequirementType string

// The requirement types the guest enforces.
const (
	// InsecureAcceptAnything accepts any image.
	InsecureAcceptAnything RequirementType = "insecureAcceptAnything"
	// Reject refuses every image.
	Reject RequirementType = "reject"
	// SigstoreSigned requires a cosign signature by one of the keys.
	SigstoreSigned RequirementType = "sigstoreSigned"
)

// IdentityType is a signedIdentity "type" (containers-policy.json.5.md,
// "signedIdentity"): how the reference a signature claims
// (critical.identity.docker-reference) must relate to the image reference
// being pulled.
type IdentityType string

// The signedIdentity types supported.
const (
	// MatchRepoDigestOrExact (the default): a reference with a tag must be
	// claimed exactly ("host/repo:tag"); a reference by digest only needs
	// the same repository. Signatures made by the cosign CLI claim only
	// the repository ("host/repo"): images pulled by tag need
	// MatchRepository for them (CoCo's image-rs uses that default for
	// cosign); `ccctl image sign` claims the full reference.
	MatchRepoDigestOrExact IdentityType = "matchRepoDigestOrExact"
	// MatchExact: the claimed reference equals the image reference, which
	// must have a tag or a digest.
	MatchExact IdentityType = "matchExact"
	// MatchRepository: same repository, any tag or digest.
	MatchRepository IdentityType = "matchRepository"
	// ExactReference: the claimed reference is IdentityMatch.DockerReference.
	ExactReference IdentityType = "exactReference"
	// ExactRepository: the claimed repository is
	// IdentityMatch.DockerRepository.
	ExactRepository IdentityType = "exactRepository"
)

// Requirement is one parsed policy requirement.
type Requirement struct {
	// Type is the requirement type.
	Type RequirementType
	// Keys are the trusted public keys of a SigstoreSigned requirement
	// (ECDSA P-256/P-384/P-521, RSA or Ed25519), from keyData/keyDatas.
	Keys []crypto.PublicKey
	// Identity is the signedIdentity of a SigstoreSigned requirement.
	Identity IdentityMatch

	verifiers []signature.Verifier // one per Keys entry, SHA-256 (cosign's hash)
}

// IdentityMatch is a parsed signedIdentity.
type IdentityMatch struct {
	// Type is the match type; MatchRepoDigestOrExact when the policy
	// gives none.
	Type IdentityType
	// DockerReference is the normalized reference of ExactReference.
	DockerReference string
	// DockerRepository is the normalized repository of ExactRepository.
	DockerRepository string
}

// sigstoreFields are the sigstoreSigned fields of containers/image and
// what the guest does with each: "" means supported, anything else is the
// reason it is refused.
var sigstoreFields = map[string]string{
	"type":                "",
	"keyData":             "",
	"keyDatas":            "",
	"signedIdentity":      "",
	"keyPath":             "keyPath names a file, and the guest has no trusted files: embed the public key as keyData (base64 of the PEM)",
	"keyPaths":            "keyPaths names files, and the guest has no trusted files: embed the public keys as keyDatas (base64 of each PEM)",
	"fulcio":              "keyless (Fulcio) verification is not supported: sign with a key and give it as keyData",
	"rekorPublicKeyPath":  "Rekor transparency-log verification is not supported: remove rekorPublicKeyPath",
	"rekorPublicKeyData":  "Rekor transparency-log verification is not supported: remove rekorPublicKeyData",
	"rekorPublicKeyPaths": "Rekor transparency-log verification is not supported: remove rekorPublicKeyPaths",
	"rekorPublicKeyDatas": "Rekor transparency-log verification is not supported: remove rekorPublicKeyDatas",
	"pki":                 "X.509 PKI verification is not supported: sign with a key and give it as keyData",
}

// parseRequirement parses one requirement object.
func parseRequirement(raw json.RawMessage) (Requirement, error) {
	var head struct {
		Type RequirementType `json:"type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return Requirement{}, fmt.Errorf("want a JSON object with a \"type\": %w", invalid(err))
	}
	fields, err := fieldsOf(raw)
	if err != nil {
		return Requirement{}, invalid(err)
	}
	switch head.Type {
	case InsecureAcceptAnything, Reject:
		for _, f := range fields {
			if f != "type" {
				return Requirement{}, fmt.Errorf("%s takes no fields but has %q: %w", head.Type, f, errdefs.ErrInvalidArgument)
			}
		}
		return Requirement{Type: head.Type}, nil
	case SigstoreSigned:
		return parseSigstoreSigned(raw, fields)
	case "signedBy":
		return Requirement{}, fmt.Errorf("type signedBy (GPG simple signing) is not supported: sign with cosign or `ccctl image sign` and use sigstoreSigned: %w", errdefs.ErrNotImplemented)
	case "":
		return Requirement{}, fmt.Errorf("\"type\" is missing: want %s, %s or %s: %w", InsecureAcceptAnything, Reject, SigstoreSigned, errdefs.ErrInvalidArgument)
	default:
		return Requirement{}, fmt.Errorf("unknown type %q: want %s, %s or %s: %w", head.Type, InsecureAcceptAnything, Reject, SigstoreSigned, errdefs.ErrInvalidArgument)
	}
}

// parseSigstoreSigned parses a sigstoreSigned requirement and loads its
// keys.
func parseSigstoreSigned(raw json.RawMessage, fields []string) (Requirement, error) {
	for _, f := range fields {
		why, known := sigstoreFields[f]
		if !known {
			return Requirement{}, fmt.Errorf("sigstoreSigned has unknown field %q: %w", f, errdefs.ErrInvalidArgument)
		}
		if why != "" {
			return Requirement{}, fmt.Errorf("sigstoreSigned field %q: %s: %w", f, why, errdefs.ErrNotImplemented)
		}
	}
	var s struct {
		KeyData        *string         `json:"keyData"`
		KeyDatas       []string        `json:"keyDatas"`
		SignedIdentity json.RawMessage `json:"signedIdentity"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return Requirement{}, fmt.Errorf("sigstoreSigned: %w", invalid(err))
	}
	var datas []string
	switch {
	case s.KeyData != nil && s.KeyDatas != nil:
		return Requirement{}, fmt.Errorf("sigstoreSigned has both keyData and keyDatas: give exactly one: %w", errdefs.ErrInvalidArgument)
	case s.KeyData != nil:
		datas = []string{*s.KeyData}
	case len(s.KeyDatas) > 0:
		datas = s.KeyDatas
	default:
		return Requirement{}, fmt.Errorf("sigstoreSigned has no keyData: give the trusted public key as base64 of its PEM: %w", errdefs.ErrInvalidArgument)
	}
	r := Requirement{Type: SigstoreSigned}
	for i, d := range datas {
		keys, err := parseKeyData(d)
		if err != nil {
			field := "keyData"
			if s.KeyDatas != nil {
				field = fmt.Sprintf("keyDatas[%d]", i)
			}
			return Requirement{}, fmt.Errorf("sigstoreSigned %s: %w", field, err)
		}
		r.Keys = append(r.Keys, keys...)
	}
	for _, k := range r.Keys {
		v, err := signature.LoadVerifier(k, crypto.SHA256)
		if err != nil {
			return Requirement{}, fmt.Errorf("sigstoreSigned: load %T key: %w", k, invalid(err))
		}
		r.verifiers = append(r.verifiers, v)
	}
	var err error
	if r.Identity, err = parseIdentity(s.SignedIdentity); err != nil {
		return Requirement{}, fmt.Errorf("sigstoreSigned signedIdentity: %w", err)
	}
	return r, nil
}

// parseKeyData decodes keyData: base64 (standard alphabet, as
// containers/image's JSON []byte) of one or more PEM public keys; PEM text
// given as is is accepted too.
func parseKeyData(d string) ([]crypto.PublicKey, error) {
	pemText := []byte(d)
	if !strings.HasPrefix(strings.TrimSpace(d), "-----BEGIN") {
		var err error
		if pemText, err = base64.StdEncoding.DecodeString(strings.TrimSpace(d)); err != nil {
			return nil, fmt.Errorf("decode base64: want base64 of a PEM public key (e.g. `base64 -w0 cosign.pub`): %w", invalid(err))
		}
	}
	var keys []crypto.PublicKey
	for {
		var b *pem.Block
		b, pemText = pem.Decode(pemText)
		if b == nil {
			break
		}
		k, err := cryptoutils.UnmarshalPEMToPublicKey(pem.EncodeToMemory(b))
		if err != nil {
			return nil, fmt.Errorf("parse PEM block %q: %w", b.Type, invalid(err))
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no PEM public key found: want \"-----BEGIN PUBLIC KEY-----\" text, base64-encoded: %w", errdefs.ErrInvalidArgument)
	}
	return keys, nil
}

// parseIdentity parses signedIdentity; absent means
// MatchRepoDigestOrExact.
func parseIdentity(raw json.RawMessage) (IdentityMatch, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return IdentityMatch{Type: MatchRepoDigestOrExact}, nil
	}
	var s struct {
		Type             IdentityType `json:"type"`
		DockerReference  string       `json:"dockerReference"`
		DockerRepository string       `json:"dockerRepository"`
		Prefix           string       `json:"prefix"`
		SignedPrefix     string       `json:"signedPrefix"`
	}
	if err := strictUnmarshal(raw, &s); err != nil {
		return IdentityMatch{}, invalid(err)
	}
	only := func(field string, set bool) error {
		if !set {
			return fmt.Errorf("%s needs %q: %w", s.Type, field, errdefs.ErrInvalidArgument)
		}
		return nil
	}
	noExtra := func(allowed string) error {
		for f, v := range map[string]string{"dockerReference": s.DockerReference, "dockerRepository": s.DockerRepository, "prefix": s.Prefix, "signedPrefix": s.SignedPrefix} {
			if v != "" && f != allowed {
				return fmt.Errorf("%s does not take %q: %w", s.Type, f, errdefs.ErrInvalidArgument)
			}
		}
		return nil
	}
	m := IdentityMatch{Type: s.Type}
	switch s.Type {
	case MatchRepoDigestOrExact, MatchExact, MatchRepository:
		return m, noExtra("")
	case ExactReference:
		if err := firstErr(only("dockerReference", s.DockerReference != ""), noExtra("dockerReference")); err != nil {
			return IdentityMatch{}, err
		}
		n, err := reference.ParseNormalizedNamed(s.DockerReference)
		if err != nil {
			return IdentityMatch{}, fmt.Errorf("exactReference dockerReference %q: %w", s.DockerReference, invalid(err))
		}
		if reference.IsNameOnly(n) {
			return IdentityMatch{}, fmt.Errorf("exactReference dockerReference %q has no tag or digest: %w", s.DockerReference, errdefs.ErrInvalidArgument)
		}
		m.DockerReference = n.String()
		return m, nil
	case ExactRepository:
		if err := firstErr(only("dockerRepository", s.DockerRepository != ""), noExtra("dockerRepository")); err != nil {
			return IdentityMatch{}, err
		}
		n, err := reference.ParseNormalizedNamed(s.DockerRepository)
		if err != nil || !reference.IsNameOnly(n) {
			return IdentityMatch{}, fmt.Errorf("exactRepository dockerRepository %q: want \"host[:port]/repo\" without tag or digest: %w", s.DockerRepository, errdefs.ErrInvalidArgument)
		}
		m.DockerRepository = n.Name()
		return m, nil
	case "remapIdentity":
		return IdentityMatch{}, fmt.Errorf("remapIdentity is not supported: use matchRepository or exactRepository: %w", errdefs.ErrNotImplemented)
	case "":
		return IdentityMatch{}, fmt.Errorf("\"type\" is missing: want %s, %s, %s, %s or %s: %w", MatchRepoDigestOrExact, MatchExact, MatchRepository, ExactReference, ExactRepository, errdefs.ErrInvalidArgument)
	default:
		return IdentityMatch{}, fmt.Errorf("unknown type %q: want %s, %s, %s, %s or %s: %w", s.Type, MatchRepoDigestOrExact, MatchExact, MatchRepository, ExactReference, ExactRepository, errdefs.ErrInvalidArgument)
	}
}

// firstErr returns the first non-nil error of errs.
func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// matches reports whether claimed (a signature's
// critical.identity.docker-reference) is acceptable for the image
// reference image (from parseImageRef), following containers/image's
// PolicyReferenceMatch implementations.
func (m IdentityMatch) matches(image reference.Named, claimed string) bool {
	sig, err := reference.ParseNormalizedNamed(claimed)
	if err != nil {
		return false
	}
	switch m.Type {
	case MatchExact:
		return !reference.IsNameOnly(image) && !reference.IsNameOnly(sig) && sig.String() == image.String()
	case MatchRepository:
		return sig.Name() == image.Name()
	case ExactReference:
		return !reference.IsNameOnly(sig) && sig.String() == m.DockerReference
	case ExactRepository:
		return sig.Name() == m.DockerRepository
	default: // MatchRepoDigestOrExact
		if _, ok := image.(reference.Digested); ok {
			return sig.Name() == image.Name()
		}
		if _, ok := image.(reference.Tagged); ok {
			return sig.String() == image.String()
		}
		return false
	}
}
