// Package token issues and verifies the KBS attestation token: a JWT
// (RFC 7519) signed by the KBS's own ECDSA key, carrying an EAR appraisal
// (kbs/ear) of the verified evidence and, inside its annotated evidence,
// the attested tee-pubkey.
//
// The claim layout follows Trustee's EAR tokens (trustee
// attestation-service/src/ear_token/broker.rs): header {"alg":"ES256",
// "typ":"JWT","jwk":<signer public key>}, claims "eat_profile", "iat",
// "exp", "ear.verifier-id" and "submods": {"cpu0": appraisal}, the
// appraisal's "ear.veraison.annotated-evidence" holding {"<tee>": claims,
// "report_data", "runtime_data_claims": {"nonce", "tee-pubkey"},
// "init_data", "init_data_claims"}. The KBS reads the tee-pubkey back from
// submods.cpu0 annotated-evidence runtime_data_claims, where Trustee
// relying parties look for it.
package token

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cofferhq/coffer/kbs/ear"
)

// Submod is the EAR submodule name of the primary (CPU) TEE appraisal.
const Submod = "cpu0"

// Keys inside the annotated evidence (Trustee transform_claims).
const (
	KeyReportData        = "report_data"
	KeyRuntimeDataClaims = "runtime_data_claims"
	KeyInitData          = "init_data"
	KeyInitDataClaims    = "init_data_claims"
	KeyTEEPubKey         = "tee-pubkey"
)

// ErrInvalid is wrapped by every Verify failure.
var ErrInvalid = errors.New("attestation token invalid")

// Claims is the token payload.
type Claims struct {
	jwt.Claims
	Profile    string                   `json:"eat_profile"`
	VerifierID ear.VerifierID           `json:"ear.verifier-id"`
	Submods    map[string]ear.Appraisal `json:"submods"`
}

// Options configure a Signer.
type Options struct {
	// Issuer is the "iss" claim, e.g. "cc-kbs". Verify requires it.
	Issuer string
	// TTL is the token lifetime; 0 means 5 minutes (Trustee's default
	// token duration).
	TTL time.Duration
	// Leeway is the clock skew Verify tolerates on exp/nbf/iat; 0 means 30 s.
	Leeway time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Signer signs and verifies attestation tokens with one ECDSA key: P-256
// signs ES256, P-384 ES384.
type Signer struct {
	key    *ecdsa.PrivateKey
	alg    jose.SignatureAlgorithm
	signer jose.Signer
	o      Options
}

// NewSigner returns a Signer for key. It fails for curves other than
// P-256 and P-384.
func NewSigner(key *ecdsa.PrivateKey, o Options) (*Signer, error) {
	var alg jose.SignatureAlgorithm
	switch key.Curve {
	case elliptic.P256():
		alg = jose.ES256
	case elliptic.P384():
		alg = jose.ES384
	default:
		return nil, fmt.Errorf("create token signer: key curve %s is not supported: use P-256 or P-384", key.Curve.Params().Name)
	}
	if o.TTL <= 0 {
		o.TTL = 5 * time.Minute
	}
	if o.Leeway <= 0 {
		o.Leeway = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	// The header's "jwk" is the same for every token: serialise it once
	// rather than let go-jose's EmbedJWK marshal the key on every Issue.
	jwk, err := (&jose.JSONWebKey{Key: &key.PublicKey}).MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("create token signer: encode public key: %w", err)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("jwk", json.RawMessage(jwk))
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		return nil, fmt.Errorf("create token signer: %w", err)
	}
	return &Signer{key: key, alg: alg, signer: s, o: o}, nil
}

// GenerateKey returns a new P-256 token signing key.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// PublicJWK returns the verification key as a JWK (for relying parties).
func (s *Signer) PublicJWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: &s.key.PublicKey, Algorithm: string(s.alg), Use: "sig"}
}

// TTL returns the token lifetime.
func (s *Signer) TTL() time.Duration { return s.o.TTL }

// Issue fills c's iss, iat, nbf, exp (now + TTL) and a random jti, signs
// it, and returns the compact JWT, its payload JSON and its expiry.
func (s *Signer) Issue(c *Claims) (token string, payload []byte, exp time.Time, err error) {
	now := s.o.Now()
	exp = now.Add(s.o.TTL)
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", nil, time.Time{}, fmt.Errorf("issue token: read jti: %w", err)
	}
	c.Issuer = s.o.Issuer
	c.IssuedAt = jwt.NewNumericDate(now)
	c.NotBefore = jwt.NewNumericDate(now)
	c.Expiry = jwt.NewNumericDate(exp)
	c.ID = hex.EncodeToString(jti)
	if c.Profile == "" {
		c.Profile = ear.Profile
	}
	payload, err = json.Marshal(c)
	if err != nil {
		return "", nil, time.Time{}, fmt.Errorf("issue token: encode claims: %w", err)
	}
	jws, err := s.signer.Sign(payload)
	if err != nil {
		return "", nil, time.Time{}, fmt.Errorf("issue token: sign: %w", err)
	}
	token, err = jws.CompactSerialize()
	if err != nil {
		return "", nil, time.Time{}, fmt.Errorf("issue token: serialize: %w", err)
	}
	return token, payload, exp, nil
}

// Verify checks raw's signature against this Signer's key (the embedded
// header jwk is ignored), its algorithm, issuer, exp and nbf, and returns
// the payload JSON. Every failure wraps ErrInvalid and says what was wrong.
func (s *Signer) Verify(raw string) ([]byte, error) {
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{s.alg})
	if err != nil {
		return nil, fmt.Errorf("parse attestation token (want a compact %s JWS): %v: %w", s.alg, err, ErrInvalid)
	}
	payload, err := jws.Verify(&s.key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("verify attestation token signature: not signed by this KBS (%v): %w", err, ErrInvalid)
	}
	var c jwt.Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("decode attestation token claims: %v: %w", err, ErrInvalid)
	}
	if c.Expiry == nil {
		return nil, fmt.Errorf("attestation token has no exp claim: %w", ErrInvalid)
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: s.o.Issuer, Time: s.o.Now()}, s.o.Leeway); err != nil {
		return nil, fmt.Errorf("validate attestation token (exp %s): %v: run the RCAR handshake again: %w",
			c.Expiry.Time().UTC().Format(time.RFC3339), err, ErrInvalid)
	}
	return payload, nil
}

// DecodePayload decodes a token payload into a generic JSON value with
// exact numbers (json.Number), as the resource policy sees it.
func DecodePayload(payload []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode token payload: %w", err)
	}
	return m, nil
}

// TEEPubKey returns the JSON of the tee-pubkey JWK in payload's
// submods.cpu0 annotated-evidence runtime_data_claims.
func TEEPubKey(payload []byte) ([]byte, error) {
	var p struct {
		Submods map[string]struct {
			Evidence struct {
				Runtime struct {
					Key json.RawMessage `json:"tee-pubkey"`
				} `json:"runtime_data_claims"`
			} `json:"ear.veraison.annotated-evidence"`
		} `json:"submods"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, fmt.Errorf("decode token payload: %w", err)
	}
	sub, ok := p.Submods[Submod]
	if !ok || len(sub.Evidence.Runtime.Key) == 0 || string(sub.Evidence.Runtime.Key) == "null" {
		return nil, fmt.Errorf("token has no submods.%s annotated-evidence runtime_data_claims.tee-pubkey: %w", Submod, ErrInvalid)
	}
	return sub.Evidence.Runtime.Key, nil
}
