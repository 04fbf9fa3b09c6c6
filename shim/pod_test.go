package shim

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"
)

// TestPodSize checks VM sizing from CRI's sandbox annotations: base plus
// the pod's summed limits (memory rounded up to MiB, CPU quota/period
// rounded up), capped by max_vcpus / max_memory_mib.
func TestPodSize(t *testing.T) {
	cfg := &Config{Hypervisor: HypervisorConfig{VCPUs: 1, MemoryMiB: 512, MaxVCPUs: 4, MaxMemoryMiB: 2048}}
	v, m := podSize(cfg, &specs.Spec{})
	require.Equal(t, []int{1, 512}, []int{v, m})

	spec := &specs.Spec{Annotations: map[string]string{
		AnnotationSandboxMemory:    "268435457", // 256 MiB + 1 byte
		AnnotationSandboxCPUQuota:  "150000",
		AnnotationSandboxCPUPeriod: "100000",
	}}
	v, m = podSize(cfg, spec)
	require.Equal(t, []int{3, 512 + 257}, []int{v, m})

	spec.Annotations[AnnotationSandboxMemory] = "8589934592"
	spec.Annotations[AnnotationSandboxCPUQuota] = "1000000"
	v, m = podSize(cfg, spec)
	require.Equal(t, []int{4, 2048}, []int{v, m}, "capped")

	spec.Annotations[AnnotationSandboxMemory] = "junk"
	spec.Annotations[AnnotationSandboxCPUPeriod] = "0"
	v, m = podSize(cfg, spec)
	require.Equal(t, []int{1, 512}, []int{v, m}, "unparsable annotations add nothing")
}

// TestPodSandboxDetection checks the CRI annotations the shim keys on.
func TestPodSandboxDetection(t *testing.T) {
	sb := &specs.Spec{
		Annotations: map[string]string{AnnotationContainerType: "sandbox"},
		Linux:       &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/run/netns/cni-1"}}},
		Mounts:      []specs.Mount{{Destination: "/etc/resolv.conf", Source: "/var/lib/sb/resolv.conf"}},
	}
	require.True(t, isPodSandbox(sb))
	require.Equal(t, "/run/netns/cni-1", podNetNS(sb))
	require.Equal(t, "/var/lib/sb/resolv.conf", resolvConfSource(sb))
	require.False(t, isPodSandbox(&specs.Spec{Annotations: map[string]string{AnnotationContainerType: "container"}}))
	require.Equal(t, "", podNetNS(&specs.Spec{}))
}

// TestParseResolvConf reads nameservers (at most 3) and search domains.
func TestParseResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	require.NoError(t, os.WriteFile(p, []byte("# comment\nnameserver 10.96.0.10\nnameserver bogus\nnameserver 1.1.1.1\nnameserver 8.8.8.8\nnameserver 9.9.9.9\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"), 0o644))
	servers, search := parseResolvConf(p)
	require.Equal(t, []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("8.8.8.8")}, servers)
	require.Equal(t, []string{"default.svc.cluster.local", "svc.cluster.local"}, search)
	servers, search = parseResolvConf(filepath.Join(t.TempDir(), "missing"))
	require.Nil(t, servers)
	require.Nil(t, search)
}
