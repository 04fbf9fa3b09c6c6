// Package policy evaluates the KBS's two Rego policy layers in-process with
// OPA, each compiled once into a prepared query:
//
//   - the attestation policy turns verified evidence claims plus reference
//     values and init-data into an AR4SI trustworthiness vector (rule
//     "trust_claims", an object of claim name → value, as Trustee's EAR
//     policies produce: trustee attestation-service/src/ear_token/
//     ear_default_policy_cpu.rego);
//   - the resource policy decides per resource path from the token claims
//     (rule "allow", a boolean, as Trustee's resource policy: trustee
//     kbs/config/kubernetes/base/policy.rego).
//
// Both must be Rego v1 modules in package "policy". Either may define a
// set or array "reasons" of strings that explain a non-affirming vector or
// a denial; the KBS puts them into its problem responses.
//
// Input documents differ from Trustee's, which passes the resource path as
// data: here everything is in input (see AttestationInput and
// ResourceInput), so queries stay prepared and concurrent.
package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/cofferhq/coffer/kbs/ear"
)

// Package is the Rego package both policies must declare.
const Package = "policy"

// Rule names the layers require.
const (
	RuleTrustClaims = "trust_claims"
	RuleAllow       = "allow"
	RuleReasons     = "reasons"
)

// ErrInvalid is wrapped by every compile failure of an uploaded policy.
var ErrInvalid = errors.New("invalid policy")

// prepared is a compiled policy: one prepared query for its decision rule
// and one for "reasons", which is evaluated only when the decision is
// negative (the success path evaluates just what it needs).
type prepared struct {
	decision rego.PreparedEvalQuery
	reasons  rego.PreparedEvalQuery
}

func compile(ctx context.Context, layer, src string, required string) (*prepared, error) {
	mod, err := ast.ParseModuleWithOpts(layer+".rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("parse %s policy (Rego v1): %v: %w", layer, err, ErrInvalid)
	}
	if got := mod.Package.Path.String(); got != "data."+Package {
		return nil, fmt.Errorf("%s policy declares package %s: want \"package %s\": %w", layer, trimData(got), Package, ErrInvalid)
	}
	found := false
	for _, r := range mod.Rules {
		if r.Head.Ref().String() == required {
			found = true
			break
		}
	}
	if !found {
		return nil, fmt.Errorf("%s policy has no rule %q: %w", layer, required, ErrInvalid)
	}
	prep := func(rule string) (rego.PreparedEvalQuery, error) {
		return rego.New(
			rego.Query("data."+Package+"."+rule),
			rego.ParsedModule(mod),
			rego.SetRegoVersion(ast.RegoV1),
		).PrepareForEval(ctx)
	}
	p := &prepared{}
	if p.decision, err = prep(required); err != nil {
		return nil, fmt.Errorf("compile %s policy: %v: %w", layer, err, ErrInvalid)
	}
	if p.reasons, err = prep(RuleReasons); err != nil {
		return nil, fmt.Errorf("compile %s policy: %v: %w", layer, err, ErrInvalid)
	}
	return p, nil
}

func trimData(p string) string {
	if len(p) > 5 && p[:5] == "data." {
		return p[5:]
	}
	return p
}

// eval runs q on input and returns the rule's value, or ok false if it is
// undefined.
func eval(ctx context.Context, q rego.PreparedEvalQuery, layer string, input ast.Value) (v any, ok bool, err error) {
	rs, err := q.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil {
		return nil, false, fmt.Errorf("evaluate %s policy: %w", layer, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, false, nil
	}
	return rs[0].Expressions[0].Value, true, nil
}

// reasons evaluates the optional "reasons" rule: a set/array of strings.
func (p *prepared) reasonsFor(ctx context.Context, layer string, input ast.Value) ([]string, error) {
	v, ok, err := eval(ctx, p.reasons, layer, input)
	if err != nil || !ok {
		return nil, err
	}
	raw, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s policy rule %s is %T: want a set of strings", layer, RuleReasons, v)
	}
	out := make([]string, 0, len(raw))
	for _, r := range raw {
		if s, ok := r.(string); ok {
			out = append(out, s)
		} else {
			b, _ := json.Marshal(r)
			out = append(out, string(b))
		}
	}
	sort.Strings(out)
	return out, nil
}

