// Package jwe encrypts KBS resources to the attested guest's tee-pubkey as
// a JWE (RFC 7516) in flattened JSON serialization, the resource response
// of Trustee's KBS protocol (trustee kbs/src/jwe/mod.rs; kbs_types
// Response): {"protected", "encrypted_key", "iv", "ciphertext", "tag"},
// content encryption A256GCM, key management RSA-OAEP-256 for RSA keys and
// ECDH-ES+A256KW for EC keys (the ephemeral "epk" inside the protected
// header, Concat KDF with empty apu/apv, as Trustee and go-jose both do).
// RSA1_5, which Trustee still accepts with a warning, is refused.
package jwe

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// ErrUnsupportedKey is wrapped when a tee-pubkey cannot be used.
var ErrUnsupportedKey = errors.New("unsupported tee-pubkey")

// RSA modulus bounds, bits.
const (
	MinRSABits = 2048
	MaxRSABits = 8192
)

// Key is a validated encryption public key and its key-management
// algorithm.
type Key struct {
	// JWK is the parsed public key.
	JWK jose.JSONWebKey
	// Alg is RSA-OAEP-256 or ECDH-ES+A256KW.
	Alg jose.KeyAlgorithm
}

// ParseKey parses and validates a tee-pubkey JWK (JSON): a public RSA key
// of MinRSABits..MaxRSABits with "alg" RSA-OAEP-256, or a public EC key
// on P-256, P-384 or P-521 with "alg" ECDH-ES+A256KW. "alg" is required,
// as in kbs_types TeePubKey (it is part of the hashed runtime data).
// Private keys are refused. Errors wrap ErrUnsupportedKey and say what was
// found and what is wanted.
func ParseKey(raw []byte) (*Key, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, fmt.Errorf("runtime-data.tee-pubkey is missing: send the guest's ephemeral public key as a JWK: %w", ErrUnsupportedKey)
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("parse runtime-data.tee-pubkey JWK: %v: %w", err, ErrUnsupportedKey)
	}
	if !k.IsPublic() {
		return nil, fmt.Errorf("runtime-data.tee-pubkey contains a private key: send only the public part: %w", ErrUnsupportedKey)
	}
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		if k.Algorithm != string(jose.RSA_OAEP_256) {
			return nil, fmt.Errorf("tee-pubkey RSA alg is %q: want %q (RSA1_5 is refused): %w", k.Algorithm, jose.RSA_OAEP_256, ErrUnsupportedKey)
		}
		if n := pub.N.BitLen(); n < MinRSABits || n > MaxRSABits {
			return nil, fmt.Errorf("tee-pubkey RSA modulus is %d bits: want %d..%d: %w", n, MinRSABits, MaxRSABits, ErrUnsupportedKey)
		}
		if pub.E < 3 || pub.E%2 == 0 {
			return nil, fmt.Errorf("tee-pubkey RSA exponent %d is invalid: want an odd exponent >= 3 (usually 65537): %w", pub.E, ErrUnsupportedKey)
		}
		return &Key{JWK: k, Alg: jose.RSA_OAEP_256}, nil
	case *ecdsa.PublicKey:
		if k.Algorithm != string(jose.ECDH_ES_A256KW) {
			return nil, fmt.Errorf("tee-pubkey EC alg is %q: want %q: %w", k.Algorithm, jose.ECDH_ES_A256KW, ErrUnsupportedKey)
		}
		switch pub.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return nil, fmt.Errorf("tee-pubkey EC curve %s is not supported: want P-256, P-384 or P-521: %w", pub.Curve.Params().Name, ErrUnsupportedKey)
		}
		return &Key{JWK: k, Alg: jose.ECDH_ES_A256KW}, nil
	default:
		return nil, fmt.Errorf("tee-pubkey key type %T (kty) is not supported: want RSA or EC: %w", k.Key, ErrUnsupportedKey)
	}
}

// Encrypt encrypts plaintext to k with A256GCM and returns the flattened
// JSON serialization.
func Encrypt(k *Key, plaintext []byte) ([]byte, error) {
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: k.Alg, Key: k.JWK.Key}, nil)
	if err != nil {
		return nil, fmt.Errorf("create JWE encrypter for %s: %w", k.Alg, err)
	}
	obj, err := enc.Encrypt(plaintext)
	if err != nil {
		return nil, fmt.Errorf("encrypt resource to tee-pubkey (%s, A256GCM): %w", k.Alg, err)
	}
	out := obj.FullSerialize()
	if out == "" {
		return nil, errors.New("serialize JWE: go-jose returned an empty serialization")
	}
	return []byte(out), nil
}

// Decrypt parses a flattened or general JWE JSON serialization and
// decrypts it with priv (an *rsa.PrivateKey or *ecdsa.PrivateKey),
// accepting only RSA-OAEP-256 / ECDH-ES+A256KW with A256GCM. It is what a
// guest does with a resource response.
func Decrypt(serialized []byte, priv any) ([]byte, error) {
	obj, err := jose.ParseEncryptedJSON(string(serialized),
		[]jose.KeyAlgorithm{jose.RSA_OAEP_256, jose.ECDH_ES_A256KW},
		[]jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, fmt.Errorf("parse JWE resource response: %w", err)
	}
	pt, err := obj.Decrypt(priv)
	if err != nil {
		return nil, fmt.Errorf("decrypt JWE resource response: %w", err)
	}
	return pt, nil
}
