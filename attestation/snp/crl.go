package snp

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cofferhq/coffer/attestation"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"
)

// CheckRevocation names the failed check when an AMD CRL revokes the ASK,
// ASVK or the endorsement key, or when a CRL is required and none is
// usable.
const CheckRevocation = "revocation"

// Revocation says how the ARK-signed certificate revocation list of a
// product line (AMD KDS /vcek/v1/<line>/crl, or /vlek/v1/<line>/crl for a
// VLEK) is used.
type Revocation int

const (
	// RevocationIfAvailable (the default) checks the CRL when one is at
	// hand: CertDir's crl.der or crl.pem, else KDS through the Getter. No
	// CRL (no CertDir file and no Getter, or KDS unreachable) passes.
	RevocationIfAvailable Revocation = iota
	// RevocationRequired fails check "revocation" when no valid, unexpired
	// CRL can be obtained.
	RevocationRequired
	// RevocationOff never consults a CRL.
	RevocationOff
)

// crlCache keeps each product line's verified CRL until its NextUpdate.
type crlCache struct {
	mu sync.Mutex
	m  map[string]*x509.RevocationList
}

// checkRevocation checks ek's intermediate (ASK/ASVK) and ek itself
// against line's CRL per v.cfg.Revocation. The CRL must be signed by the
// ARK of root and unexpired at now. A verified chain is cached at most
// until the CRL's NextUpdate (see chainCache.put).
func (v *Verifier) checkRevocation(ctx context.Context, line string, ek *endorsementKey, root *trust.AMDRootCerts, now time.Time) error {
	if v.cfg.Revocation == RevocationOff {
		return nil
	}
	crl, err := v.productCRL(ctx, line, ek.signer, root, now)
	if err != nil {
		if v.cfg.Revocation == RevocationRequired {
			return attestation.Fail(CheckRevocation, fmt.Errorf("%w (revocation checking is required by the configuration)", err))
		}
		return nil
	}
	ica := root.ProductCerts.Ask
	if ek.signer == abi.VlekReportSigner {
		ica = root.ProductCerts.Asvk
	}
	for _, rc := range crl.RevokedCertificateEntries {
		for _, c := range []*x509.Certificate{ica, ek.cert} {
			if c != nil && rc.SerialNumber.Cmp(c.SerialNumber) == 0 {
				return attestation.Fail(CheckRevocation, fmt.Errorf("AMD's %s CRL (issued %s) revokes certificate %q serial %s since %s: the platform's keys must not be trusted",
					line, crl.ThisUpdate.UTC().Format(time.RFC3339), c.Subject.CommonName, c.SerialNumber, rc.RevocationTime.UTC().Format(time.RFC3339)))
			}
		}
	}
	ek.crlNextUpdate = crl.NextUpdate
	return nil
}

// productCRL returns line's CRL from the cache, CertDir, or KDS, verified
// against root's ARK and unexpired at now.
func (v *Verifier) productCRL(ctx context.Context, line string, signer abi.ReportSigner, root *trust.AMDRootCerts, now time.Time) (*x509.RevocationList, error) {
	url := kds.CrlLinkByKey(line, signer)
	v.crls.mu.Lock()
	cached := v.crls.m[url]
	v.crls.mu.Unlock()
	if cached != nil && validCRL(cached, root, now) == nil {
		return cached, nil
	}
	var crl *x509.RevocationList
	var sources []string
	var errs []error
	try := func(where string, raw []byte) *x509.RevocationList {
		sources = append(sources, where)
		c, err := parseCRL(raw)
		if err == nil {
			err = validCRL(c, root, now)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			return nil
		}
		return c
	}
	if v.cfg.CertDir != "" {
		for _, name := range []string{"crl.der", "crl.pem"} {
			p := filepath.Join(v.cfg.CertDir, name)
			raw, err := os.ReadFile(p)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if crl = try(p, raw); crl != nil {
				break
			}
		}
	}
	if crl == nil && v.getter != nil {
		raw, err := trust.GetWith(ctx, v.getter, url)
		if err == nil {
			if crl = try(url, raw); crl == nil {
				// A stale body in the fetch cache: drop it and fetch anew.
				if cg, ok := v.getter.(*CachingGetter); ok {
					cg.Forget(url)
					if raw, err = trust.GetWith(ctx, v.getter, url); err == nil {
						crl = try(url+" (refetched)", raw)
					}
				}
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("fetch %s: %w", url, err))
		}
	}
	if crl == nil {
		if len(sources) == 0 && len(errs) == 0 {
			return nil, fmt.Errorf("no %s CRL is available: put AMD's CRL (%s) in the certificate directory as crl.der or crl.pem, or enable KDS fetching", line, url)
		}
		return nil, fmt.Errorf("no valid %s CRL: %w", line, errors.Join(errs...))
	}
	v.crls.mu.Lock()
	if v.crls.m == nil {
		v.crls.m = map[string]*x509.RevocationList{}
	}
	v.crls.m[url] = crl
	v.crls.mu.Unlock()
	return crl, nil
}

// parseCRL reads a DER or PEM ("X509 CRL") CRL.
func parseCRL(raw []byte) (*x509.RevocationList, error) {
	if b, _ := pem.Decode(raw); b != nil {
		raw = b.Bytes
	}
	c, err := x509.ParseRevocationList(raw)
	if err != nil {
		return nil, fmt.Errorf("parse CRL (want DER or PEM): %w", err)
	}
	return c, nil
}

// validCRL checks that c is signed by root's ARK and current at now.
func validCRL(c *x509.RevocationList, root *trust.AMDRootCerts, now time.Time) error {
	if err := c.CheckSignatureFrom(root.ProductCerts.Ark); err != nil {
		return fmt.Errorf("CRL is not signed by the ARK %q: %w", root.ProductCerts.Ark.Subject.CommonName, err)
	}
	if now.Before(c.ThisUpdate) {
		return fmt.Errorf("CRL is issued at %s, after the verification time %s", c.ThisUpdate.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !c.NextUpdate.IsZero() && !now.Before(c.NextUpdate) {
		return fmt.Errorf("CRL expired at %s (nextUpdate); fetch a current one", c.NextUpdate.UTC().Format(time.RFC3339))
	}
	return nil
}
