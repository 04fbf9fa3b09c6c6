package snp

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"sync"

	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"
)

// Product lines with embedded AMD roots.
const (
	Milan = "Milan"
	Genoa = "Genoa"
	Turin = "Turin"
)

var (
	defaultRootsOnce sync.Once
	defaultRoots     map[string][]*trust.AMDRootCerts
	defaultRootsErr  error
)

// DefaultRoots returns AMD's real ARK, ASK and ASVK certificates for Milan,
// Genoa and Turin, as published by AMD KDS (/vcek/v1/<line>/cert_chain and
// /vlek/v1/<line>/cert_chain) and embedded in go-sev-guest's verify/trust.
// Unlike go-sev-guest's own defaults it includes the ASVK, so VLEK-signed
// reports verify too. The map is keyed by product line; callers must not
// modify it.
func DefaultRoots() (map[string][]*trust.AMDRootCerts, error) {
	defaultRootsOnce.Do(func() {
		bundles := []struct {
			line       string
			vcek, vlek []byte
		}{
			{Milan, trust.AskArkMilanVcekBytes, trust.AskArkMilanVlekBytes},
			{Genoa, trust.AskArkGenoaVcekBytes, trust.AskArkGenoaVlekBytes},
			{Turin, trust.AskArkTurinVcekBytes, trust.AskArkTurinVlekBytes},
		}
		defaultRoots = map[string][]*trust.AMDRootCerts{}
		for _, b := range bundles {
			roots, err := RootsFromPEM(b.line, b.vcek, b.vlek)
			if err != nil {
				defaultRootsErr = fmt.Errorf("load embedded AMD %s roots: %w", b.line, err)
				return
			}
			defaultRoots[b.line] = roots
		}
	})
	return defaultRoots, defaultRootsErr
}

// RootsFromPEM builds the trusted roots of one product line from KDS
// cert_chain bundles (PEM: the ASK or ASVK, then the ARK). Bundles sharing an
// ARK are merged into one root holding both the ASK and the ASVK. It fails
// if a bundle does not hold exactly two certificates, if the intermediate is
// not signed by the ARK, or if the ARK is not self-signed.
func RootsFromPEM(productLine string, bundles ...[]byte) ([]*trust.AMDRootCerts, error) {
	var roots []*trust.AMDRootCerts
	for i, bundle := range bundles {
		ica, ark, err := parseBundle(bundle)
		if err != nil {
			return nil, fmt.Errorf("parse %s root bundle %d: %w", productLine, i, err)
		}
		var root *trust.AMDRootCerts
		for _, r := range roots {
			if bytes.Equal(r.ProductCerts.Ark.Raw, ark.Raw) {
				root = r
			}
		}
		if root == nil {
			root = trust.AMDRootCertsProduct(productLine)
			root.ProductCerts = &trust.ProductCerts{Ark: ark}
			roots = append(roots, root)
		}
		if strings.HasPrefix(ica.Subject.CommonName, "SEV-VLEK") {
			root.ProductCerts.Asvk = ica
		} else {
			root.ProductCerts.Ask = ica
		}
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("no %s root bundles given", productLine)
	}
	return roots, nil
}

func parseBundle(bundle []byte) (ica, ark *x509.Certificate, err error) {
	icaDER, arkDER, err := kds.ParseProductCertChain(bytes.TrimSpace(bundle))
	if err != nil {
		return nil, nil, err
	}
	if ica, err = x509.ParseCertificate(icaDER); err != nil {
		return nil, nil, fmt.Errorf("parse ASK/ASVK certificate: %w", err)
	}
	if ark, err = x509.ParseCertificate(arkDER); err != nil {
		return nil, nil, fmt.Errorf("parse ARK certificate: %w", err)
	}
	if err := ark.CheckSignatureFrom(ark); err != nil {
		return nil, nil, fmt.Errorf("ARK %q is not self-signed: %w", ark.Subject.CommonName, err)
	}
	if err := ica.CheckSignatureFrom(ark); err != nil {
		return nil, nil, fmt.Errorf("intermediate %q is not signed by ARK %q: %w", ica.Subject.CommonName, ark.Subject.CommonName, err)
	}
	return ica, ark, nil
}

// EncodeBundle returns the KDS cert_chain PEM form (intermediate, then ARK)
// that RootsFromPEM reads.
func EncodeBundle(ica, ark *x509.Certificate) []byte {
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: ica.Raw})
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: ark.Raw})
	return b.Bytes()
}
