package policy

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Package is the Rego package an agent policy must declare.
const Package = "agent_policy"

// maxReasons bounds the reasons Error prints, so one denial stays one
// readable line.
const maxReasons = 8

// DeniedError is a request the agent policy refused. It is
// errdefs.ErrPermissionDenied (errors.Is) and carries gRPC status
// PermissionDenied (GRPCStatus), so ttrpc sends it to the shim as
// PermissionDenied and errgrpc.ToNative maps it back, message unchanged.
type DeniedError struct {
	// Request is the request message name, e.g. "ExecProcessRequest".
	Request string
	// Rule is the Rego rule that decided, e.g. "agent_policy.ExecProcessRequest".
	Rule string
	// Reasons are the policy's "reasons" for this input, sorted; often empty.
	Reasons []string
	// Cause is set when the rule could not be evaluated (an evaluation
	// error or a non-boolean value); the request is denied then too.
	Cause error
}

// Error renders "ExecProcessRequest is blocked by agent policy (rule
// agent_policy.ExecProcessRequest)" followed by the reasons or the cause.
func (e *DeniedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s is blocked by agent policy (rule %s)", e.Request, e.Rule)
	if e.Cause != nil {
		fmt.Fprintf(&b, ": rule failed to evaluate: %v", e.Cause)
	}
	if len(e.Reasons) > 0 {
		b.WriteString(": ")
		rs := e.Reasons
		if len(rs) > maxReasons {
			rs = rs[:maxReasons]
		}
		b.WriteString(strings.Join(rs, "; "))
		if n := len(e.Reasons) - len(rs); n > 0 {
			fmt.Fprintf(&b, "; and %d more", n)
		}
	}
	return b.String()
}

// Unwrap makes errors.Is(err, errdefs.ErrPermissionDenied) hold.
func (e *DeniedError) Unwrap() error { return errdefs.ErrPermissionDenied }

// GRPCStatus returns codes.PermissionDenied with Error() as the message.
func (e *DeniedError) GRPCStatus() *status.Status {
	return status.New(codes.PermissionDenied, e.Error())
}
