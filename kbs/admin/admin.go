// Package admin authenticates the KBS's admin API: every admin request
// carries "Authorization: Bearer <JWT>" signed with the operator's Ed25519
// key (JWS alg "EdDSA", RFC 8037), as Trustee's KBS admin API does with its
// auth_public_key (trustee kbs/docs/admin.md, bearer_jwt).
//
// Coffer's rules: the JWT must be a compact JWS with alg EdDSA, verify
// against the configured public key, carry "exp" (and, if present, "nbf"
// and "iat" not in the future beyond the leeway), have a lifetime
// (exp - iat) of at most MaxLifetime, and audience Audience. Its "sub" is
// recorded in the audit log as the actor.
package admin

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Audience is the "aud" an admin token must carry.
const Audience = "cc-kbs-admin"

// DefaultMaxLifetime bounds exp - iat of accepted admin tokens.
const DefaultMaxLifetime = time.Hour

// ErrUnauthenticated is wrapped by every Verify failure.
var ErrUnauthenticated = errors.New("admin authentication failed")

// Verifier checks admin tokens against one Ed25519 public key.
type Verifier struct {
	pub         ed25519.PublicKey
	now         func() time.Time
	leeway      time.Duration
	maxLifetime time.Duration
}

// Options configure a Verifier.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Leeway is the tolerated clock skew; 0 means 30 s.
	Leeway time.Duration
	// MaxLifetime bounds exp - iat; 0 means DefaultMaxLifetime.
	MaxLifetime time.Duration
}

// NewVerifier returns a Verifier for pub.
func NewVerifier(pub ed25519.PublicKey, o Options) (*Verifier, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("create admin verifier: public key is %d bytes, want %d (Ed25519)", len(pub), ed25519.PublicKeySize)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Leeway <= 0 {
		o.Leeway = 30 * time.Second
	}
	if o.MaxLifetime <= 0 {
		o.MaxLifetime = DefaultMaxLifetime
	}
	return &Verifier{pub: pub, now: o.Now, leeway: o.Leeway, maxLifetime: o.MaxLifetime}, nil
}

// Claims are the verified claims of an admin token.
type Claims struct {
	jwt.Claims
}

// Verify checks the Authorization header value ("Bearer <JWT>") and returns
// the token's claims. Every failure wraps ErrUnauthenticated and says what
// was wrong and how to fix it.
func (v *Verifier) Verify(authorization string) (*Claims, error) {
	if authorization == "" {
		return nil, fmt.Errorf("no Authorization header: send \"Authorization: Bearer <JWT>\" signed with the admin Ed25519 key (ccctl kbs does): %w", ErrUnauthenticated)
	}
	scheme, raw, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(raw) == "" {
		return nil, fmt.Errorf("Authorization header scheme is not \"Bearer <JWT>\": %w", ErrUnauthenticated)
	}
	tok, err := jwt.ParseSigned(strings.TrimSpace(raw), []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return nil, fmt.Errorf("parse admin token (want a compact JWS with alg EdDSA): %v: %w", err, ErrUnauthenticated)
	}
	var c Claims
	if err := tok.Claims(v.pub, &c); err != nil {
		return nil, fmt.Errorf("verify admin token signature: not signed by the configured admin key: %v: %w", err, ErrUnauthenticated)
	}
	if c.Expiry == nil {
		return nil, fmt.Errorf("admin token has no exp claim: sign tokens with an expiry: %w", ErrUnauthenticated)
	}
	now := v.now()
	if err := c.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{Audience}, Time: now}, v.leeway); err != nil {
		return nil, fmt.Errorf("validate admin token (exp %s, aud %v, want aud %q): %v: %w",
			c.Expiry.Time().UTC().Format(time.RFC3339), []string(c.Audience), Audience, err, ErrUnauthenticated)
	}
	issued := now
	if c.IssuedAt != nil {
		issued = c.IssuedAt.Time()
	}
	if life := c.Expiry.Time().Sub(issued); life > v.maxLifetime {
		return nil, fmt.Errorf("admin token lifetime %s exceeds the maximum %s: sign shorter-lived tokens: %w", life, v.maxLifetime, ErrUnauthenticated)
	}
	return &c, nil
}

// Sign returns an admin token for subject valid from now for ttl, signed
// with priv: alg EdDSA, claims sub, aud Audience, iat, nbf, exp.
func Sign(priv ed25519.PrivateKey, subject string, now time.Time, ttl time.Duration) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("create admin token signer: %w", err)
	}
	c := jwt.Claims{
		Subject:   subject,
		Audience:  jwt.Audience{Audience},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		Expiry:    jwt.NewNumericDate(now.Add(ttl)),
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign admin token: %w", err)
	}
	return jws.CompactSerialize()
}

// GenerateKey returns a new Ed25519 admin key pair as PEM: the private key
// as PKCS #8 ("PRIVATE KEY") and the public key as PKIX ("PUBLIC KEY"),
// the formats `openssl genpkey -algorithm ed25519` writes.
func GenerateKey() (privPEM, pubPEM []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate Ed25519 key: %w", err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	pk, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pk}), nil
}

// ParsePrivateKey parses a PKCS #8 PEM Ed25519 private key.
func ParsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("parse admin private key: no PEM block found: want a \"PRIVATE KEY\" (PKCS #8) Ed25519 key from `ccctl kbs keygen-admin`")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse admin private key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("parse admin private key: key is %T, want Ed25519", k)
	}
	return priv, nil
}

// ParsePublicKey parses a PKIX PEM Ed25519 public key.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("parse admin public key: no PEM block found: want a \"PUBLIC KEY\" (PKIX) Ed25519 key from `ccctl kbs keygen-admin`")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse admin public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("parse admin public key: key is %T, want Ed25519", k)
	}
	return pub, nil
}

// LoadPublicKey reads and parses the PEM public key at path.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read admin public key: %w", err)
	}
	pub, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pub, nil
}

// LoadPrivateKey reads and parses the PEM private key at path.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read admin private key: %w", err)
	}
	priv, err := ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return priv, nil
}
