package adminclient

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// HTTPClientOptions choose how the KBS's TLS certificate is authenticated.
type HTTPClientOptions struct {
	// PinSHA256 is the expected SHA-256 of the server certificate (hex,
	// colons allowed), as cc-kbs prints at start. It replaces CA
	// verification.
	PinSHA256 string
	// CACert is a PEM file of CA certificates to trust instead of the
	// system roots.
	CACert string
	// Timeout bounds each request; 0 means 30 s.
	Timeout time.Duration
}

// NewHTTPClient returns an http.Client authenticating the KBS by pin, by
// CACert, or by the system roots.
func NewHTTPClient(o HTTPClientOptions) (*http.Client, error) {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	tcfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case o.PinSHA256 != "":
		want, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(o.PinSHA256), ":", ""))
		if err != nil || len(want) != sha256.Size {
			return nil, fmt.Errorf("certificate pin %q: want the 64 hex characters cc-kbs prints at start", o.PinSHA256)
		}
		// The pin replaces chain and name verification: only the exact
		// certificate is accepted.
		tcfg.InsecureSkipVerify = true
		tcfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("KBS sent no certificate")
			}
			got := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare(got[:], want) != 1 {
				return fmt.Errorf("KBS certificate SHA-256 is %s, pinned %s: wrong server or rotated certificate", hex.EncodeToString(got[:]), hex.EncodeToString(want))
			}
			return nil
		}
	case o.CACert != "":
		b, err := os.ReadFile(o.CACert)
		if err != nil {
			return nil, fmt.Errorf("read CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("CA certificate %s: no PEM certificates found", o.CACert)
		}
		tcfg.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tcfg
	return &http.Client{Transport: tr, Timeout: o.Timeout}, nil
}
