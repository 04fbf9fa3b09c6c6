package policy

import (
	"sync"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/open-policy-agent/opa/v1/ast"
)

// containerState is what the engine saw succeed for one container ID, as
// OPA terms converted once, when the request succeeded.
type containerState struct {
	image   *ast.Term // from PullImage, nil before
	ociSpec *ast.Term // canonical spec object from CreateContainer, nil before
}

// state is the policy's input.state, kept across requests. The ast value
// is rebuilt only after a change, and then only its top levels: each
// container's image and spec terms are shared, never converted again.
type state struct {
	mu         sync.Mutex
	containers map[string]*containerState
	cached     ast.Value // nil after a change
}

func newState() *state {
	return &state{containers: make(map[string]*containerState)}
}

// value returns input.state as an OPA value: {"containers": {<id>:
// {"image": ..., "created": bool, "oci_spec": ...}}}.
func (s *state) value() (ast.Value, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cached != nil {
		return s.cached, nil
	}
	cs := make([][2]*ast.Term, 0, len(s.containers))
	for id, c := range s.containers {
		image, spec := ast.NullTerm(), ast.NullTerm()
		if c.image != nil {
			image = c.image
		}
		if c.ociSpec != nil {
			spec = c.ociSpec
		}
		cs = append(cs, ast.Item(ast.StringTerm(id), ast.ObjectTerm(
			ast.Item(ast.StringTerm("image"), image),
			ast.Item(ast.StringTerm("created"), ast.BooleanTerm(c.ociSpec != nil)),
			ast.Item(ast.StringTerm("oci_spec"), spec),
		)))
	}
	s.cached = ast.NewObject(ast.Item(ast.StringTerm("containers"), ast.ObjectTerm(cs...)))
	return s.cached, nil
}

func (s *state) get(id string) *containerState {
	c := s.containers[id]
	if c == nil {
		c = &containerState{}
		s.containers[id] = c
	}
	return c
}

// pulled records a successful PullImage.
func (s *state) pulled(req *agent.PullImageRequest, resp *agent.PullImageResponse) {
	img, err := pulledImage(req)
	if err != nil { // the request passed the policy, so it parsed before
		return
	}
	cfg := parseImageConfig(resp.GetImageConfig())
	v, err := ast.InterfaceToValue(map[string]any{
		"name":            img.Name,
		"reference":       req.GetReference(),
		"digest":          img.Digest,
		"manifest_digest": resp.GetManifestDigest(),
		"config": map[string]any{
			"env":         stringList(cfg.Env),
			"entrypoint":  stringList(cfg.Entrypoint),
			"cmd":         stringList(cfg.Cmd),
			"working_dir": cfg.WorkingDir,
			"user":        cfg.User,
		},
	})
	if err != nil { // strings and string lists always convert
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.get(req.GetContainerId()).image = ast.NewTerm(v)
	s.cached = nil
}

// created records a successful CreateContainer with its canonical spec
// (the oci_spec term of the request the policy admitted; nil when it had
// none).
func (s *state) created(id string, spec *ast.Term) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.get(id).ociSpec = spec
	s.cached = nil
}

// removed forgets a container after a successful RemoveContainer.
func (s *state) removed(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.containers, id)
	s.cached = nil
}

// stringList turns a nil slice into an empty one so the policy sees [] and
// not null.
func stringList(xs []string) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}
