package policy

import (
	"context"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"github.com/open-policy-agent/opa/v1/ast"
)

// UnaryServerInterceptor returns the ttrpc interceptor that puts every
// Agent RPC through the policy: it decodes the request for
// info.FullMethod (a table built from agent.proto's descriptor), calls
// Allow, and calls the method only when allowed. A denial reaches the
// host as gRPC PermissionDenied, "ExecProcessRequest is blocked by agent
// policy (rule agent_policy.ExecProcessRequest)"; an undecodable request
// as InvalidArgument; a method not in agent.proto as PermissionDenied. After
// a PullImage, CreateContainer or RemoveContainer (whole container)
// succeeds it updates the state the policy sees. Install it with
// ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(e.UnaryServerInterceptor())).
func (e *Engine) UnaryServerInterceptor() ttrpc.UnaryServerInterceptor {
	return func(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
		meth, ok := e.methods[info.FullMethod]
		if !ok {
			return nil, &DeniedError{Request: info.FullMethod, Rule: Package, Cause: errUnknownMethod(info.FullMethod)}
		}
		req := meth.req.New().Interface()
		if err := unmarshal(req); err != nil {
			return nil, err
		}
		in, err := e.allow(ctx, info.FullMethod, req)
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		resp, err := m(ctx, unmarshal)
		if err != nil {
			return resp, err
		}
		e.observe(req, resp, in)
		return resp, nil
	}
}

// observe updates the state after a request succeeded.
func (e *Engine) observe(req, resp any, in ast.Value) {
	switch r := req.(type) {
	case *agent.PullImageRequest:
		if pr, ok := resp.(*agent.PullImageResponse); ok {
			e.state.pulled(r, pr)
		}
	case *agent.CreateContainerRequest:
		var spec *ast.Term
		if o, ok := in.(ast.Object); ok {
			if t := o.Get(ast.StringTerm("oci_spec")); t != nil {
				if _, isObj := t.Value.(ast.Object); isObj {
					spec = t
				}
			}
		}
		e.state.created(r.GetContainerId(), spec)
	case *agent.RemoveContainerRequest:
		if r.GetExecId() == "" {
			e.state.removed(r.GetContainerId())
		}
	}
}

type unknownMethodError string

func (m unknownMethodError) Error() string {
	return "method " + string(m) + " is not in agent.proto's Agent service"
}

func errUnknownMethod(m string) error { return unknownMethodError(m) }
