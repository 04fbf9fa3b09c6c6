// Package gen builds agent policies that pin exactly one pod's containers:
// it turns a `ctr run` style flag set or a Kubernetes Pod into
// policy.Container entries for policy.Render. It runs on the host (in
// `ccctl policy generate`), never in the guest.
//
// The mounts and privileges pinned are those of the OCI spec containerd
// would build, produced with containerd's own spec options
// (github.com/containerd/containerd/v2/pkg/oci) as `ctr run` and the CRI
// plugin apply them. What depends on the image (Entrypoint, Cmd, env) is
// left to the guest: the policy allows the image config the guest itself
// pulled and verified.
package gen

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cofferhq/coffer/guest/policy"
)

// pinImage parses ref and requires a digest: a tag alone pins nothing.
func pinImage(ref string) (*policy.ImagePin, error) {
	p, err := policy.ParseImage(ref)
	if err != nil {
		return nil, err
	}
	if p.Digest == "" {
		return nil, fmt.Errorf("image %q has no digest: pin it as NAME[:TAG]@sha256:<64 hex> (see `ctr image ls` or `crane digest`): %w", ref, errdefs.ErrInvalidArgument)
	}
	return &p, nil
}

// buildSpec runs containerd's spec options on its default Linux spec.
func buildSpec(id string, opts ...oci.SpecOpts) (*specs.Spec, error) {
	ctx := namespaces.WithNamespace(context.Background(), namespaces.Default)
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: id}, opts...)
	if err != nil {
		return nil, fmt.Errorf("build OCI spec for %s: %w", id, err)
	}
	return s, nil
}

// fromSpec extracts the mounts and privileges s grants.
func fromSpec(s *specs.Spec) ([]policy.Mount, *policy.Privileges) {
	mounts := make([]policy.Mount, 0, len(s.Mounts))
	for _, m := range s.Mounts {
		mounts = append(mounts, policy.Mount{Destination: m.Destination, Type: m.Type, Source: m.Source, Options: nonNil(m.Options)})
	}
	p := &policy.Privileges{
		Capabilities:  []string{},
		Namespaces:    []string{},
		MaskedPaths:   []string{},
		ReadonlyPaths: []string{},
		Devices:       []string{},
		DeviceCgroup:  []policy.DeviceRule{},
	}
	if s.Process != nil {
		p.NoNewPrivileges = s.Process.NoNewPrivileges
		if c := s.Process.Capabilities; c != nil {
			set := map[string]bool{}
			for _, l := range [][]string{c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient} {
				for _, x := range l {
					set[x] = true
				}
			}
			for x := range set {
				p.Capabilities = append(p.Capabilities, x)
			}
			sort.Strings(p.Capabilities)
		}
	}
	if l := s.Linux; l != nil {
		for _, ns := range l.Namespaces {
			// The shim drops the network namespace (shim/spec.go
			// guestSpec: containers share the VM's network) and every
			// namespace joined by host path.
			if ns.Path == "" && ns.Type != specs.NetworkNamespace {
				p.Namespaces = append(p.Namespaces, string(ns.Type))
			}
		}
		p.MaskedPaths = append(p.MaskedPaths, l.MaskedPaths...)
		p.ReadonlyPaths = append(p.ReadonlyPaths, l.ReadonlyPaths...)
		for _, d := range l.Devices {
			p.Devices = append(p.Devices, d.Path)
		}
		if l.Resources != nil {
			for _, r := range l.Resources.Devices {
				if r.Allow {
					p.DeviceCgroup = append(p.DeviceCgroup, policy.DeviceRule{Allow: true, Type: r.Type, Major: r.Major, Minor: r.Minor, Access: r.Access})
				}
			}
		}
	}
	return mounts, p
}

func nonNil(xs []string) []string {
	if xs == nil {
		return []string{}
	}
	return xs
}

// capName normalises "net_admin" and "NET_ADMIN" to "CAP_NET_ADMIN"; "ALL"
// stays "ALL" (containerd's keyword).
func capName(c string) string {
	c = strings.ToUpper(strings.TrimSpace(c))
	if c == "ALL" || strings.HasPrefix(c, "CAP_") {
		return c
	}
	return "CAP_" + c
}

func capNames(cs []string) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, capName(c))
	}
	return out
}
