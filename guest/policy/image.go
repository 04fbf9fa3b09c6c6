package policy

import (
	"encoding/json"
	"fmt"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ImagePin names an image by repository and digest, the way policies pin
// images (policy_data.containers[].image).
type ImagePin struct {
	// Name is the normalised repository, docker.io/library/busybox for
	// "busybox" (github.com/distribution/reference, as containerd).
	Name string `json:"name"`
	// Digest is "sha256:<64 hex>" of the index or manifest; "" pins the
	// repository only.
	Digest string `json:"digest"`
}

// ParseImage normalises ref ("busybox:1.36@sha256:…", "ghcr.io/a/b@sha256:…")
// into an ImagePin; the tag is dropped, the digest kept. It returns an
// errdefs.ErrInvalidArgument error for a malformed reference.
func ParseImage(ref string) (ImagePin, error) {
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ImagePin{}, fmt.Errorf("parse image reference %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	p := ImagePin{Name: n.Name()}
	if d, ok := n.(reference.Digested); ok {
		p.Digest = d.Digest().String()
	}
	return p, nil
}

// pulledImage is the image a PullImageRequest makes the guest pull: the
// request's digest when set (the guest then pulls by it), else the digest
// in the reference, else "" (pull by tag).
func pulledImage(r *agent.PullImageRequest) (ImagePin, error) {
	p, err := ParseImage(r.GetReference())
	if err != nil {
		return ImagePin{}, fmt.Errorf("PullImageRequest.reference: %w", err)
	}
	if r.GetDigest() != "" {
		p.Digest = r.GetDigest()
	}
	return p, nil
}

// imageConfig is the part of an OCI image config the policy sees as
// state.containers[id].image.config.
type imageConfig struct {
	Env        []string `json:"env"`
	Entrypoint []string `json:"entrypoint"`
	Cmd        []string `json:"cmd"`
	WorkingDir string   `json:"working_dir"`
	User       string   `json:"user"`
}

// parseImageConfig reads PullImageResponse.image_config: the whole OCI
// image config blob (what guest/image returns) or only its "config" object
// (what agent.proto documents). Empty or malformed input gives a zero
// config: the policy then allows nothing from the image.
func parseImageConfig(b []byte) imageConfig {
	var whole ocispec.Image
	if json.Unmarshal(b, &whole) != nil {
		return imageConfig{}
	}
	c := whole.Config
	if c.Env == nil && c.Entrypoint == nil && c.Cmd == nil && c.WorkingDir == "" && c.User == "" {
		if json.Unmarshal(b, &c) != nil {
			return imageConfig{}
		}
	}
	return imageConfig{Env: c.Env, Entrypoint: c.Entrypoint, Cmd: c.Cmd, WorkingDir: c.WorkingDir, User: c.User}
}
