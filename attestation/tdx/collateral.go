package tdx

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-tdx-guest/verify/trust"
)

// Files of an offline collateral directory (Config.CollateralDir). Bodies are
// Intel PCS v4 responses saved verbatim; issuer chains are the PEM
// certificates PCS sends URL-encoded in a response header.
const (
	// TCBInfoFile is the body of GET /tdx/certification/v4/tcb?fmspc=<FMSPC>.
	TCBInfoFile = "tcb_info.json"
	// TCBInfoChainFile is its TCB-Info-Issuer-Chain header (PEM).
	TCBInfoChainFile = "tcb_info_issuer_chain.pem"
	// QEIdentityFile is the body of GET /tdx/certification/v4/qe/identity.
	QEIdentityFile = "qe_identity.json"
	// QEIdentityChainFile is its SGX-Enclave-Identity-Issuer-Chain header (PEM).
	QEIdentityChainFile = "qe_identity_issuer_chain.pem"
	// PCKCRLFile (optional) is the DER body of GET /sgx/certification/v4/pckcrl?ca=<platform|processor>&encoding=der.
	PCKCRLFile = "pck_crl.der"
	// PCKCRLChainFile (optional) is its SGX-PCK-CRL-Issuer-Chain header (PEM).
	PCKCRLChainFile = "pck_crl_issuer_chain.pem"
	// RootCRLFile (optional) is the Intel SGX Root CA CRL (DER).
	RootCRLFile = "root_ca_crl.der"
)

// dirGetter answers go-tdx-guest's PCS requests from an offline collateral
// directory, as trust.HTTPSGetter.
type dirGetter struct{ dir string }

var _ trust.HTTPSGetter = dirGetter{}

// Get maps a PCS URL to the directory's files. Header names are as
// go-tdx-guest looks them up.
func (g dirGetter) Get(rawURL string) (map[string][]string, []byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, fmt.Errorf("read offline collateral: bad URL %q: %w", rawURL, err)
	}
	switch {
	case strings.HasSuffix(u.Path, "/tdx/certification/v4/tcb"):
		return g.read(TCBInfoFile, TCBInfoChainFile, "Tcb-Info-Issuer-Chain")
	case strings.HasSuffix(u.Path, "/tdx/certification/v4/qe/identity"):
		return g.read(QEIdentityFile, QEIdentityChainFile, "Sgx-Enclave-Identity-Issuer-Chain")
	case strings.HasSuffix(u.Path, "/pckcrl"):
		return g.read(PCKCRLFile, PCKCRLChainFile, "Sgx-Pck-Crl-Issuer-Chain")
	case strings.HasSuffix(strings.ToLower(u.Path), ".der") || strings.HasSuffix(strings.ToLower(u.Path), ".crl"):
		return g.read(RootCRLFile, "", "")
	default:
		return nil, nil, fmt.Errorf("read offline collateral: no file in %s serves %s", g.dir, rawURL)
	}
}

func (g dirGetter) read(bodyFile, chainFile, header string) (map[string][]string, []byte, error) {
	body, err := os.ReadFile(filepath.Join(g.dir, bodyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("read offline collateral: %w", err)
	}
	if chainFile == "" {
		return nil, body, nil
	}
	chain, err := os.ReadFile(filepath.Join(g.dir, chainFile))
	if err != nil {
		return nil, nil, fmt.Errorf("read offline collateral: %w", err)
	}
	// PCS URL-encodes the PEM chain in the header; go-tdx-guest unescapes it.
	return map[string][]string{header: {url.QueryEscape(string(chain))}}, body, nil
}

// checkCollateralDir checks that the required files are present.
func checkCollateralDir(dir string) error {
	var missing []string
	for _, f := range []string{TCBInfoFile, TCBInfoChainFile, QEIdentityFile, QEIdentityChainFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				return err
			}
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("collateral directory %s lacks %s", dir, strings.Join(missing, ", "))
	}
	return nil
}
