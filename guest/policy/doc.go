// Package policy is cc-agent's agent policy engine: it decides, inside the
// confidential VM, every request the untrusted host sends to the agent
// (api/agent/v1) with a Rego policy evaluated in-process by OPA
// (github.com/open-policy-agent/opa/v1, Rego v1), one prepared query per
// rule, compiled once at Load.
//
// The policy is a Rego module in package agent_policy with one boolean rule
// per request, named after the request message (Kata Containers'
// agent-policy convention): ExecProcess is decided by ExecProcessRequest.
// Stdio streams are decided by the pseudo-requests ReadStreamRequest
// (stdout, stderr) and WriteStreamRequest (stdin), policy replacement by
// SetPolicyRequest. A rule that is false, undefined or not a boolean denies.
// An optional set rule "reasons" explains a denial.
//
// The input document is
//
//	{"request_type": "<Rule>", "request": {...}, "state": {"containers": {...}}}
//
// where request is the protojson encoding of the request (proto field
// names, unpopulated fields present) with CreateContainerRequest.oci_spec
// and ExecProcessRequest.process replaced by their JSON objects after a
// round trip through the OCI runtime-spec Go types, so that the policy sees
// exactly what the agent will use (no duplicate or differently-cased keys).
// state is what Engine saw succeed: per container the image the guest
// pulled (PullImage request and response) and the spec it created. See
// configs/policy/default.rego and docs/policy.md.
//
// The built-in default (Default, the file default.rego of this directory,
// which configs/policy/default.rego mirrors byte for byte, checked by a
// test) allows the pod lifecycle and logs and denies exec, stdin, file copy
// and policy replacement. The policy comes from measured init-data
// (data["policy.rego"]); SetPolicy accepts a replacement only when the
// current policy allows SetPolicyRequest and the new text's digest equals
// the init-data policy's.
//
// Wiring: cc-agent serves ttrpc with
// ttrpc.WithUnaryServerInterceptor(engine.UnaryServerInterceptor()) and asks
// AllowStream before attaching a stdio stream.
package policy
