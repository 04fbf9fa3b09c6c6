// Package protocol holds the wire types of Trustee's KBS attestation
// protocol, version 0.4.0, as Coffer's cc-kbs serves them and its clients
// send them.
//
// The shapes follow the kbs_types crate used by Trustee and
// guest-components (Request, Challenge, Attestation, RuntimeData, InitData,
// CompositeEvidence, Response) and the protocol description in trustee
// kbs/docs/kbs_attestation_protocol.md; the version check follows trustee
// kbs/src/attestation/backend.rs (KBS_MAJOR/MINOR/PATCH_VERSION 0.4.0) and
// guest-components attestation-agent/kbs_protocol/src/client/rcar_client.rs
// (KBS_PROTOCOL_VERSION "0.4.0").
package protocol

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Version is the KBS protocol version this package speaks.
const Version = "0.4.0"

// SessionCookie is the name of the session cookie set by /auth (trustee
// kbs/src/attestation/session.rs KBS_SESSION_ID).
const SessionCookie = "kbs-session-id"

// PathPrefix prefixes every KBS endpoint.
const PathPrefix = "/kbs/v0"

// Endpoint paths.
const (
	// PathAuth is POST Request → Challenge.
	PathAuth = PathPrefix + "/auth"
	// PathAttest is POST Attestation → AttestationToken.
	PathAttest = PathPrefix + "/attest"
	// PathResource prefixes GET /kbs/v0/resource/<repo>/<type>/<tag>.
	PathResource = PathPrefix + "/resource/"
	// PathAttestationPolicy is the admin attestation-policy endpoint.
	PathAttestationPolicy = PathPrefix + "/attestation-policy"
	// PathResourcePolicy is the admin resource-policy endpoint.
	PathResourcePolicy = PathPrefix + "/resource-policy"
	// PathAdmin prefixes Coffer's admin endpoints that Trustee lacks.
	PathAdmin = PathPrefix + "/admin/"
)

// Request is the /auth body: {"version", "tee", "extra-params"}.
// ExtraParams is kept raw: Trustee clients send "" or an object such as
// {"supported-hash-algorithms": ["sha256","sha384","sha512"]}.
type Request struct {
	Version     string          `json:"version"`
	TEE         string          `json:"tee"`
	ExtraParams json.RawMessage `json:"extra-params,omitempty"`
}

// Challenge is the /auth response: {"nonce", "extra-params"}. Nonce is the
// standard base64 of 32 random bytes (trustee make_nonce).
type Challenge struct {
	Nonce       string `json:"nonce"`
	ExtraParams any    `json:"extra-params"`
}

// InitData is the optional "init-data" of an Attestation: the plaintext
// initdata document (trustee kbs/docs/initdata.md) in Format "toml" (what
// guest-components sends) or "json".
type InitData struct {
	Format string `json:"format"`
	Body   string `json:"body"`
}

// RuntimeData is "runtime-data": the session nonce and the guest's
// ephemeral public key as a JWK (RFC 7517). Its canonical JSON hash is
// bound into the evidence's REPORT_DATA (see attestation/reportdata).
type RuntimeData struct {
	Nonce     string          `json:"nonce"`
	TEEPubKey json.RawMessage `json:"tee-pubkey"`
}

// Attestation is the /attest body.
type Attestation struct {
	InitData    *InitData       `json:"init-data,omitempty"`
	RuntimeData RuntimeData     `json:"runtime-data"`
	TEEEvidence json.RawMessage `json:"tee-evidence"`
}

// CompositeEvidence is the 0.4.0 "tee-evidence" object: the primary TEE's
// evidence and a JSON string mapping additional TEEs to their evidence
// (kbs_types CompositeEvidence). Coffer verifies primary evidence only and
// rejects non-empty AdditionalEvidence.
type CompositeEvidence struct {
	PrimaryEvidence    json.RawMessage `json:"primary_evidence"`
	AdditionalEvidence string          `json:"additional_evidence"`
}

// AttestationToken is the /attest response: {"token": "<JWT>"}.
type AttestationToken struct {
	Token string `json:"token"`
}

// Response is the resource response: a JWE in flattened JSON serialization
// (RFC 7516 §7.2.2) with base64url members, as kbs_types Response.
type Response struct {
	Protected    string `json:"protected"`
	EncryptedKey string `json:"encrypted_key"`
	AAD          string `json:"aad,omitempty"`
	IV           string `json:"iv"`
	Ciphertext   string `json:"ciphertext"`
	Tag          string `json:"tag"`
}

// SetPolicyRequest is the POST /kbs/v0/attestation-policy body (Trustee
// SetPolicyInput): Type "rego", PolicyID "default", Policy the base64
// (standard or URL alphabet, padded or not) of the Rego source.
type SetPolicyRequest struct {
	Type     string `json:"type,omitempty"`
	PolicyID string `json:"policy_id,omitempty"`
	Policy   string `json:"policy"`
}

// CheckVersion accepts version strings "0.4.x" (x a decimal patch level).
// Trustee requires exactly "=0.4.0"; Coffer accepts later patch levels,
// which semver keeps wire-compatible. The error says which version was
// found and which is wanted.
func CheckVersion(v string) error {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return fmt.Errorf("parse KBS protocol version %q: want MAJOR.MINOR.PATCH, this server speaks %s", v, Version)
	}
	for _, p := range parts {
		if _, err := strconv.ParseUint(p, 10, 32); err != nil {
			return fmt.Errorf("parse KBS protocol version %q: %q is not a number; this server speaks %s", v, p, Version)
		}
	}
	if parts[0] != "0" || parts[1] != "4" {
		return fmt.Errorf("KBS protocol version %s is not supported: this server speaks %s (0.4.x); update the client", v, Version)
	}
	return nil
}
