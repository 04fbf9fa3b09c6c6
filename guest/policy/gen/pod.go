package gen

import (
	"fmt"
	"regexp"

	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"sigs.k8s.io/yaml"

	"github.com/cofferhq/coffer/guest/policy"
)

// pod is the part of a Kubernetes v1 Pod that a policy pins.
type pod struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		InitContainers []podContainer `json:"initContainers"`
		Containers     []podContainer `json:"containers"`
	} `json:"spec"`
}

type podContainer struct {
	Name    string   `json:"name"`
	Image   string   `json:"image"`
	Command []string `json:"command"`
	Args    []string `json:"args"`
	Env     []struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		ValueFrom any    `json:"valueFrom"`
	} `json:"env"`
	SecurityContext *struct {
		Privileged               *bool  `json:"privileged"`
		AllowPrivilegeEscalation *bool  `json:"allowPrivilegeEscalation"`
		RunAsUser                *int64 `json:"runAsUser"`
		RunAsGroup               *int64 `json:"runAsGroup"`
		Capabilities             *struct {
			Add  []string `json:"add"`
			Drop []string `json:"drop"`
		} `json:"capabilities"`
	} `json:"securityContext"`
}

// criEnvRegex are the variables the kubelet and CRI add to every
// container: HOSTNAME and the Kubernetes service-link variables (names of
// services, upper-case, with host, port and protocol values).
var criEnvRegex = []string{
	`^HOSTNAME=[A-Za-z0-9.-]*$`,
	`^[A-Z0-9_]+_SERVICE_(HOST|PORT|PORT_[A-Z0-9_]+)=[A-Za-z0-9.:]*$`,
	`^[A-Z0-9_]+_PORT(_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?=[A-Za-z0-9.:/]*$`,
}

// criCgroupMount is the read-only cgroup mount the CRI plugin adds for
// unprivileged containers.
var criCgroupMount = specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}}

// FromPod returns one policy entry per container and init container of a
// Kubernetes Pod (YAML or JSON, kind Pod): image by digest, command and
// args (Kubernetes' rule, the image's where absent), env values (an env
// with valueFrom is allowed with any value but not required), CRI's
// HOSTNAME and service-link variables (criEnvRegex), and the mounts and
// privileges of containerd's default spec with the container's
// securityContext (privileged, capabilities add/drop,
// allowPrivilegeEscalation: false, runAsUser/runAsGroup) applied with
// containerd's spec options. Pod volumes are bind mounts of host paths,
// which the shim never passes into the guest, so none is allowed. It
// returns an errdefs.ErrInvalidArgument error for a document that is not a
// Pod, an image without digest, or a pod without containers.
func FromPod(doc []byte) ([]policy.Container, error) {
	var p pod
	if err := yaml.Unmarshal(doc, &p); err != nil {
		return nil, fmt.Errorf("parse pod: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if p.Kind != "Pod" {
		return nil, fmt.Errorf("parse pod: kind is %q: want Pod: %w", p.Kind, errdefs.ErrInvalidArgument)
	}
	all := append(append([]podContainer{}, p.Spec.InitContainers...), p.Spec.Containers...)
	if len(all) == 0 {
		return nil, fmt.Errorf("parse pod %s: no containers: %w", p.Metadata.Name, errdefs.ErrInvalidArgument)
	}
	out := make([]policy.Container, 0, len(all))
	for _, pc := range all {
		c, err := fromPodContainer(pc)
		if err != nil {
			return nil, fmt.Errorf("pod %s: %w", p.Metadata.Name, err)
		}
		out = append(out, c)
	}
	return out, nil
}

func fromPodContainer(pc podContainer) (policy.Container, error) {
	img, err := pinImage(pc.Image)
	if err != nil {
		return policy.Container{}, fmt.Errorf("container %s: %w", pc.Name, err)
	}
	c := policy.Container{
		Name:     pc.Name,
		Image:    img,
		Command:  pc.Command,
		Args:     pc.Args,
		Env:      []string{},
		EnvRegex: append([]string{}, criEnvRegex...),
	}
	for _, e := range pc.Env {
		if e.ValueFrom != nil {
			c.EnvRegex = append(c.EnvRegex, "^"+regexp.QuoteMeta(e.Name)+"=")
			continue
		}
		c.Env = append(c.Env, e.Name+"="+e.Value)
	}
	opts := []oci.SpecOpts{oci.WithDefaultSpec(), oci.WithDefaultUnixDevices, oci.WithoutRunMount, oci.WithMounts([]specs.Mount{criCgroupMount})}
	var user *policy.User
	if sc := pc.SecurityContext; sc != nil {
		if sc.RunAsUser != nil || sc.RunAsGroup != nil {
			user = &policy.User{}
			if sc.RunAsUser != nil {
				user.UID = uint32(*sc.RunAsUser)
			}
			if sc.RunAsGroup != nil {
				user.GID = uint32(*sc.RunAsGroup)
			}
		}
		// CRI sets noNewPrivileges only for allowPrivilegeEscalation: false.
		opts = append(opts, oci.WithNewPrivileges)
		if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
			opts = append(opts, oci.WithNoNewPrivileges)
		}
		if sc.Capabilities != nil {
			if len(sc.Capabilities.Add) > 0 {
				opts = append(opts, oci.WithAddedCapabilities(capNames(sc.Capabilities.Add)))
			}
			if len(sc.Capabilities.Drop) > 0 {
				opts = append(opts, oci.WithDroppedCapabilities(capNames(sc.Capabilities.Drop)))
			}
		}
		if sc.Privileged != nil && *sc.Privileged {
			opts = append(opts, oci.WithPrivileged, oci.WithAllDevicesAllowed, oci.WithHostDevices)
		}
	} else {
		opts = append(opts, oci.WithNewPrivileges)
	}
	s, err := buildSpec(pc.Name, opts...)
	if err != nil {
		return policy.Container{}, err
	}
	c.Mounts, c.Privileges = fromSpec(s)
	c.Privileges.User = user
	return c, nil
}
