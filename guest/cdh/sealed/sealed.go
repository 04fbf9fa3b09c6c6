// Package sealed unseals CoCo sealed secrets inside the guest
// (guest-components confidential-data-hub, docs/SEALED_SECRET.md and
// hub/src/secret): strings of the form
//
//	sealed.<JWS protected header>.<JWS payload>.<JWS signature>
//
// (each part base64url without padding) whose payload is JSON:
//
//	{"version": "0.1.0", "type": "vault", "name": "kbs:///default/sealed-secret/x",
//	 "provider": "kbs", "provider_settings": {}, "annotations": {}}
//
// A "vault" secret is a pointer: its value is the KBS resource it names,
// fetched after attestation. "envelope" secrets (value encrypted under a
// KMS key) and providers other than "kbs" are refused as not supported.
//
// Signatures are verified as guest-components does: the protected header
// must say {"alg": "ES256", "kid": "<kid>"} and the signature must verify
// over "<header>.<payload>" with the P-256 JWK stored in the KBS at kid (a
// kbs:// resource URI; guest-components' other kid form, a file in the
// CDH's credential directory, does not exist in a Coffer guest). Because
// the secret's value itself only ever comes from the attested KBS over its
// encrypted channel, the signature protects which resource a workload
// receives (a host could otherwise swap pointers between secrets).
// Unsealer.SkipVerification accepts unsigned secrets (CoCo's documented
// "sealed.fakejwsheader.<payload>.fakesignature" form), like
// guest-components' SKIP_SEALED_SECRET_VERIFICATION=true.
package sealed

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/go-jose/go-jose/v4"

	"github.com/cofferhq/coffer/guest/cdh"
)

// Prefix starts every sealed secret.
const Prefix = "sealed."

// Version is the only payload version defined.
const Version = "0.1.0"

// The secret types of the payload's "type".
const (
	TypeVault    = "vault"    // a pointer to a resource: supported
	TypeEnvelope = "envelope" // a KMS-wrapped value: not supported
)

// ProviderKBS is the only vault provider supported: "name" is a KBS
// resource URI.
const ProviderKBS = "kbs"

// maxSealedSize bounds a sealed string.
const maxSealedSize = 64 << 10 // bytes

// Secret is the JSON payload of a vault sealed secret.
type Secret struct {
	Version          string         `json:"version"`           // Version
	Type             string         `json:"type"`              // TypeVault
	Name             string         `json:"name"`              // for provider kbs, "kbs:///repo/type/tag"
	Provider         string         `json:"provider"`          // ProviderKBS
	ProviderSettings map[string]any `json:"provider_settings"` // provider client settings; unused by kbs
	Annotations      map[string]any `json:"annotations"`       // provider fetch options; unused by kbs
}

// IsSealed reports whether s is meant as a sealed secret (starts with
// "sealed."); it does not check that s is well formed.
func IsSealed(s string) bool { return strings.HasPrefix(s, Prefix) }

// NewVaultSecret returns the payload of a vault secret pointing at the KBS
// resource uri ("kbs:///repo/type/tag"). It returns an
// errdefs.ErrInvalidArgument-classed error when uri is not a resource URI.
func NewVaultSecret(uri string) (Secret, error) {
	if _, err := cdh.ParseResourceURI(uri); err != nil {
		return Secret{}, err
	}
	return Secret{Version: Version, Type: TypeVault, Name: uri, Provider: ProviderKBS,
		ProviderSettings: map[string]any{}, Annotations: map[string]any{}}, nil
}

// Seal signs s as a JWS (ES256, protected header {"alg","kid"}) with key,
// a P-256 private key whose public JWK is stored in the KBS at kid (a
// kbs:// resource URI), and returns "sealed.<header>.<payload>.<signature>".
func Seal(s Secret, key *ecdsa.PrivateKey, kid string) (string, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return "", fmt.Errorf("seal secret: want an ECDSA P-256 key (ES256): %w", errdefs.ErrInvalidArgument)
	}
	if _, err := cdh.ParseResourceURI(kid); err != nil {
		return "", fmt.Errorf("seal secret: kid: %w", err)
	}
	payload, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("seal secret: encode payload: %w", err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		return "", fmt.Errorf("seal secret: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("seal secret: sign: %w", err)
	}
	compact, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("seal secret: serialize: %w", err)
	}
	return Prefix + compact, nil
}

// SealUnsigned returns s as an unsigned sealed secret,
// "sealed.<base64url {"alg":"none"}>.<payload>." (empty signature), which
// only an Unsealer with SkipVerification accepts.
func SealUnsigned(s Secret) (string, error) {
	payload, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("seal secret: encode payload: %w", err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	return Prefix + b64([]byte(`{"alg":"none"}`)) + "." + b64(payload) + ".", nil
}

// PublicJWK returns the public JWK (JSON) of key with kid, the document to
// store in the KBS at kid for guests to verify secrets sealed with key.
func PublicJWK(key *ecdsa.PrivateKey, kid string) ([]byte, error) {
	return jose.JSONWebKey{Key: key.Public(), KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"}.MarshalJSON()
}

// split checks the shape of a sealed string and returns its three JWS
// parts.
func split(s string) ([]string, error) {
	if !IsSealed(s) {
		return nil, fmt.Errorf("not a sealed secret: want \"sealed.<header>.<payload>.<signature>\": %w", errdefs.ErrInvalidArgument)
	}
	if len(s) > maxSealedSize {
		return nil, fmt.Errorf("sealed secret is %d bytes, more than %d: %w", len(s), maxSealedSize, errdefs.ErrInvalidArgument)
	}
	parts := strings.Split(strings.TrimPrefix(s, Prefix), ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("sealed secret has %d dot-separated parts after \"sealed.\", want 3 (<header>.<payload>.<signature>): %w", len(parts), errdefs.ErrInvalidArgument)
	}
	return parts, nil
}

// parsePayload decodes and checks a sealed secret's JSON payload.
func parsePayload(payload []byte) (Secret, error) {
	var s Secret
	if err := json.Unmarshal(payload, &s); err != nil {
		return Secret{}, fmt.Errorf("parse sealed secret payload: want JSON {\"version\",\"type\",\"name\",\"provider\",…}: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if s.Version != Version {
		return Secret{}, fmt.Errorf("sealed secret version %q, want %q: %w", s.Version, Version, errdefs.ErrInvalidArgument)
	}
	switch s.Type {
	case TypeVault:
	case TypeEnvelope:
		return Secret{}, fmt.Errorf("sealed secret type %q is not supported: seal a %q secret that names a KBS resource: %w", s.Type, TypeVault, errdefs.ErrNotImplemented)
	default:
		return Secret{}, fmt.Errorf("sealed secret type %q, want %q: %w", s.Type, TypeVault, errdefs.ErrInvalidArgument)
	}
	if s.Provider != ProviderKBS {
		return Secret{}, fmt.Errorf("sealed secret provider %q is not supported, want %q (the value is a KBS resource): %w", s.Provider, ProviderKBS, errdefs.ErrNotImplemented)
	}
	if _, err := cdh.ParseResourceURI(s.Name); err != nil {
		return Secret{}, fmt.Errorf("sealed secret name: %w", err)
	}
	return s, nil
}
