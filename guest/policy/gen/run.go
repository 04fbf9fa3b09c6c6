package gen

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cofferhq/coffer/guest/policy"
)

// RunOptions are the `ctr run` flags a policy pins.
type RunOptions struct {
	// ID is the container ID (ctr run's second argument); it names the
	// policy entry.
	ID string
	// Image is NAME[:TAG]@sha256:<digest>; the digest is required.
	Image string
	// Args are the positional arguments after the ID; empty means the
	// image's Entrypoint and Cmd.
	Args []string
	// Env are --env K=V values.
	Env []string
	// Mounts are --mount values, "type=T,src=S,dst=D,options=a:b".
	Mounts []string
	// Privileged is --privileged (with ctr's default --privileged-without-host-devices=false).
	Privileged bool
	// CapAdd and CapDrop are --cap-add and --cap-drop.
	CapAdd, CapDrop []string
	// User is --user as numeric "UID[:GID]" (names need the image rootfs).
	User string
	// AllowNewPrivs is --allow-new-privs.
	AllowNewPrivs bool
}

// FromRun returns the policy entry pinning the container `ctr run` creates
// from o: the image by digest, args (or the image's, when none), exactly
// o.Env on top of the image env, and the mounts and privileges of the spec
// ctr builds (containerd's default spec, default Unix devices, then the
// flags' spec options, as cmd/ctr/commands/run does). It returns an
// errdefs.ErrInvalidArgument error naming a bad flag value.
func FromRun(o RunOptions) (policy.Container, error) {
	if o.ID == "" {
		return policy.Container{}, fmt.Errorf("generate policy: no container ID: %w", errdefs.ErrInvalidArgument)
	}
	img, err := pinImage(o.Image)
	if err != nil {
		return policy.Container{}, fmt.Errorf("generate policy for %s: %w", o.ID, err)
	}
	opts := []oci.SpecOpts{oci.WithDefaultSpec(), oci.WithDefaultUnixDevices, oci.WithEnv(o.Env)}
	for _, m := range o.Mounts {
		om, err := ParseMount(m)
		if err != nil {
			return policy.Container{}, fmt.Errorf("generate policy for %s: %w", o.ID, err)
		}
		opts = append(opts, oci.WithMounts([]specs.Mount{om}))
	}
	var user *policy.User
	if o.User != "" {
		if user, err = parseUser(o.User); err != nil {
			return policy.Container{}, fmt.Errorf("generate policy for %s: %w", o.ID, err)
		}
		opts = append(opts, oci.WithUIDGID(user.UID, user.GID))
	}
	if o.Privileged {
		opts = append(opts, oci.WithPrivileged, oci.WithAllDevicesAllowed, oci.WithHostDevices)
	}
	if len(o.CapAdd) > 0 {
		opts = append(opts, oci.WithAddedCapabilities(capNames(o.CapAdd)))
	}
	if len(o.CapDrop) > 0 {
		opts = append(opts, oci.WithDroppedCapabilities(capNames(o.CapDrop)))
	}
	if o.AllowNewPrivs {
		opts = append(opts, oci.WithNewPrivileges)
	}
	s, err := buildSpec(o.ID, opts...)
	if err != nil {
		return policy.Container{}, err
	}
	mounts, priv := fromSpec(s)
	priv.User = user
	c := policy.Container{
		Name:       o.ID,
		Image:      img,
		Env:        nonNil(o.Env),
		Mounts:     mounts,
		Privileges: priv,
	}
	if len(o.Args) > 0 {
		c.Command = o.Args // ctr's args replace Entrypoint and Cmd
	}
	return c, nil
}

// ParseMount parses a ctr --mount value, "type=bind,src=/a,dst=/b,options=rbind:ro"
// (keys type, src|source, dst|destination|target, options with ":"
// separated values). It returns an errdefs.ErrInvalidArgument error for an
// unknown key or a missing destination.
func ParseMount(v string) (specs.Mount, error) {
	var m specs.Mount
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return m, fmt.Errorf("mount %q: field %q is not key=value: %w", v, kv, errdefs.ErrInvalidArgument)
		}
		switch k {
		case "type":
			m.Type = val
		case "src", "source":
			m.Source = val
		case "dst", "destination", "target":
			m.Destination = val
		case "options":
			m.Options = strings.Split(val, ":")
		default:
			return m, fmt.Errorf("mount %q: unknown key %q: want type, src, dst or options: %w", v, k, errdefs.ErrInvalidArgument)
		}
	}
	if m.Destination == "" {
		return m, fmt.Errorf("mount %q has no dst: %w", v, errdefs.ErrInvalidArgument)
	}
	return m, nil
}

// parseUser parses numeric "UID[:GID]".
func parseUser(s string) (*policy.User, error) {
	us, gs, hasGID := strings.Cut(s, ":")
	uid, err := strconv.ParseUint(us, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: want numeric UID[:GID]: %w", s, errdefs.ErrInvalidArgument)
	}
	u := &policy.User{UID: uint32(uid)}
	if hasGID {
		gid, err := strconv.ParseUint(gs, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %q: want numeric UID[:GID]: %w", s, errdefs.ErrInvalidArgument)
		}
		u.GID = uint32(gid)
	}
	return u, nil
}
