// Package problem writes the KBS's error responses as RFC 7807 problem
// details (application/problem+json).
//
// Trustee's KBS answers errors with a JSON object {"type", "detail"} whose
// type is "https://github.com/confidential-containers/kbs/errors/<Name>"
// (trustee kbs/src/error.rs, kbs/docs/kbs_attestation_protocol.md "Error
// information"); guest-components clients decode exactly those two members
// (kbs_types ErrorInformation). Coffer keeps both members, adds RFC 7807's
// "title" and "status", and names its own, more specific types under
// TypeBase: each type URI is the anchor of its description in docs/kbs.md.
// Extension members name what failed: "check" (the evidence check),
// "rule" (the policy rule), "policy" (which policy layer).
package problem

import (
	"encoding/json"
	"net/http"
)

// TypeBase prefixes every problem type URI; the suffix is the Type's name
// and the anchor of its section in docs/kbs.md.
const TypeBase = "https://github.com/cofferhq/coffer/blob/main/docs/kbs.md#problem-"

// ContentType is the media type of a problem response (RFC 7807 §3).
const ContentType = "application/problem+json"

// Type is one kind of problem: its URI suffix, title and HTTP status.
type Type struct {
	// Name is the URI suffix after TypeBase, e.g. "evidence-invalid".
	Name string
	// Title is RFC 7807's short, fixed summary of the type.
	Title string
	// Status is the HTTP status code sent with it.
	Status int
}

// URI returns the full type URI, TypeBase + Name.
func (t Type) URI() string { return TypeBase + t.Name }

// The problem types the KBS sends. Statuses follow Trustee where the
// situation exists there (401 for authentication and attestation failures,
// 403 for policy denial, 404 for missing resources) and plain HTTP
// semantics otherwise (400, 405, 413, 500, 503).
var (
	// BadRequest: the request is syntactically valid JSON but a field is
	// missing, of the wrong shape or out of range.
	BadRequest = Type{"bad-request", "Bad request", http.StatusBadRequest}
	// MalformedJSON: the body is not one well-formed JSON value of the
	// expected type.
	MalformedJSON = Type{"malformed-json", "Malformed JSON body", http.StatusBadRequest}
	// BodyTooLarge: the body exceeds the configured limit (1 MiB default).
	BodyTooLarge = Type{"body-too-large", "Request body too large", http.StatusRequestEntityTooLarge}
	// InvalidResourcePath: the resource path is not three plain segments
	// (no "..", no percent-encoding, no empty segments).
	InvalidResourcePath = Type{"invalid-resource-path", "Invalid resource path", http.StatusBadRequest}
	// NotFound: no such resource or endpoint.
	NotFound = Type{"not-found", "Not found", http.StatusNotFound}
	// MethodNotAllowed: the endpoint exists but not for this method.
	MethodNotAllowed = Type{"method-not-allowed", "Method not allowed", http.StatusMethodNotAllowed}
	// UnsupportedVersion: the /auth request names a KBS protocol version
	// this server does not speak (it speaks 0.4.x).
	UnsupportedVersion = Type{"unsupported-version", "Unsupported KBS protocol version", http.StatusUnauthorized}
	// TEENotEnabled: the /auth request names a TEE this server does not
	// accept (unknown, or not enabled in its configuration; sim needs an
	// explicitly configured root).
	TEENotEnabled = Type{"tee-not-enabled", "TEE not enabled", http.StatusUnauthorized}
	// UnsupportedKey: the tee-pubkey JWK is not a public RSA (RSA-OAEP-256,
	// >= 2048 bits) or EC (P-256/P-384/P-521, ECDH-ES+A256KW) key.
	UnsupportedKey = Type{"unsupported-key", "Unsupported TEE public key", http.StatusBadRequest}
	// Unauthenticated: no session cookie or bearer token, or neither names
	// an attested session / a valid token.
	Unauthenticated = Type{"unauthenticated", "Unauthenticated", http.StatusUnauthorized}
	// SessionExpired: the session cookie names a session past its expiry.
	SessionExpired = Type{"session-expired", "Session expired", http.StatusUnauthorized}
	// NonceMismatch: runtime-data.nonce is not the nonce issued to this
	// session.
	NonceMismatch = Type{"nonce-mismatch", "Nonce mismatch", http.StatusUnauthorized}
	// NonceReplay: the session's nonce was already used by an /attest call.
	NonceReplay = Type{"nonce-replay", "Nonce already used", http.StatusUnauthorized}
	// EvidenceInvalid: the TEE evidence failed a verifier check; member
	// "check" names it (attestation.Check* names).
	EvidenceInvalid = Type{"evidence-invalid", "TEE evidence invalid", http.StatusUnauthorized}
	// PolicyDenied: the attestation or resource policy refused; members
	// "policy" and "rule" name the layer and the rule.
	PolicyDenied = Type{"policy-denied", "Denied by policy", http.StatusForbidden}
	// AdminUnauthenticated: an admin endpoint was called without a valid
	// Ed25519-signed admin JWT.
	AdminUnauthenticated = Type{"admin-unauthenticated", "Admin authentication failed", http.StatusUnauthorized}
	// InvalidPolicy: an uploaded Rego policy does not compile or lacks the
	// rules its layer needs.
	InvalidPolicy = Type{"invalid-policy", "Invalid policy", http.StatusBadRequest}
	// TooManySessions: the session table is full of unexpired sessions.
	TooManySessions = Type{"too-many-sessions", "Too many sessions", http.StatusServiceUnavailable}
	// Internal: a server-side failure (store, signing); details are logged.
	Internal = Type{"internal", "Internal error", http.StatusInternalServerError}
)

// Problem is one RFC 7807 problem details object.
type Problem struct {
	// Type is the problem type URI (TypeBase + name).
	Type string `json:"type"`
	// Title is the type's fixed summary.
	Title string `json:"title"`
	// Status repeats the HTTP status code.
	Status int `json:"status"`
	// Detail explains this occurrence: what was wrong, the value found and
	// what was wanted, and what the caller should do.
	Detail string `json:"detail"`
	// Check names the failed evidence check (EvidenceInvalid only).
	Check string `json:"check,omitempty"`
	// Policy names the policy layer, "attestation" or "resource"
	// (PolicyDenied, InvalidPolicy).
	Policy string `json:"policy,omitempty"`
	// Rule names the Rego rule that decided (PolicyDenied).
	Rule string `json:"rule,omitempty"`
	// Reasons are the policy's own explanations (its "reasons" rule).
	Reasons []string `json:"reasons,omitempty"`
}

// New returns a Problem of type t with detail.
func New(t Type, detail string) *Problem {
	return &Problem{Type: t.URI(), Title: t.Title, Status: t.Status, Detail: detail}
}

// Error returns "<type name>: <detail>" so a Problem can travel as an error.
func (p *Problem) Error() string {
	return p.Title + ": " + p.Detail
}

// Write sends p with its status and Content-Type application/problem+json.
func Write(w http.ResponseWriter, p *Problem) {
	body, err := json.Marshal(p)
	if err != nil { // cannot happen: only strings, ints and string slices
		body = []byte(`{"type":"` + Internal.URI() + `","detail":"encoding problem failed"}`)
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(body, '\n'))
}

// Decode parses a problem response body. It returns an error if body is not
// a JSON object with a string "type".
func Decode(body []byte) (*Problem, error) {
	var p Problem
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, err
	}
	if p.Type == "" {
		return nil, errMissingType
	}
	return &p, nil
}

type decodeError string

func (e decodeError) Error() string { return string(e) }

const errMissingType = decodeError("problem body has no \"type\" member")
