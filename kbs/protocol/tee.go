package protocol

import "github.com/cofferhq/coffer/attestation"

// ParseTEE maps the /auth "tee" string to an attestation.TEE. Trustee's
// names (kbs_types Tee, lowercase) are used for "snp" and "tdx"; "sim" is
// Coffer's software TEE. ok is false for any other name.
func ParseTEE(s string) (attestation.TEE, bool) {
	switch t := attestation.TEE(s); t {
	case attestation.TEESNP, attestation.TEETDX, attestation.TEESim:
		return t, true
	}
	return "", false
}
