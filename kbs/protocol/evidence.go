package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Coffer's evidence encoding inside "tee-evidence".
//
// Trustee's attesters put a TEE-specific JSON document in
// primary_evidence. Coffer's verifiers take the raw hardware bytes (an SNP
// ATTESTATION_REPORT optionally followed by its certificate table, or a TDX
// quote), so Coffer clients send
//
//	"tee-evidence": {"primary_evidence": "<base64 of the raw bytes>", "additional_evidence": ""}
//
// DecodeEvidence also accepts a bare base64 JSON string as tee-evidence
// (the pre-0.4 shape). Base64 may use the standard or URL alphabet, padded
// or not.

// EncodeEvidence returns the tee-evidence JSON for raw evidence bytes.
func EncodeEvidence(raw []byte) json.RawMessage {
	b, _ := json.Marshal(CompositeEvidence{
		PrimaryEvidence:    mustJSONString(base64.StdEncoding.EncodeToString(raw)),
		AdditionalEvidence: "",
	})
	return b
}

func mustJSONString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// DecodeEvidence returns the raw evidence bytes of a tee-evidence value.
// It fails, naming the shape found, if the value is neither a composite
// object with a base64 string primary_evidence nor a base64 string, if the
// base64 is invalid or empty, or if additional_evidence is non-empty
// (Coffer does not verify device evidence).
func DecodeEvidence(v json.RawMessage) ([]byte, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || bytes.Equal(v, []byte("null")) {
		return nil, errors.New("tee-evidence is missing: send {\"primary_evidence\": \"<base64 report>\", \"additional_evidence\": \"\"}")
	}
	switch v[0] {
	case '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("parse tee-evidence string: %w", err)
		}
		return decodeB64("tee-evidence", s)
	case '{':
		// Fast path: primary_evidence is the base64 string Coffer sends.
		var fast struct {
			PrimaryEvidence    string `json:"primary_evidence"`
			AdditionalEvidence string `json:"additional_evidence"`
		}
		if err := json.Unmarshal(v, &fast); err == nil && fast.PrimaryEvidence != "" {
			if a := strings.TrimSpace(fast.AdditionalEvidence); a != "" && a != "{}" {
				return nil, fmt.Errorf("tee-evidence.additional_evidence is %d bytes: this KBS verifies primary evidence only, send \"\"", len(fast.AdditionalEvidence))
			}
			return decodeB64("tee-evidence.primary_evidence", fast.PrimaryEvidence)
		}
		var c CompositeEvidence
		if err := json.Unmarshal(v, &c); err != nil {
			return nil, fmt.Errorf("parse tee-evidence object: %w", err)
		}
		if a := strings.TrimSpace(c.AdditionalEvidence); a != "" && a != "{}" {
			return nil, fmt.Errorf("tee-evidence.additional_evidence is %d bytes: this KBS verifies primary evidence only, send \"\"", len(c.AdditionalEvidence))
		}
		p := bytes.TrimSpace(c.PrimaryEvidence)
		if len(p) == 0 || p[0] != '"' {
			return nil, fmt.Errorf("tee-evidence.primary_evidence must be a base64 string of the raw report or quote, found %s", jsonKind(p))
		}
		var s string
		if err := json.Unmarshal(p, &s); err != nil {
			return nil, fmt.Errorf("parse tee-evidence.primary_evidence: %w", err)
		}
		return decodeB64("tee-evidence.primary_evidence", s)
	default:
		return nil, fmt.Errorf("tee-evidence must be an object or a base64 string, found %s", jsonKind(v))
	}
}

// DecodeBase64 decodes s in the standard or URL alphabet, padded or not.
func DecodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

func decodeB64(field, s string) ([]byte, error) {
	b, err := DecodeBase64(s)
	if err != nil {
		return nil, fmt.Errorf("decode %s base64: %w", field, err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%s is empty: send the base64 of the raw report or quote", field)
	}
	return b, nil
}

func jsonKind(v []byte) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}
