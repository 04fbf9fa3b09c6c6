// Package initdata computes the digest of a KBS Attestation's "init-data"
// the way Trustee does, and fits it to the TEE field that binds it.
//
// Trustee's attestation service (trustee attestation-service/src/lib.rs,
// parse_init_data) parses the initdata document (trustee
// kbs/docs/initdata.md: {version, algorithm, data}) only to read its
// "algorithm" and "data"; the digest is that algorithm (sha256, sha384 or
// sha512) over the exact body bytes the client sent, not a
// canonicalisation. The verifiers then pad with zeros or truncate it to
// the field size (trustee verifier regularize_data): SNP HOST_DATA 32
// bytes, TDX MRCONFIGID 48 bytes. guest-components sends format "toml";
// Coffer also accepts "json" with the same raw-bytes rule.
package initdata

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/pelletier/go-toml/v2"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/initdata"
	"github.com/cofferhq/coffer/kbs/protocol"
)

// MaxBody bounds the init-data body, bytes.
const MaxBody = 256 << 10

// ErrInvalid is wrapped by every failure.
var ErrInvalid = errors.New("invalid init-data")

// Document is the parsed initdata document.
type Document struct {
	Version   string            `json:"version" toml:"version"`
	Algorithm string            `json:"algorithm" toml:"algorithm"`
	Data      map[string]string `json:"data" toml:"data"`
}

// Result is a parsed and digested init-data.
type Result struct {
	// Algorithm is the normalised hash name (protocol.Hash*).
	Algorithm string
	// Digest is the full hash of the body bytes (32, 48 or 64 bytes).
	Digest []byte
	// Data is the document's data map (the init_data_claims).
	Data map[string]string
}

// Parse parses in, checks its version is 0.1.0 (or absent) and its
// algorithm is sha256, sha384 or sha512, and digests in.Body.
func Parse(in *protocol.InitData) (*Result, error) {
	if len(in.Body) > MaxBody {
		return nil, fmt.Errorf("init-data body is %d bytes: want at most %d: %w", len(in.Body), MaxBody, ErrInvalid)
	}
	var doc Document
	switch in.Format {
	case "toml":
		if err := toml.Unmarshal([]byte(in.Body), &doc); err != nil {
			return nil, fmt.Errorf("parse init-data TOML body: %v: %w", err, ErrInvalid)
		}
	case "json":
		if err := json.Unmarshal([]byte(in.Body), &doc); err != nil {
			return nil, fmt.Errorf("parse init-data JSON body: %v: %w", err, ErrInvalid)
		}
	default:
		return nil, fmt.Errorf("init-data format %q is not supported: want \"toml\" or \"json\": %w", in.Format, ErrInvalid)
	}
	if doc.Version != "" && doc.Version != "0.1.0" {
		return nil, fmt.Errorf("init-data version %q is not supported: want \"0.1.0\": %w", doc.Version, ErrInvalid)
	}
	alg, ok := protocol.NormalizeHash(doc.Algorithm)
	if !ok {
		return nil, fmt.Errorf("init-data algorithm %q is not supported: want sha256, sha384 or sha512: %w", doc.Algorithm, ErrInvalid)
	}
	return &Result{Algorithm: alg, Digest: Sum(alg, []byte(in.Body)), Data: doc.Data}, nil
}

// Sum hashes b with the protocol.Hash* algorithm alg (sha384 if unknown).
func Sum(alg string, b []byte) []byte {
	if s := initdata.Sum(alg, b); s != nil {
		return s
	}
	return initdata.Sum(initdata.SHA384, b)
}

// FieldSize returns the size of the evidence field init-data binds to for
// tee: SNP and sim HOST_DATA 32 bytes, TDX MRCONFIGID 48 bytes.
func FieldSize(tee attestation.TEE) int {
	if tee == attestation.TEETDX {
		return initdata.SizeMRConfigID
	}
	return initdata.SizeHostData
}

// Fit pads digest with zero bytes or truncates it to n bytes (Trustee
// regularize_data); see initdata.Fit.
func Fit(digest []byte, n int) []byte { return initdata.Fit(digest, n) }
