package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrMalformedJSON is wrapped by DecodeAttestationBody errors about the
// body's JSON itself (syntax, types, trailing data), as opposed to the
// values it carries.
var ErrMalformedJSON = errors.New("malformed JSON")

// AttestationBody is a decoded /attest request body.
type AttestationBody struct {
	// InitData and RuntimeData are the request's members (TEEEvidence is
	// not kept: see Evidence).
	InitData    *InitData
	RuntimeData RuntimeData
	// Evidence is tee-evidence decoded as DecodeCompositeEvidence does;
	// nil when EvidenceErr is set.
	Evidence *Evidence
	// EvidenceErr says why a well-formed tee-evidence value is not usable
	// (missing, wrong shape, bad base64). The KBS reports it after the
	// checks that come first in the protocol (nonce present, tee-pubkey).
	EvidenceErr error
}

// DecodeAttestationBody decodes an /attest body: exactly one JSON object
// with members "init-data", "runtime-data" and "tee-evidence" (others
// are ignored, as Trustee's serde types do; trailing data is refused).
// Unlike decoding into Attestation and then DecodeCompositeEvidence, it
// reads tee-evidence in the same pass, so the evidence string (kilobytes
// of base64 with a certificate table) is scanned once, not four times.
// Errors about the JSON wrap ErrMalformedJSON.
func DecodeAttestationBody(body []byte) (*AttestationBody, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, fmt.Errorf("attestation body is empty: want a JSON object: %w", ErrMalformedJSON)
	}
	d := json.NewDecoder(bytes.NewReader(body))
	if err := expectDelim(d, '{'); err != nil {
		return nil, fmt.Errorf("parse attestation body: %v: %w", err, ErrMalformedJSON)
	}
	out := &AttestationBody{EvidenceErr: errMissingEvidence}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, fmt.Errorf("parse attestation body: %v: %w", err, ErrMalformedJSON)
		}
		key, _ := tok.(string)
		switch key {
		case "init-data":
			err = d.Decode(&out.InitData)
		case "runtime-data":
			err = d.Decode(&out.RuntimeData)
		case "tee-evidence":
			out.Evidence, out.EvidenceErr, err = decodeEvidenceStream(d)
		default:
			var skip json.RawMessage
			err = d.Decode(&skip)
		}
		if err != nil {
			return nil, fmt.Errorf("parse attestation body member %q: %v: %w", key, err, ErrMalformedJSON)
		}
	}
	if err := expectDelim(d, '}'); err != nil {
		return nil, fmt.Errorf("parse attestation body: %v: %w", err, ErrMalformedJSON)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("parse attestation body: trailing data after the JSON value: %w", ErrMalformedJSON)
	}
	return out, nil
}

var errMissingEvidence = errors.New("tee-evidence is missing: send {\"primary_evidence\": \"<base64 report>\", \"additional_evidence\": \"\"}")

func expectDelim(d *json.Decoder, want json.Delim) error {
	tok, err := d.Token()
	if err != nil {
		return err
	}
	if got, ok := tok.(json.Delim); !ok || got != want {
		return fmt.Errorf("found %v where %q was expected", tok, string(want))
	}
	return nil
}

// decodeEvidenceStream reads one tee-evidence value from d. jsonErr is a
// JSON error (the body is malformed); evErr a value that is well-formed
// JSON but not usable evidence.
func decodeEvidenceStream(d *json.Decoder) (ev *Evidence, evErr, jsonErr error) {
	tok, err := d.Token()
	if err != nil {
		return nil, nil, err
	}
	switch t := tok.(type) {
	case nil:
		return nil, errMissingEvidence, nil
	case string:
		raw, err := decodeB64("tee-evidence", t)
		if err != nil {
			return nil, err, nil
		}
		return &Evidence{Primary: raw}, nil, nil
	case json.Delim:
		if t == '[' {
			if err := skipRest(d, ']'); err != nil {
				return nil, nil, err
			}
			return nil, errors.New("tee-evidence must be an object or a base64 string, found an array"), nil
		}
	default:
		return nil, fmt.Errorf("tee-evidence must be an object or a base64 string, found %T", tok), nil
	}
	// An object: {"primary_evidence": ..., "additional_evidence": "..."}.
	var primary json.RawMessage
	var additional string
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, nil, err
		}
		switch tok {
		case "primary_evidence":
			if err := d.Decode(&primary); err != nil {
				return nil, nil, err
			}
		case "additional_evidence":
			var v any
			if err := d.Decode(&v); err != nil {
				return nil, nil, err
			}
			s, ok := v.(string)
			if !ok && v != nil {
				evErr = fmt.Errorf("tee-evidence.additional_evidence must be a string (JSON text), found %T", v)
			}
			additional = s
		default:
			var skip json.RawMessage
			if err := d.Decode(&skip); err != nil {
				return nil, nil, err
			}
		}
	}
	if err := expectDelim(d, '}'); err != nil {
		return nil, nil, err
	}
	if evErr != nil {
		return nil, evErr, nil
	}
	ev, evErr = primaryEvidence(primary, additional)
	return ev, evErr, nil
}

// skipRest consumes the remaining values of an array whose "[" was read,
// up to and including end.
func skipRest(d *json.Decoder, end json.Delim) error {
	for d.More() {
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			return err
		}
	}
	return expectDelim(d, end)
}
