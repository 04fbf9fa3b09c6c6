package sim

import (
	"context"
	"errors"
	"fmt"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/snp"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"
)

// ErrRootNotConfigured is the reason every Verify of a sim Verifier built
// without a root fails (check "trusted_root").
var ErrRootNotConfigured = errors.New("sim evidence is accepted only when the configuration names the sim root (root.pem); none is configured")

// Product is the Claims.Product of sim evidence.
const Product = "sim"

// Config configures a sim Verifier.
type Config struct {
	// RootPEM is the sim trust anchor, Signer.RootPEM() / root.pem (ASK then
	// ARK). Empty: the verifier rejects all evidence with
	// ErrRootNotConfigured.
	RootPEM []byte
	// MinimumTCB, MinimumLaunchTCB and AllowDebug are as in snp.Config.
	MinimumTCB       kds.TCBParts
	MinimumLaunchTCB *kds.TCBParts
	AllowDebug       bool
}

// Verifier verifies sim evidence with attestation/snp's verifier, trusting
// only the configured sim root. It implements attestation.Verifier.
type Verifier struct {
	inner *snp.Verifier
}

var _ attestation.Verifier = (*Verifier)(nil)

// NewVerifier returns a sim Verifier. With an empty RootPEM it succeeds and
// returns a verifier that rejects everything (so a KBS can always register
// it and answer with a named check). It fails if RootPEM is not a valid
// cert_chain bundle or a TCB floor is out of range.
func NewVerifier(cfg Config) (*Verifier, error) {
	if len(cfg.RootPEM) == 0 {
		return &Verifier{}, nil
	}
	roots, err := snp.RootsFromPEM(ProductLine, cfg.RootPEM)
	if err != nil {
		return nil, fmt.Errorf("configure sim verifier: root: %w", err)
	}
	inner, err := snp.NewVerifier(snp.Config{
		TrustedRoots:     map[string][]*trust.AMDRootCerts{ProductLine: roots},
		MinimumTCB:       cfg.MinimumTCB,
		MinimumLaunchTCB: cfg.MinimumLaunchTCB,
		AllowDebug:       cfg.AllowDebug,
		Product:          ProductLine,
	})
	if err != nil {
		return nil, fmt.Errorf("configure sim verifier: %w", err)
	}
	return &Verifier{inner: inner}, nil
}

// TEE returns attestation.TEESim.
func (v *Verifier) TEE() attestation.TEE { return attestation.TEESim }

// Verify verifies sim evidence exactly as snp.Verifier.Verify does, with the
// sim root as the only trusted root, and returns claims with TEE "sim" and
// Product "sim". Errors are *attestation.CheckError as for SNP; without a
// configured root it is check "trusted_root" wrapping ErrRootNotConfigured.
func (v *Verifier) Verify(ctx context.Context, evidence []byte, opts attestation.VerifyOptions) (*attestation.Claims, error) {
	if v.inner == nil {
		return nil, attestation.Fail(attestation.CheckTrustedRoot, ErrRootNotConfigured)
	}
	claims, err := v.inner.Verify(ctx, evidence, opts)
	if err != nil {
		return nil, err
	}
	claims.TEE = attestation.TEESim
	claims.Product = Product
	return claims, nil
}
