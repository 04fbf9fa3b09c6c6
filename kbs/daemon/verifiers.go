package daemon

import (
	"encoding/hex"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/google/go-sev-guest/kds"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/cofferhq/coffer/attestation/snp"
	"github.com/cofferhq/coffer/attestation/tdx"
	"github.com/cofferhq/coffer/kbs/config"
)

// BuildVerifiers constructs the verifiers the configuration enables.
func BuildVerifiers(c config.TEEs) (map[attestation.TEE]attestation.Verifier, error) {
	out := map[attestation.TEE]attestation.Verifier{}
	if c.SNP.Enabled {
		cfg := snp.Config{
			CertDir:    c.SNP.CertDir,
			MinimumTCB: tcbParts(c.SNP.MinTCB),
			AllowDebug: c.SNP.AllowDebug,
			Product:    c.SNP.Product,
		}
		switch c.SNP.Revocation {
		case config.RevocationRequired:
			cfg.Revocation = snp.RevocationRequired
		case config.RevocationOff:
			cfg.Revocation = snp.RevocationOff
		}
		if c.SNP.KDS {
			cfg.Getter = snp.KDSGetter()
		}
		v, err := snp.NewVerifier(cfg)
		if err != nil {
			return nil, fmt.Errorf("tee.snp: %w", err)
		}
		out[attestation.TEESNP] = v
	}
	if c.TDX.Enabled {
		cfg := tdx.Config{CollateralDir: c.TDX.CollateralDir, AllowDebug: c.TDX.AllowDebug}
		if c.TDX.MinTeeTCBSVN != "" {
			svn, err := hex.DecodeString(c.TDX.MinTeeTCBSVN)
			if err != nil {
				return nil, fmt.Errorf("tee.tdx.min_tee_tcb_svn: %w", err)
			}
			cfg.MinimumTeeTcbSvn = svn
		}
		if c.TDX.PCS {
			cfg.Getter = tdx.PCSGetter()
		}
		v, err := tdx.NewVerifier(cfg)
		if err != nil {
			return nil, fmt.Errorf("tee.tdx: %w", err)
		}
		out[attestation.TEETDX] = v
	}
	// The sim verifier is always registered: without a configured root it
	// rejects every report with check "trusted_root" naming the missing
	// root, so sim evidence fails with a named check rather than silently.
	var simRoot []byte
	if c.Sim.RootPEM != "" {
		b, err := os.ReadFile(c.Sim.RootPEM)
		if err != nil {
			return nil, fmt.Errorf("tee.sim.root_pem: %w", err)
		}
		simRoot = b
	}
	sv, err := sim.NewVerifier(sim.Config{RootPEM: simRoot, MinimumTCB: tcbParts(c.Sim.MinTCB), AllowDebug: c.Sim.AllowDebug})
	if err != nil {
		return nil, fmt.Errorf("tee.sim: %w", err)
	}
	out[attestation.TEESim] = sv
	return out, nil
}

func tcbParts(t config.TCB) kds.TCBParts {
	return kds.TCBParts{BlSpl: t.Bootloader, TeeSpl: t.TEE, SnpSpl: t.SNP, UcodeSpl: t.Microcode}
}

func teeList(m map[attestation.TEE]attestation.Verifier) string {
	names := make([]string, 0, len(m))
	for t := range m {
		names = append(names, string(t))
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
