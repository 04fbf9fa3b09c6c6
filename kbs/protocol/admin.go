package protocol

import (
	"time"

	"github.com/cofferhq/coffer/kbs/refvalues"
)

// Admin API wire types (Coffer's; Trustee has no equivalents).

// ResourceMeta describes a stored resource without its value.
type ResourceMeta struct {
	// Path is "repository/type/tag".
	Path string `json:"path"`
	// Version counts sets of this path from 1.
	Version uint64 `json:"version"`
	// SHA256 is the lower-case hex SHA-256 of the value.
	SHA256 string `json:"sha256"`
	// Size is the value's length, bytes.
	Size    int       `json:"size"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Actor is the admin token subject of the last set.
	Actor string `json:"actor,omitempty"`
}

// AuditEntry records one admin change.
type AuditEntry struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor,omitempty"`
	Action string    `json:"action"`
	// Kind is "resource" or a document kind.
	Kind    string `json:"kind"`
	Name    string `json:"name,omitempty"`
	Version uint64 `json:"version"`
	SHA256  string `json:"sha256"`
	// Size is the content length, bytes.
	Size int `json:"size"`
}

// DocumentView is one version of a versioned document (attestation
// policy, resource policy, reference values) as the admin API returns it.
type DocumentView struct {
	// Kind is "attestation-policy", "resource-policy" or "reference-values".
	Kind    string    `json:"kind"`
	Version uint64    `json:"version"`
	Time    time.Time `json:"time"`
	// SHA256 is the lower-case hex SHA-256 of Content.
	SHA256 string `json:"sha256"`
	Actor  string `json:"actor,omitempty"`
	// ID is "<kind>@v<version>:sha256:<hex>", the id tokens carry as
	// ear.appraisal-policy-id.
	ID string `json:"id"`
	// Content is the document text (Rego source or reference-values JSON).
	Content string `json:"content"`
	// Values is the parsed reference values (reference-values only).
	Values refvalues.Values `json:"values,omitempty"`
}
