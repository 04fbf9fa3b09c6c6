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

// EncodeEvidence returns the tee-evidence JSON for raw evidence bytes with
// no additional evidence.
func EncodeEvidence(raw []byte) json.RawMessage { return EncodeCompositeEvidence(raw, "") }

// EncodeCompositeEvidence returns the tee-evidence JSON for raw primary
// evidence bytes and an additional_evidence string (sent verbatim; it must
// be the string hashed into REPORT_DATA).
func EncodeCompositeEvidence(raw []byte, additional string) json.RawMessage {
	// Base64 needs no JSON escaping: write it directly rather than have
	// encoding/json scan kilobytes of it twice.
	add, _ := json.Marshal(additional)
	const head, mid = `{"primary_evidence":"`, `","additional_evidence":`
	out := make([]byte, 0, len(head)+base64.StdEncoding.EncodedLen(len(raw))+len(mid)+len(add)+1)
	out = append(out, head...)
	out = base64.StdEncoding.AppendEncode(out, raw)
	out = append(out, mid...)
	out = append(out, add...)
	return append(out, '}')
}

// DecodeEvidence returns the raw evidence bytes of a tee-evidence value.
// It fails, naming the shape found, if the value is neither a composite
// object with a base64 string primary_evidence nor a base64 string, if the
// base64 is invalid or empty, or if additional_evidence is non-empty (use
// DecodeCompositeEvidence to accept it).
func DecodeEvidence(v json.RawMessage) ([]byte, error) {
	ev, err := DecodeCompositeEvidence(v)
	if err != nil {
		return nil, err
	}
	if ev.PrimaryJSON != nil {
		return nil, errors.New("tee-evidence.primary_evidence is a JSON document: only base64 raw evidence is accepted here")
	}
	if a := strings.TrimSpace(ev.AdditionalEvidence); a != "" && a != "{}" {
		return nil, fmt.Errorf("tee-evidence.additional_evidence is %d bytes: only primary evidence is accepted here, send \"\"", len(ev.AdditionalEvidence))
	}
	return ev.Primary, nil
}

// Evidence is a decoded tee-evidence value.
type Evidence struct {
	// Primary is the primary TEE's raw evidence (base64-decoded); nil when
	// PrimaryJSON is set.
	Primary []byte
	// PrimaryJSON is the primary evidence when the client sent a JSON
	// document rather than base64 bytes: CoCo guest-components' SNP
	// ({"attestation_report", "cert_chain"}) or TDX ({"cc_eventlog",
	// "quote"}) evidence, as an object or as a string holding the object.
	// The KBS converts it per TEE (attestation/snp.DecodeSevJSON,
	// attestation/tdx.DecodeEvidenceJSON).
	PrimaryJSON json.RawMessage
	// AdditionalEvidence is the composite evidence's additional_evidence
	// string verbatim ("" when absent; clients may send "{}"). It is hashed into the
	// runtime data (attestation/reportdata) exactly as Trustee does; Coffer
	// binds it but does not verify device evidence.
	AdditionalEvidence string
}

// DecodeCompositeEvidence decodes a tee-evidence value: the composite
// object {"primary_evidence": "<base64>", "additional_evidence": "<JSON
// string>"} or a bare base64 string (the pre-0.4 shape). It fails, naming
// the shape found, for other shapes, invalid or empty base64.
func DecodeCompositeEvidence(v json.RawMessage) (*Evidence, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || bytes.Equal(v, []byte("null")) {
		return nil, errors.New("tee-evidence is missing: send {\"primary_evidence\": \"<base64 report>\", \"additional_evidence\": \"\"}")
	}
	switch v[0] {
	case '"':
		s, err := jsonString(v)
		if err != nil {
			return nil, fmt.Errorf("parse tee-evidence string: %w", err)
		}
		raw, err := decodeB64("tee-evidence", s)
		if err != nil {
			return nil, err
		}
		return &Evidence{Primary: raw}, nil
	case '{':
		var c CompositeEvidence
		if err := json.Unmarshal(v, &c); err != nil {
			return nil, fmt.Errorf("parse tee-evidence object: %w", err)
		}
		return primaryEvidence(c.PrimaryEvidence, c.AdditionalEvidence)
	default:
		return nil, fmt.Errorf("tee-evidence must be an object or a base64 string, found %s", jsonKind(v))
	}
}

// primaryEvidence decodes a composite evidence's primary_evidence value:
// a base64 string of raw bytes, a guest-components JSON document, or a
// string holding one.
func primaryEvidence(p json.RawMessage, additional string) (*Evidence, error) {
	p = bytes.TrimSpace(p)
	if len(p) > 0 && p[0] == '{' {
		return &Evidence{PrimaryJSON: p, AdditionalEvidence: additional}, nil
	}
	if len(p) == 0 || p[0] != '"' {
		return nil, fmt.Errorf("tee-evidence.primary_evidence must be a base64 string of the raw report or quote, or a guest-components evidence object, found %s", jsonKind(p))
	}
	s, err := jsonString(p)
	if err != nil {
		return nil, fmt.Errorf("parse tee-evidence.primary_evidence: %w", err)
	}
	if t := strings.TrimSpace(s); strings.HasPrefix(t, "{") {
		// Older guest-components send the evidence document as a JSON
		// string.
		return &Evidence{PrimaryJSON: json.RawMessage(t), AdditionalEvidence: additional}, nil
	}
	raw, err := decodeB64("tee-evidence.primary_evidence", s)
	if err != nil {
		return nil, err
	}
	return &Evidence{Primary: raw, AdditionalEvidence: additional}, nil
}

// jsonString returns the value of a JSON string literal. Base64 needs no
// escapes, so a literal without backslashes or control bytes is taken as
// is, without a second JSON scan of a value that may be kilobytes long.
func jsonString(v []byte) (string, error) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		inner := v[1 : len(v)-1]
		plain := true
		for _, c := range inner {
			if c == '\\' || c == '"' || c < 0x20 {
				plain = false
				break
			}
		}
		if plain {
			return string(inner), nil
		}
	}
	var s string
	err := json.Unmarshal(v, &s)
	return s, err
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
