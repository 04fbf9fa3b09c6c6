package image

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// DigestMismatchError reports content whose SHA-256 differs from the digest
// that names it. It matches errdefs.ErrDataLoss with errors.Is.
type DigestMismatchError struct {
	// What names the content: "layer sha256:…", "manifest", "index",
	// "config sha256:…".
	What string
	// Kind is "digest" (compressed blob or manifest), "diff_id"
	// (uncompressed layer tar, per the image config's rootfs.diff_ids),
	// "plaintext digest" (the decrypted, still compressed blob of an
	// encrypted layer, per its wrapped key options) or "size" (bytes).
	Kind string
	// Want is the expected value: "sha256:<64 hex>", or a byte count.
	Want string
	// Got is the value computed from what the registry served.
	Got string
}

// Error implements error.
func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("%s: %s mismatch: expected %s, actual %s: refusing content that differs from what the image names (altered in transit or at the registry, or a malformed image)",
		e.What, e.Kind, e.Want, e.Got)
}

// Unwrap makes errors.Is(err, errdefs.ErrDataLoss) true.
func (e *DigestMismatchError) Unwrap() error { return errdefs.ErrDataLoss }

// UnreachableError reports that the TCP connection to a registry failed. It
// matches errdefs.ErrUnavailable with errors.Is, and the dial error too.
type UnreachableError struct {
	Registry string // "host:port" as named in the reference
	Dialed   string // "ip:port" actually dialed (after RegistryConfig.Endpoints)
	Err      error  // the dial error
}

// Error implements error, e.g. "registry 127.0.0.1:5000 (dialed
// 10.0.2.100:5000) unreachable: connection refused".
func (e *UnreachableError) Error() string {
	return fmt.Sprintf("registry %s unreachable: %s", registryName(e.Registry, e.Dialed), rootCause(e.Err))
}

// Unwrap returns errdefs.ErrUnavailable and the dial error.
func (e *UnreachableError) Unwrap() []error { return []error{errdefs.ErrUnavailable, e.Err} }

// Temporary reports whether the dial error is temporary (a timeout), so that
// go-containerregistry's retry logic still retries it.
func (e *UnreachableError) Temporary() bool {
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout()
}

// TLSError reports a failed TLS handshake with a registry. It matches
// errdefs.ErrUnavailable with errors.Is, and the handshake error too.
type TLSError struct {
	Registry string // "host:port" as named in the reference; the TLS server name is its host
	Dialed   string // "ip:port" actually dialed
	Err      error  // the handshake error
}

// Error implements error and says what to change in RegistryConfig.
func (e *TLSError) Error() string {
	return fmt.Sprintf("registry %s: TLS handshake failed: %v: %s", registryName(e.Registry, e.Dialed), e.Err, e.hint())
}

// hint says what to change, by the kind of handshake failure.
func (e *TLSError) hint() string {
	insecure := fmt.Sprintf("if the registry serves plain HTTP, list %q in RegistryConfig.Insecure", e.Registry)
	ca := "if its certificate is from a private CA, pass that CA in RegistryConfig.CAPEM"
	var rh tls.RecordHeaderError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	switch {
	case errors.As(e.Err, &rh):
		return "the server did not answer with TLS: " + insecure
	case errors.As(e.Err, &ua):
		return "the certificate chain is not trusted: " + ca
	case errors.As(e.Err, &hn):
		return "the certificate does not name the registry host: reference the registry by a name in its certificate (RegistryConfig.Endpoints can still redirect the dial)"
	default:
		return insecure + "; " + ca
	}
}

// Unwrap returns errdefs.ErrUnavailable and the handshake error.
func (e *TLSError) Unwrap() []error { return []error{errdefs.ErrUnavailable, e.Err} }

// registryName is "reg" or "reg (dialed addr)" when the dial was redirected.
func registryName(reg, dialed string) string {
	if dialed == "" || dialed == reg {
		return reg
	}
	return fmt.Sprintf("%s (dialed %s)", reg, dialed)
}

// rootCause renders the innermost meaningful part of a dial error:
// "connection refused" rather than "dial tcp 10.0.2.100:5000: connect:
// connection refused".
func rootCause(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

// registryError is an error response from a registry, rendered as the
// registry's own "CODE: message" diagnostics and classed by HTTP status.
type registryError struct {
	msg   string
	class error
	err   *transport.Error
}

func (e *registryError) Error() string   { return e.msg }
func (e *registryError) Unwrap() []error { return []error{e.class, e.err} }

// explain turns an error from go-containerregistry into one that keeps the
// registry's message (for error responses) or names the registry and the
// dialed address (for connection failures). Errors it does not recognise
// are returned unchanged.
func (t *registryTransport) explain(err error) error {
	if err == nil {
		return nil
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return &registryError{msg: diagnostics(terr), class: statusClass(terr.StatusCode), err: terr}
	}
	var ue *UnreachableError
	if errors.As(err, &ue) {
		return ue
	}
	var te *TLSError
	if errors.As(err, &te) {
		return te
	}
	if ce := t.firstConnErr(); ce != nil {
		return ce
	}
	return err
}

// diagnostics renders a registry error response as "CODE: message[;
// detail]" per diagnostic (OCI distribution spec, error codes), or the HTTP
// status when the body carried none.
func diagnostics(e *transport.Error) string {
	if len(e.Errors) == 0 {
		return fmt.Sprintf("HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	parts := make([]string, 0, len(e.Errors))
	for _, d := range e.Errors {
		parts = append(parts, d.String())
	}
	return strings.Join(parts, "; ")
}

// statusClass maps an HTTP status to an errdefs class.
func statusClass(status int) error {
	switch {
	case status == http.StatusNotFound:
		return errdefs.ErrNotFound
	case status == http.StatusUnauthorized:
		return errdefs.ErrUnauthenticated
	case status == http.StatusForbidden:
		return errdefs.ErrPermissionDenied
	case status == http.StatusTooManyRequests:
		return errdefs.ErrResourceExhausted
	case status >= 500:
		return errdefs.ErrUnavailable
	default:
		return errdefs.ErrUnknown
	}
}

// invalidArgument classes err as errdefs.ErrInvalidArgument without
// changing its message.
func invalidArgument(err error) error { return classed{err, errdefs.ErrInvalidArgument} }

// classed is an error with an errdefs class that does not show in its text.
type classed struct{ err, class error }

func (c classed) Error() string   { return c.err.Error() }
func (c classed) Unwrap() []error { return []error{c.class, c.err} }