func toValue(layer string, m map[string]any) (ast.Value, error) {
	v, err := ast.InterfaceToValue(m)
	if err != nil {
		return nil, fmt.Errorf("convert %s policy input: %w", layer, err)
	}
	return v, nil
}

// Attestation is a compiled attestation policy. It is safe for concurrent
// use.
type Attestation struct{ p *prepared }

// CompileAttestation compiles src, which must be a Rego v1 module in
// package policy defining trust_claims. Errors wrap ErrInvalid and carry
// OPA's message with line numbers.
func CompileAttestation(ctx context.Context, src string) (*Attestation, error) {
	p, err := compile(ctx, "attestation", src, RuleTrustClaims)
	if err != nil {
		return nil, err
	}
	return &Attestation{p: p}, nil
}

// Appraisal is the attestation policy's result.
type Appraisal struct {
	// TrustVector is trust_claims, validated.
	TrustVector ear.TrustVector
	// Reasons are the policy's "reasons", sorted.
	Reasons []string
}

// Evaluate runs the policy on input. It fails if trust_claims is undefined
// or not an object of AR4SI claim names to integers in -128..127. Reasons
// are evaluated only when the vector is not affirming.
func (a *Attestation) Evaluate(ctx context.Context, input *AttestationInput) (*Appraisal, error) {
	in := input.value()
	raw, ok, err := eval(ctx, a.p.decision, "attestation", in)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("attestation policy rule %s is undefined for this input: give it a default", RuleTrustClaims)
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("attestation policy rule %s is %T: want an object of claim name to integer", RuleTrustClaims, raw)
	}
	tv := ear.TrustVector{}
	for name, v := range obj {
		n, ok := v.(json.Number)
		if !ok {
			return nil, fmt.Errorf("attestation policy %s[%q] is %T: want an integer", RuleTrustClaims, name, v)
		}
		i, err := n.Int64()
		if err != nil {
			return nil, fmt.Errorf("attestation policy %s[%q] is %s: want an integer", RuleTrustClaims, name, n)
		}
		if i < -128 || i > 127 {
			return nil, fmt.Errorf("attestation policy %s[%q] is %d: want -128..127", RuleTrustClaims, name, i)
		}
		tv[name] = int(i)
	}
	if err := tv.Validate(); err != nil {
		return nil, fmt.Errorf("attestation policy %s: %w", RuleTrustClaims, err)
	}
	ap := &Appraisal{TrustVector: tv}
	if tv.Status() != ear.StatusAffirming {
		if ap.Reasons, err = a.p.reasonsFor(ctx, "attestation", in); err != nil {
			return nil, err
		}
	}
	return ap, nil
}

// Resource is a compiled resource policy. It is safe for concurrent use.
type Resource struct{ p *prepared }

// CompileResource compiles src, which must be a Rego v1 module in package
// policy defining allow.
func CompileResource(ctx context.Context, src string) (*Resource, error) {
	p, err := compile(ctx, "resource", src, RuleAllow)
	if err != nil {
		return nil, err
	}
	return &Resource{p: p}, nil
}

// Decision is the resource policy's result.
type Decision struct {
	// Allow is the value of rule allow (false if undefined).
	Allow bool
	// Reasons are the policy's "reasons", sorted.
	Reasons []string
}

// Evaluate runs the policy on input. It fails if allow is not a boolean.
// Reasons are evaluated only on denial.
func (r *Resource) Evaluate(ctx context.Context, input *ResourceInput) (*Decision, error) {
	in, err := toValue("resource", input.value())
	if err != nil {
		return nil, err
	}
	raw, ok, err := eval(ctx, r.p.decision, "resource", in)
	if err != nil {
		return nil, err
	}
	d := &Decision{}
	if ok {
		b, isBool := raw.(bool)
		if !isBool {
			return nil, fmt.Errorf("resource policy rule %s is %T: want a boolean", RuleAllow, raw)
		}
		d.Allow = b
	}
	if !d.Allow {
		if d.Reasons, err = r.p.reasonsFor(ctx, "resource", in); err != nil {
			return nil, err
		}
	}
	return d, nil
}
