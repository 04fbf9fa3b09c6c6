// Package ear holds the attestation-result vocabulary of Coffer's KBS
// tokens: the AR4SI trustworthiness vector (draft-ietf-rats-ar4si §2.3) and
// the EAT Attestation Result (EAR, draft-fv-rats-ear) appraisal that
// carries it, in the shape Trustee's attestation service issues
// (trustee attestation-service/src/ear_token/broker.rs: submods "cpu0" with
// "ear.status", "ear.trustworthiness-vector", "ear.appraisal-policy-id",
// "ear.veraison.annotated-evidence").
package ear

import (
	"fmt"
	"sort"
)

// Profile is the EAR profile claim value ("eat_profile").
const Profile = "tag:github.com,2023:veraison/ear"

// Status is an AR4SI trustworthiness tier.
type Status string

// The tiers, best to worst (draft-ietf-rats-ar4si §2.3.1).
const (
	StatusNone            Status = "none"
	StatusAffirming       Status = "affirming"
	StatusWarning         Status = "warning"
	StatusContraindicated Status = "contraindicated"
)

// rank orders tiers from best (0) to worst.
func (s Status) rank() int {
	switch s {
	case StatusAffirming:
		return 1
	case StatusWarning:
		return 2
	case StatusContraindicated:
		return 3
	}
	return 0
}

// TierOf maps one trustworthiness claim value to its tier:
// -1..1 none; 2..31 and -32..-2 affirming; 32..95 and -96..-33 warning;
// 96..127 and -128..-97 contraindicated.
func TierOf(v int) Status {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a <= 1:
		return StatusNone
	case a <= 31:
		return StatusAffirming
	case a <= 95:
		return StatusWarning
	}
	return StatusContraindicated
}

// Claim names of the trustworthiness vector, in AR4SI order.
var ClaimNames = []string{
	"instance-identity", "configuration", "executables", "file-system",
	"hardware", "runtime-opaque", "storage-opaque", "sourced-data",
}

// TrustVector maps claim names (ClaimNames) to AR4SI values in
// -128..127; absent claims mean 0 ("no claim").
type TrustVector map[string]int

// Validate checks that every name is an AR4SI claim and every value fits
// in an int8.
func (tv TrustVector) Validate() error {
	for name, v := range tv {
		known := false
		for _, n := range ClaimNames {
			if n == name {
				known = true
				break
			}
		}
		if !known {
			return fmt.Errorf("trust claim %q is not an AR4SI claim: want one of %v", name, ClaimNames)
		}
		if v < -128 || v > 127 {
			return fmt.Errorf("trust claim %q is %d: want -128..127", name, v)
		}
	}
	return nil
}

// Status returns the worst tier of the set claims (EAR derives ear.status
// this way); StatusNone if no claim is outside -1..1.
func (tv TrustVector) Status() Status {
	worst := StatusNone
	for _, v := range tv {
		if t := TierOf(v); t.rank() > worst.rank() {
			worst = t
		}
	}
	return worst
}

// NotAffirming lists "name=value (tier)" for each claim whose tier is
// warning or contraindicated, sorted by name.
func (tv TrustVector) NotAffirming() []string {
	var out []string
	for name, v := range tv {
		if t := TierOf(v); t == StatusWarning || t == StatusContraindicated {
			out = append(out, fmt.Sprintf("%s=%d (%s)", name, v, t))
		}
	}
	sort.Strings(out)
	return out
}

// Appraisal is one EAR submodule appraisal.
type Appraisal struct {
	Status            Status         `json:"ear.status"`
	TrustVector       TrustVector    `json:"ear.trustworthiness-vector"`
	PolicyID          string         `json:"ear.appraisal-policy-id,omitempty"`
	AnnotatedEvidence map[string]any `json:"ear.veraison.annotated-evidence"`
}

// VerifierID is the EAR "ear.verifier-id" claim.
type VerifierID struct {
	Build     string `json:"build"`
	Developer string `json:"developer"`
}
