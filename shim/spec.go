package shim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// guestMountTypes are the mount types the guest creates itself; they name
// no host path, so they pass into the guest unchanged.
var guestMountTypes = map[string]bool{
	"proc": true, "sysfs": true, "tmpfs": true, "devpts": true,
	"mqueue": true, "cgroup": true, "cgroup2": true, "shm": true,
}

// readSpec reads config.json from a containerd bundle directory.
func readSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read OCI spec: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse OCI spec %s/config.json: %w", bundle, err)
	}
	return &s, nil
}

// guestSpec returns a copy of s with everything that names the host
// removed, because the host's paths, hooks and namespaces mean nothing
// inside the VM (and host hooks must never run for a confidential
// container): the rootfs path, bind mounts of host paths, hooks, namespace
// paths (a namespace joined by host path becomes the guest's own), the
// network namespace (containers share the VM's network, as in Kata: the VM
// is the pod's network boundary, and workloads reach the confidential data
// hub on the guest's 127.0.0.1:8006), and the cgroups path (the agent
// places containers itself). It returns the names of
// the mounts it dropped so the caller can log them.
func guestSpec(s *specs.Spec) (*specs.Spec, []string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, nil, err
	}
	var g specs.Spec
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, nil, err
	}
	g.Root = &specs.Root{Path: "rootfs"}
	if s.Root != nil {
		g.Root.Readonly = s.Root.Readonly
	}
	g.Hooks = nil
	var dropped []string
	mounts := g.Mounts[:0]
	for _, m := range g.Mounts {
		if guestMountTypes[m.Type] && !strings.HasPrefix(m.Source, "/") {
			mounts = append(mounts, m)
			continue
		}
		dropped = append(dropped, fmt.Sprintf("%s (%s from %s)", m.Destination, m.Type, m.Source))
	}
	g.Mounts = mounts
	if g.Linux != nil {
		g.Linux.CgroupsPath = ""
		ns := g.Linux.Namespaces[:0]
		for _, n := range g.Linux.Namespaces {
			if n.Type == specs.NetworkNamespace {
				continue
			}
			// A namespace joined by host path (CRI joins the sandbox's
			// IPC, UTS and PID namespaces) becomes a new namespace of the
			// container's own in the guest, never the guest's root one
			// that cc-agent lives in.
			n.Path = ""
			ns = append(ns, n)
		}
		g.Linux.Namespaces = ns
	}
	if g.Process == nil {
		return nil, nil, fmt.Errorf("OCI spec has no process: nothing to run")
	}
	return &g, dropped, nil
}
