// Package reportdata computes the REPORT_DATA value that binds TEE evidence to
// a KBS session, exactly as Trustee's KBS protocol v0.4.0 defines it, so that
// Coffer's KBS and CoCo guest-components clients (and Coffer's own guest)
// agree byte for byte.
//
// The algorithm (Trustee, KBS protocol v0.4.0):
//
//  1. The runtime data is the JSON object
//     {"additional-evidence": A, "nonce": N, "tee-pubkey": K}
//     where N is the challenge nonce string returned by POST /kbs/v0/auth
//     (base64 of 32 random bytes), A is the client's composite-evidence
//     "additional_evidence" string ("" when the guest has no attested devices
//     besides the CPU TEE), and K is the tee-pubkey JWK reduced to the fields
//     of kbs-types' TeePubKey: {"alg","e","kty","n"} for RSA,
//     {"alg","crv","kty","x","y"} for EC and {"alg","kty","pub"} for AKP.
//     Other JWK members ("kid", "use", ...) are dropped, because the KBS
//     deserialises the key into that struct before hashing.
//  2. The object is serialised canonically (RFC 8785 JCS: keys sorted, no
//     whitespace, minimal string escaping). Every value here is a string, so
//     this is the compact form with sorted keys that serde_json also emits.
//  3. The serialisation is hashed with the session's hash algorithm: SHA-384
//     unless the challenge's extra-params "selected-hash-algorithm" says
//     "sha256" or "sha512".
//  4. The digest is zero-padded on the right to the 64 bytes of SNP/TDX
//     REPORT_DATA (SHA-512 fills it exactly).
//
// Sources read (confidential-containers/trustee and guest-components):
// kbs/src/attestation/backend.rs (builds {"tee-pubkey","nonce",
// "additional-evidence"} for the primary evidence), attestation-service/src/
// lib.rs (parse_runtime_data: canonical JSON then HashAlgorithm::digest, with
// a SHA-384 test vector), deps/verifier/src/snp/mod.rs (regularize_data pads
// the expected value to 64 bytes before comparing with REPORT_DATA),
// attestation-agent/kbs_protocol/src/client/rcar_client.rs (the client side,
// KBS_PROTOCOL_VERSION "0.4.0", serde_json_canonicalizer) and kbs-types'
// TeePubKey. Trustee's older protocol v0.2.0 hashed {"nonce","tee-pubkey"}
// without "additional-evidence"; that form is not produced here.
package reportdata

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"sort"
	"strings"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
)

// Size is the size of SNP and TDX REPORT_DATA in bytes.
const Size = 64

// Hash algorithm names, as Trustee's kbs-types HashAlgorithm spells them.
const (
	AlgSHA256 = "sha256"
	AlgSHA384 = "sha384"
	AlgSHA512 = "sha512"
	// DefaultAlg is used when the caller passes "".
	DefaultAlg = AlgSHA384
)

// RuntimeData is the KBS protocol v0.4.0 runtime data of one attestation.
type RuntimeData struct {
	// Nonce is the challenge nonce string from POST /kbs/v0/auth, verbatim.
	Nonce string
	// TeePubKey is the guest's ephemeral public key (RSA, EC or AKP) with
	// its "alg" set; a private key is reduced to its public half.
	TeePubKey *jose.JSONWebKey
	// AdditionalEvidence is the composite evidence's additional_evidence
	// string, verbatim; "" when there is none.
	AdditionalEvidence string
}

// RuntimeDataHash returns the 64-byte REPORT_DATA for a session nonce and
// tee-pubkey with no additional evidence, using hash alg ("" = SHA-384).
// It is RuntimeData{Nonce: nonce, TeePubKey: teePubKey}.Hash(alg); see the
// package documentation for the byte-level algorithm and its sources.
func RuntimeDataHash(nonce string, teePubKey *jose.JSONWebKey, alg string) ([]byte, error) {
	return RuntimeData{Nonce: nonce, TeePubKey: teePubKey}.Hash(alg)
}

