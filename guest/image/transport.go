package image

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RegistryConfig is how the guest reaches registries. Nothing else is
// consulted: no /etc/ssl, no resolv.conf, no proxy environment variables, no
// credentials (pulls are anonymous; token auth challenges are answered
// anonymously).
type RegistryConfig struct {
	// Insecure lists registry hosts, "host" or "host:port" exactly as they
	// appear in image references (or in redirects), that are reached over
	// plain HTTP. Every other host is reached over TLS: a plain-HTTP URL
	// for an unlisted host is upgraded to HTTPS, so go-containerregistry's
	// "localhost and RFC 1918 addresses are plain HTTP" heuristic never
	// applies. An entry without a port matches that host on any port.
	Insecure []string
	// CAPEM holds extra PEM-encoded CA certificates (each element may hold
	// several CERTIFICATE blocks) trusted for TLS in addition to the system
	// roots (which are empty in a guest without /etc/ssl).
	CAPEM [][]byte
	// Endpoints maps a registry address as named in the reference,
	// "host:port" (the port being 443 or 80 when the reference names
	// none), to the "ip:port" actually dialed, e.g. a QEMU guestfwd
	// address. A key without a port matches that host on any port. Only
	// the TCP dial is redirected: the TLS server name (SNI and certificate
	// verification) and the HTTP Host header keep the original name.
	// Addresses not listed are dialed as they are, which needs DNS for
	// names.
	Endpoints map[string]string
	// Dial opens the TCP connection to the address chosen by Endpoints
	// (which may be a forward address, see transport/forward); nil means
	// a plain net.Dialer. It does not change the TLS server name either.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// dialTimeout bounds one TCP connect or TLS handshake.
const dialTimeout = 30 * time.Second

// registryTransport is the http.RoundTripper handed to go-containerregistry
// for one Pull. It enforces the HTTP/HTTPS choice of RegistryConfig,
// redirects dials per Endpoints, and remembers the first connection-level
// failure, because go-containerregistry sometimes joins errors in a type
// that does not unwrap (its parallel https/http ping).
type registryTransport struct {
	cfg    RegistryConfig
	tlsCfg *tls.Config
	base   *http.Transport
	dialer net.Dialer

	mu      sync.Mutex
	connErr error // first *UnreachableError or *TLSError seen
}

// newRegistryTransport builds the transport for cfg. It returns an
// errdefs.ErrInvalidArgument-classed error when a CAPEM entry holds no
// parsable certificate.
func newRegistryTransport(cfg RegistryConfig) (*registryTransport, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for i, p := range cfg.CAPEM {
		if err := addPEMCerts(pool, p); err != nil {
			return nil, fmt.Errorf("load RegistryConfig.CAPEM[%d]: %w", i, err)
		}
	}
	t := &registryTransport{
		cfg:    cfg,
		tlsCfg: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
		dialer: net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
	}
	t.base = &http.Transport{
		Proxy:                 nil, // the guest has no proxy; never read the environment
		DialContext:           t.dial,
		DialTLSContext:        t.dialTLS,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return t, nil
}

// addPEMCerts adds every CERTIFICATE block of p to pool, failing when there
// is none or one does not parse.
func addPEMCerts(pool *x509.CertPool, p []byte) error {
	n := 0
	for {
		var b *pem.Block
		b, p = pem.Decode(p)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("parse certificate %d: %w", n+1, invalidArgument(err))
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return invalidArgument(fmt.Errorf("no PEM CERTIFICATE block found: pass PEM text, not DER"))
	}
	return nil
}

// RoundTrip implements http.RoundTripper: it forces the scheme chosen by
// RegistryConfig.Insecure for req's host and forwards to the HTTP transport.
func (t *registryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	want := "https"
	if t.insecure(req.URL.Host) {
		want = "http"
	}
	if req.URL.Scheme != want {
		r := req.Clone(req.Context())
		r.URL.Scheme = want
		req = r
	}
	return t.base.RoundTrip(req)
}

// CloseIdleConnections closes idle keep-alive connections at the end of a
// Pull.
func (t *registryTransport) CloseIdleConnections() { t.base.CloseIdleConnections() }

// insecure reports whether host ("host" or "host:port") is listed in
// RegistryConfig.Insecure.
func (t *registryTransport) insecure(host string) bool { return listed(t.cfg.Insecure, host) }

// listed reports whether host ("host" or "host:port") is in list, whose
// entries are "host:port" (that port only) or "host" (any port).
func listed(list []string, host string) bool {
	if slices.Contains(list, host) {
		return true
	}
	h, _, err := net.SplitHostPort(host)
	return err == nil && slices.Contains(list, h)
}

// endpoint returns the address to dial for addr ("host:port").
func (t *registryTransport) endpoint(addr string) string { return Endpoint(t.cfg.Endpoints, addr) }

// Endpoint returns the address to dial for addr ("host:port") under the
// dial rewrites endpoints (RegistryConfig.Endpoints: "host:port" or "host"
// to "ip:port"), or addr itself when none applies. The KBS client uses the
// same rewrites to reach a host address through its forwarded guest
// address.
func Endpoint(endpoints map[string]string, addr string) string {
	if e, ok := endpoints[addr]; ok {
		return e
	}
	if h, _, err := net.SplitHostPort(addr); err == nil {
		if e, ok := endpoints[h]; ok {
			return e
		}
	}
	return addr
}

// dial connects to addr, or to its Endpoints replacement, and returns an
// *UnreachableError naming both on failure.
func (t *registryTransport) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	dialed := t.endpoint(addr)
	dial := t.dialer.DialContext
	if t.cfg.Dial != nil {
		dial = t.cfg.Dial
	}
	c, err := dial(ctx, network, dialed)
	if err != nil {
		return nil, t.record(&UnreachableError{Registry: addr, Dialed: dialed, Err: err})
	}
	return c, nil
}

// dialTLS dials like dial and runs the TLS handshake with the server name of
// addr (not of the dialed endpoint); it returns a *TLSError on handshake
// failure.
func (t *registryTransport) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := t.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	cfg := t.tlsCfg.Clone()
	cfg.ServerName = host
	tc := tls.Client(c, cfg)
	hctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		return nil, t.record(&TLSError{Registry: addr, Dialed: t.endpoint(addr), Err: err})
	}
	return tc, nil
}

// record remembers the first connection-level error and returns err.
func (t *registryTransport) record(err error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.connErr == nil {
		t.connErr = err
	}
	return err
}

// forgetConnErr clears the remembered connection error; call it before each
// registry operation so that a failure retried away earlier is not blamed
// for a later, unrelated error.
func (t *registryTransport) forgetConnErr() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.connErr = nil
}

// firstConnErr returns the first connection-level error of this transport,
// or nil.
func (t *registryTransport) firstConnErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.connErr
}

// RemoteOptions returns go-containerregistry options that reach registry
// ("host[:port]") exactly as Pull does under reg: its transport (Insecure
// hosts, CAPEM, Endpoints) and anonymous auth, plus name.Insecure when
// registry is listed in reg.Insecure. The signature check of the image
// security policy fetches with them. It fails if a CAPEM does not parse.
func RemoteOptions(reg RegistryConfig, registry string) ([]remote.Option, []name.Option, error) {
	t, err := newRegistryTransport(reg)
	if err != nil {
		return nil, nil, err
	}
	var no []name.Option
	if listed(reg.Insecure, registry) {
		no = append(no, name.Insecure)
	}
	return []remote.Option{remote.WithTransport(t), remote.WithAuth(authn.Anonymous)}, no, nil
}
