package protocol

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Hash algorithm names as kbs_types HashAlgorithm serialises them.
const (
	HashSHA256 = "sha256"
	HashSHA384 = "sha384"
	HashSHA512 = "sha512"
)

// DefaultHash is the runtime-data hash algorithm a client uses when the
// challenge selects none (guest-components rcar_client.rs
// DEFAULT_HASH_ALGORITHM).
const DefaultHash = HashSHA384

// Extra-params keys of the hash-algorithm negotiation
// (guest-components rcar_client.rs SUPPORTED_/SELECTED_HASH_ALGORITHM_JSON_KEY).
const (
	ExtraSupportedHashAlgorithms = "supported-hash-algorithms"
	ExtraSelectedHashAlgorithm   = "selected-hash-algorithm"
)

// NormalizeHash maps "sha384", "SHA-384", "sha-384" and the like to the
// kbs_types name; ok is false for anything else.
func NormalizeHash(name string) (string, bool) {
	n := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(name)), "-", "")
	switch n {
	case HashSHA256, HashSHA384, HashSHA512:
		return n, true
	}
	return "", false
}

// SelectHash picks the runtime-data hash algorithm for a session from the
// Request's raw extra-params. If the client lists supported-hash-algorithms
// the server picks sha384 when listed, else sha512, else sha256, and
// returns the Challenge extra-params {"selected-hash-algorithm": name};
// otherwise it uses DefaultHash and returns "" as extra-params, as Trustee
// does. It fails if the list names no algorithm the server supports.
func SelectHash(extra json.RawMessage) (alg string, challengeExtra any, err error) {
	var obj map[string]json.RawMessage
	if len(extra) == 0 || json.Unmarshal(extra, &obj) != nil || obj == nil {
		// "" (Trustee's default), null, or a non-object: no negotiation.
		return DefaultHash, "", nil
	}
	raw, ok := obj[ExtraSupportedHashAlgorithms]
	if !ok {
		return DefaultHash, "", nil
	}
	var names []string
	if err := json.Unmarshal(raw, &names); err != nil {
		return "", nil, fmt.Errorf("parse extra-params %q: want an array of strings: %w", ExtraSupportedHashAlgorithms, err)
	}
	supported := make([]string, 0, len(names))
	for _, n := range names {
		if h, ok := NormalizeHash(n); ok {
			supported = append(supported, h)
		}
	}
	for _, pref := range []string{HashSHA384, HashSHA512, HashSHA256} {
		if slices.Contains(supported, pref) {
			return pref, map[string]string{ExtraSelectedHashAlgorithm: pref}, nil
		}
	}
	return "", nil, fmt.Errorf("extra-params %q lists %q: none of sha256, sha384, sha512 that this server supports", ExtraSupportedHashAlgorithms, names)
}
