package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"google.golang.org/protobuf/proto"
)

// compiled is one loaded policy: a prepared query per rule.
type compiled struct {
	source  string
	rules   map[string]rego.PreparedEvalQuery
	reasons rego.PreparedEvalQuery
}

// Engine decides agent requests with a loaded policy. It keeps the state
// the policy sees (images pulled, containers created) from the requests it
// observed succeed through UnaryServerInterceptor. It is safe for
// concurrent use.
type Engine struct {
	methods map[string]method
	policy  atomic.Pointer[compiled]
	state   *state
}

// Load compiles regoText, a Rego v1 module declaring package agent_policy,
// into an Engine with one prepared query per rule of Rules() plus
// "reasons". Rules the module does not define are compiled anyway and
// deny. It returns an errdefs.ErrInvalidArgument error carrying OPA's
// message (with line numbers) when the text does not parse or compile, or
// declares another package.
func Load(regoText string) (*Engine, error) {
	methods, err := agentMethods()
	if err != nil {
		return nil, err
	}
	p, err := compile(context.Background(), regoText)
	if err != nil {
		return nil, err
	}
	e := &Engine{methods: methods, state: newState()}
	e.policy.Store(p)
	return e, nil
}

// LoadDefault loads the built-in Default policy.
func LoadDefault() (*Engine, error) { return Load(Default) }

func compile(ctx context.Context, src string) (*compiled, error) {
	mod, err := ast.ParseModuleWithOpts("policy.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("parse agent policy (Rego v1): %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if got := mod.Package.Path.String(); got != "data."+Package {
		return nil, fmt.Errorf("agent policy declares package %s: want \"package %s\": %w", got, Package, errdefs.ErrInvalidArgument)
	}
	// One compiler for every query: the module is type-checked once.
	compiler := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)
	if compiler.Compile(map[string]*ast.Module{"policy.rego": mod}); compiler.Failed() {
		return nil, fmt.Errorf("compile agent policy: %v: %w", compiler.Errors, errdefs.ErrInvalidArgument)
	}
	prep := func(rule string) (rego.PreparedEvalQuery, error) {
		q, err := rego.New(
			rego.Query("data."+Package+"."+rule),
			rego.Compiler(compiler),
			rego.SetRegoVersion(ast.RegoV1),
		).PrepareForEval(ctx)
		if err != nil {
			return q, fmt.Errorf("prepare agent policy rule %s: %v: %w", rule, err, errdefs.ErrInvalidArgument)
		}
		return q, nil
	}
	c := &compiled{source: src, rules: make(map[string]rego.PreparedEvalQuery)}
	for _, r := range Rules() {
		if c.rules[r], err = prep(r); err != nil {
			return nil, err
		}
	}
	if c.reasons, err = prep(ruleReasons); err != nil {
		return nil, err
	}
	return c, nil
}

// Allow decides req, one of the Agent request messages (agent.proto), by
// the rule named after its message, e.g. ExecProcessRequest. method is the
// full ttrpc method name ("/coffer.agent.v1.Agent/ExecProcess") when known,
// or "", and must then name a method whose request type is req's. It
// returns nil when the rule is true, a *DeniedError (PermissionDenied) when
// it is false, undefined or fails to evaluate, and an
// errdefs.ErrInvalidArgument error when req cannot be turned into input
// (e.g. an oci_spec that is not OCI JSON: the agent would refuse it too).
func (e *Engine) Allow(ctx context.Context, method string, req proto.Message) error {
	_, err := e.allow(ctx, method, req)
	return err
}

// allow is Allow that also returns input.request, for state updates after
// the request succeeded.
func (e *Engine) allow(ctx context.Context, method string, req proto.Message) (ast.Value, error) {
	rule := string(req.ProtoReflect().Descriptor().Name())
	if method != "" {
		m, ok := e.methods[method]
		if !ok {
			return nil, &DeniedError{Request: rule, Rule: Package + "." + rule, Cause: fmt.Errorf("unknown agent method %s", method)}
		}
		if m.rule != rule {
			return nil, fmt.Errorf("policy check of %s: request is a %s, want a %s: %w", method, rule, m.rule, errdefs.ErrInvalidArgument)
		}
	}
	r, err := requestJSON(req)
	if err != nil {
		return nil, fmt.Errorf("policy check of %s: %w: %w", rule, err, errdefs.ErrInvalidArgument)
	}
	rv, err := ast.InterfaceToValue(r)
	if err != nil {
		return nil, &DeniedError{Request: rule, Rule: Package + "." + rule, Cause: fmt.Errorf("convert policy input: %w", err)}
	}
	return rv, e.decideValue(ctx, rule, rv)
}

// decide evaluates rule on input {request_type, request, state}.
func (e *Engine) decide(ctx context.Context, rule string, request map[string]any) error {
	rv, err := ast.InterfaceToValue(request)
	if err != nil {
		return &DeniedError{Request: rule, Rule: Package + "." + rule, Cause: fmt.Errorf("convert policy input: %w", err)}
	}
	return e.decideValue(ctx, rule, rv)
}

// decideValue is decide with input.request already an OPA value.
func (e *Engine) decideValue(ctx context.Context, rule string, request ast.Value) error {
	p := e.policy.Load()
	q, ok := p.rules[rule]
	if !ok {
		return &DeniedError{Request: rule, Rule: Package + "." + rule, Cause: fmt.Errorf("no rule %s is known to the engine", rule)}
	}
	in, err := e.input(rule, request)
	if err != nil {
		return &DeniedError{Request: rule, Rule: Package + "." + rule, Cause: err}
	}
	allowed, err := evalBool(ctx, q, in)
	if err == nil && allowed {
		return nil
	}
	d := &DeniedError{Request: rule, Rule: Package + "." + rule, Cause: err}
	d.Reasons = reasons(ctx, p.reasons, in)
	return d
}

func (e *Engine) input(rule string, request ast.Value) (ast.Value, error) {
	st, err := e.state.value()
	if err != nil {
		return nil, err
	}
	return ast.NewObject(
		ast.Item(ast.StringTerm("request_type"), ast.StringTerm(rule)),
		ast.Item(ast.StringTerm("request"), ast.NewTerm(request)),
		ast.Item(ast.StringTerm("state"), ast.NewTerm(st)),
	), nil
}

// evalBool runs q; an undefined result is false, a non-boolean an error.
func evalBool(ctx context.Context, q rego.PreparedEvalQuery, in ast.Value) (bool, error) {
	rs, err := q.Eval(ctx, rego.EvalParsedInput(in))
	if err != nil {
		return false, err
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return false, nil
	}
	b, ok := rs[0].Expressions[0].Value.(bool)
	if !ok {
		return false, fmt.Errorf("rule value is %T, want a boolean", rs[0].Expressions[0].Value)
	}
	return b, nil
}

// reasons evaluates the optional "reasons" set; evaluation problems yield
// none (the denial stands either way).
func reasons(ctx context.Context, q rego.PreparedEvalQuery, in ast.Value) []string {
	rs, err := q.Eval(ctx, rego.EvalParsedInput(in))
	if err != nil || len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil
	}
	raw, ok := rs[0].Expressions[0].Value.([]any)
	if !ok {
		return nil
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
	return out
}

// IsDenied reports whether err is (or wraps) a policy denial.
func IsDenied(err error) bool {
	var d *DeniedError
	return errors.As(err, &d)
}
