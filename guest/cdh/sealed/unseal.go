package sealed

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/go-jose/go-jose/v4"

	"github.com/cofferhq/coffer/guest/cdh"
)

// Unsealer unseals sealed secrets with resources from the KBS.
type Unsealer struct {
	// Resources fetches the verification keys (kid) and the secret
	// values (name).
	Resources cdh.ResourceGetter
	// SkipVerification accepts secrets without checking their JWS
	// signature (guest-components: SKIP_SEALED_SECRET_VERIFICATION=true).
	SkipVerification bool
}

// Unseal verifies s (unless SkipVerification) and returns the value of
// the KBS resource it names. Errors never contain the value; they wrap
// errdefs.ErrInvalidArgument (malformed secret),
// errdefs.ErrNotImplemented (envelope type, providers other than kbs, kid
// not a kbs:// URI), errdefs.ErrPermissionDenied (signature does not
// verify) or the ResourceGetter's error.
func (u Unsealer) Unseal(ctx context.Context, s string) ([]byte, error) {
	parts, err := split(s)
	if err != nil {
		return nil, err
	}
	var payload []byte
	if u.SkipVerification {
		if payload, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "=")); err != nil {
			return nil, fmt.Errorf("decode sealed secret payload: want base64url: %w: %w", err, errdefs.ErrInvalidArgument)
		}
	} else if payload, err = u.verify(ctx, s); err != nil {
		return nil, err
	}
	secret, err := parsePayload(payload)
	if err != nil {
		return nil, err
	}
	v, err := u.Resources.Resource(ctx, secret.Name)
	if err != nil {
		return nil, fmt.Errorf("fetch sealed secret value %s: %w", secret.Name, err)
	}
	return v, nil
}

// verify checks the JWS of s against the P-256 JWK at its kid and returns
// the verified payload.
func (u Unsealer) verify(ctx context.Context, s string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(strings.TrimPrefix(s, Prefix), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("parse sealed secret JWS: want protected header {\"alg\":\"ES256\",\"kid\":\"kbs:///…\"} (unsigned secrets are accepted only with verification skipped): %w: %w", err, errdefs.ErrInvalidArgument)
	}
	kid := jws.Signatures[0].Protected.KeyID
	if kid == "" {
		return nil, fmt.Errorf("sealed secret JWS header has no kid: want the kbs:// URI of the verification key: %w", errdefs.ErrInvalidArgument)
	}
	if !strings.HasPrefix(kid, "kbs://") {
		return nil, fmt.Errorf("sealed secret kid %q is not a kbs:// resource URI: the guest has no local signing credentials, store the verification JWK in the KBS and name it as kid: %w", kid, errdefs.ErrNotImplemented)
	}
	if _, err := cdh.ParseResourceURI(kid); err != nil {
		return nil, fmt.Errorf("sealed secret kid: %w", err)
	}
	raw, err := u.Resources.Resource(ctx, kid)
	if err != nil {
		return nil, fmt.Errorf("fetch sealed secret verification key %s: %w", kid, err)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("parse sealed secret verification key %s: want a P-256 JWK: %w: %w", kid, err, errdefs.ErrInvalidArgument)
	}
	pub, ok := jwk.Public().Key.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("sealed secret verification key %s is %T, want an EC P-256 JWK (ES256): %w", kid, jwk.Key, errdefs.ErrInvalidArgument)
	}
	payload, err := jws.Verify(pub)
	if err != nil {
		return nil, fmt.Errorf("sealed secret signature does not verify with key %s: the secret was altered or sealed with another key: %w", kid, errdefs.ErrPermissionDenied)
	}
	return payload, nil
}

// UnsealEnv returns a copy of env ("NAME=value" entries) with every value
// that IsSealed replaced by its unsealed value. It stops at the first
// failure with an error naming the variable (never its value); a value
// holding a NUL byte is refused, as an environment variable cannot carry
// one.
func (u Unsealer) UnsealEnv(ctx context.Context, env []string) ([]string, error) {
	out := make([]string, len(env))
	for i, e := range env {
		out[i] = e
		name, val, ok := strings.Cut(e, "=")
		if !ok || !IsSealed(val) {
			continue
		}
		v, err := u.Unseal(ctx, val)
		if err != nil {
			return nil, fmt.Errorf("unseal environment variable %s: %w", name, err)
		}
		if bytes.IndexByte(v, 0) >= 0 {
			return nil, fmt.Errorf("unseal environment variable %s: the secret value contains a NUL byte, which an environment variable cannot hold: mount it as a file instead: %w", name, errdefs.ErrInvalidArgument)
		}
		out[i] = name + "=" + string(v)
	}
	return out, nil
}

// Unseal is Unsealer{Resources: rg}.Unseal: it verifies the signature.
func Unseal(ctx context.Context, s string, rg cdh.ResourceGetter) ([]byte, error) {
	return Unsealer{Resources: rg}.Unseal(ctx, s)
}

// UnsealEnv is Unsealer{Resources: rg}.UnsealEnv: it verifies signatures.
func UnsealEnv(ctx context.Context, env []string, rg cdh.ResourceGetter) ([]string, error) {
	return Unsealer{Resources: rg}.UnsealEnv(ctx, env)
}
