package tdx

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// MaxEvidenceJSONSize bounds a guest-components TDX evidence document,
// bytes (a quote is ~5 KiB; the CC event log can be tens of KiB).
const MaxEvidenceJSONSize = 4 << 20

// evidenceJSON is the TDX evidence CoCo guest-components' attester
// (attestation-agent/attester/src/tdx) sends, and Trustee's TDX verifier
// (deps/verifier/src/tdx) reads: {"cc_eventlog": base64 of the CCEL ACPI
// table or null, "quote": base64 of the TD quote}. Newer attesters add
// other members (e.g. "aa_eventlog"); they are ignored.
type evidenceJSON struct {
	CCEventLog *string `json:"cc_eventlog"`
	Quote      string  `json:"quote"`
}

// IsEvidenceJSON reports whether doc looks like a guest-components TDX
// evidence document (a JSON object with a "quote" member).
func IsEvidenceJSON(doc []byte) bool {
	var probe struct {
		Quote json.RawMessage `json:"quote"`
	}
	doc = bytes.TrimSpace(doc)
	return len(doc) > 0 && doc[0] == '{' && json.Unmarshal(doc, &probe) == nil && len(probe.Quote) > 0
}

// DecodeEvidenceJSON returns the raw TD quote of a guest-components TDX
// evidence document (standard base64, padded or not). The CC event log is
// not returned: Coffer checks RTMR values against reference values and
// does not replay the event log. It fails, naming the member, if the
// document is not that shape or the quote is not base64 or empty.
func DecodeEvidenceJSON(doc []byte) ([]byte, error) {
	if len(doc) > MaxEvidenceJSONSize {
		return nil, fmt.Errorf("TDX evidence JSON is %d bytes, more than the %d allowed", len(doc), MaxEvidenceJSONSize)
	}
	var ev evidenceJSON
	if err := json.Unmarshal(doc, &ev); err != nil {
		return nil, fmt.Errorf("parse guest-components TDX evidence JSON: %w", err)
	}
	if ev.Quote == "" {
		return nil, errors.New(`TDX evidence JSON has no "quote": want {"cc_eventlog": <base64 or null>, "quote": <base64 TD quote>} as CoCo guest-components sends`)
	}
	q, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(strings.TrimSpace(ev.Quote), "="))
	if err != nil {
		return nil, fmt.Errorf("decode TDX evidence JSON quote base64: %w", err)
	}
	if len(q) == 0 {
		return nil, errors.New(`TDX evidence JSON "quote" decodes to no bytes: send the base64 TD quote`)
	}
	return q, nil
}
