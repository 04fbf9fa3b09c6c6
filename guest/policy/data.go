package policy

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// Data is a policy's policy_data: the containers the pod owner allows.
// default.rego documents each field's matching rule.
type Data struct {
	Containers []Container `json:"containers"`
}

// Container pins one container. A nil field pins nothing.
type Container struct {
	// Name labels the entry in denial reasons (the Pod's container name,
	// or the ctr container ID).
	Name string `json:"name"`
	// Image is the repository and digest the guest must pull.
	Image *ImagePin `json:"image"`
	// Command is process.args before Args; nil means the image's Entrypoint.
	Command []string `json:"command"`
	// Args follows Command; nil means the image's Cmd when Command is nil
	// too, nothing otherwise (Kubernetes' command/args rule).
	Args []string `json:"args"`
	// Env are "K=V" entries that must be present. Only these, the image
	// config's env, containerd's default PATH and matches of EnvRegex are
	// allowed. nil pins no env at all.
	Env []string `json:"env"`
	// EnvRegex are RE2 patterns (Rego regex.match) of further allowed "K=V"
	// entries, e.g. the service variables Kubernetes adds.
	EnvRegex []string `json:"env_regex,omitempty"`
	// Mounts are the only mounts allowed; fewer are fine.
	Mounts []Mount `json:"mounts"`
	// Privileges pins capabilities, namespaces and the other settings a
	// privileged container changes.
	Privileges *Privileges `json:"privileges"`
}

// Mount is an allowed OCI mount; Options are compared as a set.
type Mount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Options     []string `json:"options"`
}

// Privileges pins what makes a container more privileged.
type Privileges struct {
	// Capabilities are the only capabilities allowed, in any set
	// (bounding, effective, permitted, inheritable, ambient).
	Capabilities []string `json:"capabilities"`
	// NoNewPrivileges requires process.noNewPrivileges when true.
	NoNewPrivileges bool `json:"no_new_privileges"`
	// User pins process.user uid and gid when set.
	User *User `json:"user"`
	// Namespaces are the namespace types that must each be a new
	// namespace ("pid", "network", ...). No namespace may join a path.
	Namespaces []string `json:"namespaces"`
	// MaskedPaths and ReadonlyPaths must all stay in linux.maskedPaths and
	// linux.readonlyPaths.
	MaskedPaths   []string `json:"masked_paths"`
	ReadonlyPaths []string `json:"readonly_paths"`
	// Devices are the only device node paths allowed in linux.devices.
	Devices []string `json:"devices"`
	// DeviceCgroup are the only "allow: true" device cgroup rules allowed.
	DeviceCgroup []DeviceRule `json:"device_cgroup"`
}

// User is a numeric process user.
type User struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// DeviceRule is an OCI linux.resources.devices entry; nil Major or Minor
// is a wildcard, as in the OCI spec.
type DeviceRule struct {
	Allow  bool   `json:"allow"`
	Type   string `json:"type,omitempty"`
	Major  *int64 `json:"major,omitempty"`
	Minor  *int64 `json:"minor,omitempty"`
	Access string `json:"access,omitempty"`
}

// dataLine is the line of Default that Render replaces.
const dataLine = `policy_data := {"containers": []}`

// Render returns Default with its policy_data replaced by d: the default
// rules pinning exactly d's containers. It returns an
// errdefs.ErrInvalidArgument error when d has no containers (the result
// would pin nothing; use Default) and fails if Default lost its
// policy_data line.
func Render(d Data) (string, error) {
	if len(d.Containers) == 0 {
		return "", fmt.Errorf("render agent policy: no containers to pin: want at least one: %w", errdefs.ErrInvalidArgument)
	}
	if strings.Count(Default, dataLine+"\n") != 1 {
		return "", fmt.Errorf("render agent policy: the default policy has no line %q to replace", dataLine)
	}
	b, err := json.MarshalIndent(d, "", "\t")
	if err != nil {
		return "", fmt.Errorf("render agent policy: encode policy_data: %w", err)
	}
	return strings.Replace(Default, dataLine+"\n", "policy_data := "+string(b)+"\n", 1), nil
}
