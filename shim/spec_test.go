package shim

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"
)

func TestGuestSpecStripsHostPaths(t *testing.T) {
	in := &specs.Spec{
		Root:    &specs.Root{Path: "/var/lib/containerd/rootfs", Readonly: true},
		Process: &specs.Process{Args: []string{"sh"}},
		Hooks:   &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/usr/bin/hook"}}},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: "/var/lib/cri/resolv.conf", Options: []string{"rbind"}},
			{Destination: "/data", Type: "tmpfs", Source: "/host/path"},
		},
		Linux: &specs.Linux{
			CgroupsPath: "/k8s/pod/ctr",
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"},
				{Type: specs.MountNamespace},
			},
		},
	}
	out, dropped, err := guestSpec(in)
	require.NoError(t, err)
	require.Equal(t, &specs.Root{Path: "rootfs", Readonly: true}, out.Root)
	require.Nil(t, out.Hooks)
	require.Len(t, out.Mounts, 2)
	require.Equal(t, "/proc", out.Mounts[0].Destination)
	require.Equal(t, "/dev", out.Mounts[1].Destination)
	require.Len(t, dropped, 2)
	require.Contains(t, dropped[0], "/etc/resolv.conf")
	require.Contains(t, dropped[1], "/host/path")
	require.Empty(t, out.Linux.CgroupsPath)
	require.Equal(t, []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}}, out.Linux.Namespaces)

	// The input is not modified.
	require.Equal(t, "/var/lib/containerd/rootfs", in.Root.Path)
	require.Len(t, in.Mounts, 4)
	require.NotNil(t, in.Hooks)
}

func TestGuestSpecNeedsProcess(t *testing.T) {
	_, _, err := guestSpec(&specs.Spec{})
	require.ErrorContains(t, err, "no process")
}

func TestSandboxID(t *testing.T) {
	require.Equal(t, "c1", sandboxID("c1", nil))
	require.Equal(t, "c1", sandboxID("c1", &specs.Spec{}))
	require.Equal(t, "pod", sandboxID("c1", &specs.Spec{Annotations: map[string]string{AnnotationSandboxID: "pod"}}))
}
