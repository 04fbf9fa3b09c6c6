package server

import (
	"errors"
	"fmt"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/snp"
	"github.com/cofferhq/coffer/attestation/tdx"
	"github.com/cofferhq/coffer/kbs/protocol"
)

// decodedEvidence is the verifier input of an /attest request: raw bytes,
// and for a guest-components JSON document the TEEs whose format it is.
type decodedEvidence struct {
	raw []byte
	// forTEEs is nil for base64 raw evidence (any TEE), else the TEEs the
	// JSON document's format belongs to.
	forTEEs []attestation.TEE
	format  string
}

// decodeEvidence converts decoded tee-evidence into verifier input. A
// JSON primary_evidence is recognised by shape (SNP: "attestation_report";
// TDX: "quote") and converted before the session is looked up, so a
// malformed document does not spend the nonce.
func decodeEvidence(ev *protocol.Evidence) (*decodedEvidence, error) {
	if ev.PrimaryJSON == nil {
		return &decodedEvidence{raw: ev.Primary}, nil
	}
	switch {
	case snp.IsSevJSON(ev.PrimaryJSON):
		raw, err := snp.DecodeSevJSON(ev.PrimaryJSON)
		if err != nil {
			return nil, fmt.Errorf("tee-evidence.primary_evidence: %w", err)
		}
		return &decodedEvidence{raw: raw, forTEEs: []attestation.TEE{attestation.TEESNP, attestation.TEESim}, format: "guest-components SNP"}, nil
	case tdx.IsEvidenceJSON(ev.PrimaryJSON):
		raw, err := tdx.DecodeEvidenceJSON(ev.PrimaryJSON)
		if err != nil {
			return nil, fmt.Errorf("tee-evidence.primary_evidence: %w", err)
		}
		return &decodedEvidence{raw: raw, forTEEs: []attestation.TEE{attestation.TEETDX}, format: "guest-components TDX"}, nil
	default:
		return nil, errors.New(`tee-evidence.primary_evidence is a JSON object but neither guest-components SNP evidence ({"attestation_report", "cert_chain"}) nor TDX evidence ({"cc_eventlog", "quote"}); send one of those or the base64 raw report or quote`)
	}
}

// checkFormat fails if the evidence document's format is not tee's.
func (d *decodedEvidence) checkFormat(tee attestation.TEE) error {
	if d.forTEEs == nil {
		return nil
	}
	for _, t := range d.forTEEs {
		if t == tee {
			return nil
		}
	}
	return attestation.Fail(attestation.CheckParse, fmt.Errorf("tee-evidence is %s evidence, but the session was opened for tee %q", d.format, tee))
}