// Hash returns the 64-byte REPORT_DATA: the digest of CanonicalJSON() under
// alg ("", "sha256", "sha384" or "sha512"), zero-padded to 64 bytes. It
// fails if alg is unknown or the key cannot be reduced (see CanonicalJSON).
func (r RuntimeData) Hash(alg string) ([]byte, error) {
	h, err := newHash(alg)
	if err != nil {
		return nil, err
	}
	doc, err := r.CanonicalJSON()
	if err != nil {
		return nil, err
	}
	h.Write(doc)
	out := make([]byte, Size)
	copy(out, h.Sum(nil))
	return out, nil
}

// CanonicalJSON returns the RFC 8785 serialisation of the runtime data object
// that is hashed into REPORT_DATA. It fails if TeePubKey is nil, of a key type
// other than RSA, EC or AKP, or has no "alg" (Trustee's TeePubKey requires it).
func (r RuntimeData) CanonicalJSON() ([]byte, error) {
	key, err := reduceKey(r.TeePubKey)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(`{"additional-evidence":`)
	writeString(&b, r.AdditionalEvidence)
	b.WriteString(`,"nonce":`)
	writeString(&b, r.Nonce)
	b.WriteString(`,"tee-pubkey":`)
	writeObject(&b, key)
	b.WriteByte('}')
	return b.Bytes(), nil
}

func newHash(alg string) (hash.Hash, error) {
	switch strings.ToLower(alg) {
	case "", AlgSHA384:
		return sha512.New384(), nil
	case AlgSHA256:
		return sha256.New(), nil
	case AlgSHA512:
		return sha512.New(), nil
	default:
		return nil, fmt.Errorf("compute report data: unknown hash algorithm %q, want %q, %q or %q",
			alg, AlgSHA256, AlgSHA384, AlgSHA512)
	}
}

// teePubKeyFields lists, per JWK "kty", the members kbs-types' TeePubKey keeps.
var teePubKeyFields = map[string][]string{
	"RSA": {"alg", "e", "kty", "n"},
	"EC":  {"alg", "crv", "kty", "x", "y"},
	"AKP": {"alg", "kty", "pub"},
}

// reduceKey returns the public JWK's members that Trustee hashes.
func reduceKey(k *jose.JSONWebKey) (map[string]string, error) {
	if k == nil || k.Key == nil {
		return nil, errors.New("compute report data: tee-pubkey is missing")
	}
	pub := *k
	if !k.IsPublic() {
		pub = k.Public()
		if pub.Key == nil {
			return nil, fmt.Errorf("compute report data: tee-pubkey of type %T has no public half", k.Key)
		}
	}
	raw, err := pub.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("compute report data: encode tee-pubkey: %w", err)
	}
	var all map[string]any
	if err := json.Unmarshal(raw, &all); err != nil {
		return nil, fmt.Errorf("compute report data: decode tee-pubkey: %w", err)
	}
	kty, _ := all["kty"].(string)
	fields, ok := teePubKeyFields[kty]
	if !ok {
		return nil, fmt.Errorf("compute report data: tee-pubkey kty %q is not supported by Trustee's TeePubKey, want RSA, EC or AKP", kty)
	}
	out := make(map[string]string, len(fields))
	for _, f := range fields {
		v, _ := all[f].(string)
		if v == "" {
			return nil, fmt.Errorf("compute report data: tee-pubkey (kty %s) has no %q member; Trustee requires %s", kty, f, strings.Join(fields, ", "))
		}
		out[f] = v
	}
	return out, nil
}

// writeObject writes a JSON object of string members with keys in RFC 8785
// order (UTF-16 code units; byte order for these ASCII keys).
func writeObject(b *bytes.Buffer, m map[string]string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		writeString(b, k)
		b.WriteByte(':')
		writeString(b, m[k])
	}
	b.WriteByte('}')
}

// writeString writes s as an RFC 8785 (§3.2.2.2) JSON string: '"' and '\'
// escaped, \b \t \n \f \r short forms, other controls as \u00xx (lower-case
// hex), everything else verbatim UTF-8. Invalid UTF-8 bytes become U+FFFD, as
// they would when Rust's String is built from them.
func writeString(b *bytes.Buffer, s string) {
	const hexDigits = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hexDigits[r>>4])
			b.WriteByte(hexDigits[r&0xf])
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}
