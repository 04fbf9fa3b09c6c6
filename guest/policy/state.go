package policy

import (
	"fmt"
	"sync"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/open-policy-agent/opa/v1/ast"
)

// containerState is what the engine saw succeed for one container ID.
type containerState struct {
	image   map[string]any // from PullImage, nil before
	ociSpec map[string]any // canonical spec from CreateContainer, nil before
}

// state is the policy's input.state, kept across requests. The ast value
// is rebuilt only after a change, so requests that change nothing pay
// nothing for it.
type state struct {
	mu         sync.Mutex
	containers map[string]*containerState
	cached     ast.Value // nil after a change
}

func newState() *state {
	return &state{containers: make(map[string]*containerState)}
}

// value returns input.state as an OPA value.
func (s *state) value() (ast.Value, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cached != nil {
		return s.cached, nil
	}
	cs := make(map[string]any, len(s.containers))
	for id, c := range s.containers {
		e := map[string]any{"image": nil, "created": c.ociSpec != nil, "oci_spec": nil}
		if c.image != nil {
			e["image"] = c.image
		}
		if c.ociSpec != nil {
			e["oci_spec"] = c.ociSpec
		}
		cs[id] = e
	}
	v, err := ast.InterfaceToValue(map[string]any{"containers": cs})
	if err != nil {
		return nil, fmt.Errorf("convert policy state: %w", err)
	}
	s.cached = v
	return v, nil
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
	s.mu.Lock()
	defer s.mu.Unlock()
	s.get(req.GetContainerId()).image = map[string]any{
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
	}
	s.cached = nil
}

// created records a successful CreateContainer with its canonical spec.
func (s *state) created(id string, spec map[string]any) {
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
