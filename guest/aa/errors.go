package aa

import (
	"fmt"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// UnreachableError means the KBS could not be reached (transport error or
// HTTP 5xx) on any attempt before the retry budget or deadline ran out.
// It matches errdefs.ErrUnavailable.
type UnreachableError struct {
	// URL is the KBS base URL.
	URL string
	// Attempts is the number of attempts made.
	Attempts int
	// Elapsed is the time spent over all attempts.
	Elapsed time.Duration
	// Err is the last attempt's cause.
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("KBS unreachable at %s after %d attempts in %s: %v: check that the KBS runs and that the VM's network forwards reach it",
		e.URL, e.Attempts, e.Elapsed.Round(time.Millisecond), e.Err)
}

// Unwrap returns the cause and errdefs.ErrUnavailable.
func (e *UnreachableError) Unwrap() []error { return []error{e.Err, errdefs.ErrUnavailable} }

// EvidenceRejectedError means the KBS found the evidence invalid (problem
// type evidence-invalid): bad signature, untrusted root, REPORT_DATA or
// HOST_DATA mismatch, TCB below the floor. Final, never retried. It
// matches errdefs.ErrPermissionDenied.
type EvidenceRejectedError struct {
	// Check names the failed check (attestation.Check*), e.g. "host_data".
	Check string
	// Detail is the KBS's explanation.
	Detail string
	// Err is the *client.ResponseError.
	Err error
}

func (e *EvidenceRejectedError) Error() string {
	return fmt.Sprintf("evidence rejected by KBS: check %q: %s", e.Check, e.Detail)
}

// Unwrap returns the KBS response error and errdefs.ErrPermissionDenied.
func (e *EvidenceRejectedError) Unwrap() []error { return []error{e.Err, errdefs.ErrPermissionDenied} }

// DeniedError means the KBS attestation policy refused valid evidence
// (problem type policy-denied), e.g. a measurement with no reference value.
// Final. It matches errdefs.ErrPermissionDenied.
type DeniedError struct {
	// Rule is the Rego rule that decided; Policy the policy layer.
	Rule, Policy string
	// Detail and Reasons are the KBS's explanation.
	Detail  string
	Reasons []string
	// Err is the *client.ResponseError.
	Err error
}

func (e *DeniedError) Error() string {
	msg := fmt.Sprintf("attestation denied by KBS policy: rule %q: %s", e.Rule, e.Detail)
	if len(e.Reasons) > 0 {
		msg += " (" + strings.Join(e.Reasons, "; ") + ")"
	}
	return msg
}

// Unwrap returns the KBS response error and errdefs.ErrPermissionDenied.
func (e *DeniedError) Unwrap() []error { return []error{e.Err, errdefs.ErrPermissionDenied} }

// ResourceDeniedError means the KBS resource policy refused a resource to
// this attested guest. It matches errdefs.ErrPermissionDenied.
type ResourceDeniedError struct {
	// URI is the requested resource URI; Rule the deciding Rego rule.
	URI, Rule string
	// Detail is the KBS's explanation.
	Detail string
	// Err is the *client.ResponseError.
	Err error
}

func (e *ResourceDeniedError) Error() string {
	return fmt.Sprintf("resource %s denied by %s: %s", e.URI, e.Rule, e.Detail)
}

// Unwrap returns the KBS response error and errdefs.ErrPermissionDenied.
func (e *ResourceDeniedError) Unwrap() []error { return []error{e.Err, errdefs.ErrPermissionDenied} }

// ResourceNotFoundError means the KBS has no such resource. It matches
// errdefs.ErrNotFound.
type ResourceNotFoundError struct {
	// URI is the requested resource URI.
	URI string
	// Err is the *client.ResponseError.
	Err error
}

func (e *ResourceNotFoundError) Error() string {
	return fmt.Sprintf("resource %s not found on the KBS: store it with `ccctl kbs resource set` or fix the URI", e.URI)
}

// Unwrap returns the KBS response error and errdefs.ErrNotFound.
func (e *ResourceNotFoundError) Unwrap() []error { return []error{e.Err, errdefs.ErrNotFound} }
