// Package kbsconfig embeds cc-kbs's shipped defaults so the server and its
// tests use exactly the files in this directory: the default attestation
// and resource policies (Rego v1, package policy) and the example
// configuration.
package kbsconfig

import _ "embed"

// DefaultAttestationPolicy is attestation.rego: deny unless the
// measurement is a reference value, debug is off and TCB >= floor.
//
//go:embed attestation.rego
var DefaultAttestationPolicy string

// DefaultResourcePolicy is resource.rego: release to affirming appraisals.
//
//go:embed resource.rego
var DefaultResourcePolicy string

// ExampleConfig is cc-kbs.toml, the documented default configuration.
//
//go:embed cc-kbs.toml
var ExampleConfig string
