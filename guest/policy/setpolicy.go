package policy

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/hex"
	"fmt"

	"github.com/containerd/errdefs"
)

// CheckPolicyDigest checks that regoText is the policy measured in
// init-data: want is the SHA-256 (32 bytes, SNP HOST_DATA's algorithm) or
// SHA-384 (48 bytes, TDX MRCONFIGID's) of the init-data's
// data["policy.rego"] text, and the same hash of regoText must equal it
// (constant-time compare). It returns an errdefs.ErrPermissionDenied error
// naming both digests on a mismatch, and an errdefs.ErrInvalidArgument
// error when want has another length (no init-data: nothing may replace
// the policy).
func CheckPolicyDigest(regoText string, want []byte) error {
	var got []byte
	var alg string
	switch len(want) {
	case sha256.Size:
		s := sha256.Sum256([]byte(regoText))
		got, alg = s[:], "sha256"
	case sha512.Size384:
		s := sha512.Sum384([]byte(regoText))
		got, alg = s[:], "sha384"
	default:
		return fmt.Errorf("check agent policy digest: init-data policy digest is %d bytes: want 32 (SHA-256) or 48 (SHA-384); without init-data the policy cannot be replaced: %w", len(want), errdefs.ErrInvalidArgument)
	}
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return fmt.Errorf("check agent policy digest: new policy has %s %s, init-data's policy has %s: only the measured policy may be loaded: %w",
			alg, hex.EncodeToString(got), hex.EncodeToString(want), errdefs.ErrPermissionDenied)
	}
	return nil
}

// SetPolicy replaces the loaded policy at run time with regoText. The
// current policy must allow SetPolicyRequest (input.request =
// {policy_sha256, policy_sha384}: hex digests of regoText), else a
// *DeniedError; then CheckPolicyDigest(regoText, initDataDigest) must pass;
// then regoText must compile (errdefs.ErrInvalidArgument otherwise). The
// state (pulled images, created containers) is kept. Requests evaluated
// concurrently see either the old or the new policy.
func (e *Engine) SetPolicy(ctx context.Context, regoText string, initDataDigest []byte) error {
	s256 := sha256.Sum256([]byte(regoText))
	s384 := sha512.Sum384([]byte(regoText))
	req := map[string]any{"policy_sha256": hex.EncodeToString(s256[:]), "policy_sha384": hex.EncodeToString(s384[:])}
	if err := e.decide(ctx, RuleSetPolicy, req); err != nil {
		return err
	}
	if err := CheckPolicyDigest(regoText, initDataDigest); err != nil {
		return err
	}
	p, err := compile(ctx, regoText)
	if err != nil {
		return err
	}
	e.policy.Store(p)
	return nil
}

// Source returns the text of the policy in force.
func (e *Engine) Source() string { return e.policy.Load().source }

// Install replaces the policy with regoText from init-data the agent has
// already verified against the TEE's launch-bound digest (InitSandbox):
// unlike SetPolicy it consults neither SetPolicyRequest nor a digest. The
// state is kept. It returns an errdefs.ErrInvalidArgument error, and keeps
// the current policy, when regoText does not compile.
func (e *Engine) Install(ctx context.Context, regoText string) error {
	p, err := compile(ctx, regoText)
	if err != nil {
		return err
	}
	e.policy.Store(p)
	return nil
}
