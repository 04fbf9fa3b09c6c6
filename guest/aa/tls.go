package aa

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/containerd/errdefs"
)

// pinnedHTTPClient returns an HTTP client whose TLS trusts exactly the PEM
// certificate certPEM: the server's leaf must be that certificate, or be
// issued by it (when it is a CA). The host name is not checked: the pin,
// not the name, identifies the KBS (a guest reaches it at a forwarded
// address such as 10.0.2.100 that no certificate names). now is the clock
// for validity checks.
func pinnedHTTPClient(certPEM string, now func() time.Time) (*http.Client, error) {
	blk, _ := pem.Decode([]byte(certPEM))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("parse KBS certificate: no PEM CERTIFICATE block: set the KBS cert (aa.toml [token_configs.kbs] cert) to the KBS's PEM certificate")
	}
	pinned, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse KBS certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(pinned)
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("KBS presented no TLS certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return fmt.Errorf("parse KBS TLS certificate %d: %w", i, err)
			}
			certs[i] = c
		}
		leaf, t := certs[0], now()
		if leaf.Equal(pinned) {
			if t.Before(leaf.NotBefore) || t.After(leaf.NotAfter) {
				return &PinError{Msg: fmt.Sprintf("pinned KBS certificate is valid from %s to %s, not at %s: renew the KBS certificate (or fix the guest clock)", leaf.NotBefore, leaf.NotAfter, t)}
			}
			return nil
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: t, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			fp := sha256.Sum256(leaf.Raw)
			return &PinError{Msg: fmt.Sprintf("KBS TLS certificate %q (sha256 %s) is neither the pinned certificate %q nor issued by it: %v: update the KBS cert in the init-data",
				leaf.Subject, hex.EncodeToString(fp[:]), pinned.Subject, err)}
		}
		return nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is done in VerifyPeerCertificate against the pin.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verify,
	}
	return &http.Client{Transport: tr}, nil
}

// PinError means the KBS's TLS certificate did not match the pinned one.
// It is final (never retried) and matches errdefs.ErrPermissionDenied.
type PinError struct {
	// Msg names the certificate found and the pin.
	Msg string
}

func (e *PinError) Error() string { return e.Msg }

// Unwrap returns errdefs.ErrPermissionDenied.
func (e *PinError) Unwrap() error { return errdefs.ErrPermissionDenied }
