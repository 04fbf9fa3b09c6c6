package aa

import "time"

// Phase is the stage of attestation or key release an Event reports.
type Phase string

// Phases, in the order a successful run emits them.
const (
	// PhaseEvidence: the TEE produced evidence (Measurement is set).
	PhaseEvidence Phase = "evidence"
	// PhaseVerifying: the evidence was sent to the KBS.
	PhaseVerifying Phase = "verifying"
	// PhaseAllowed: the KBS accepted the evidence and issued a token.
	PhaseAllowed Phase = "allowed"
	// PhaseDenied: the KBS rejected the evidence or its policy denied it
	// (final; Reason names the check or rule).
	PhaseDenied Phase = "denied"
	// PhaseFailed: an attempt failed (Reason gives the cause); a KBS that
	// is unreachable or answers 5xx is retried, so several may precede
	// PhaseAllowed.
	PhaseFailed Phase = "failed"
	// PhaseKeysReleased: a resource (Resource is its URI) was released.
	PhaseKeysReleased Phase = "keys-released"
)

// Event is one step of attestation or key release, for the shim's
// /cc/attestation events.
type Event struct {
	// Phase is the step.
	Phase Phase
	// TEE is the evidence format: "sim", "snp" or "tdx".
	TEE string
	// Measurement is the launch measurement in the evidence, lowercase hex
	// (48 bytes: SNP/sim MEASUREMENT, TDX MRTD); "" before evidence exists.
	Measurement string
	// KBSURL is the KBS base URL.
	KBSURL string
	// Reason explains PhaseDenied and PhaseFailed; "" otherwise.
	Reason string
	// Resource is the resource URI of PhaseKeysReleased (and of a failed
	// or denied resource request).
	Resource string
	// Attempt counts attestation attempts from 1.
	Attempt int
	// Duration is the time since the attempt (or resource request) began.
	Duration time.Duration
}
