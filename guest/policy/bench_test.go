package policy

import (
	"context"
	"encoding/json"
	"testing"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// benchSpec is a typical container spec of ~3 KiB: containerd's default
// mounts, capabilities, masked paths and env.
func benchSpec(b *testing.B) []byte {
	s := specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args: []string{"sh", "-c", "echo hi"}, Cwd: "/", NoNewPrivileges: true,
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hi"},
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"},
				Effective: []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"},
				Permitted: []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"},
			},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces:    []specs.LinuxNamespace{{Type: "pid"}, {Type: "ipc"}, {Type: "uts"}, {Type: "mount"}, {Type: "network"}},
			MaskedPaths:   []string{"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	raw, err := json.Marshal(&s)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

// benchData pins one container: image, args, env, mounts and privileges
// of benchSpec.
var benchData = Data{Containers: []Container{{
	Name:    "app",
	Image:   &ImagePin{Name: "docker.io/library/busybox", Digest: "sha256:1111111111111111111111111111111111111111111111111111111111111111"},
	Command: []string{"sh", "-c", "echo hi"},
	Env:     []string{"GREETING=hi"},
	Mounts: []Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	},
	Privileges: &Privileges{
		Capabilities:    []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"},
		NoNewPrivileges: true,
		Namespaces:      []string{"pid", "ipc", "uts", "mount", "network"},
		MaskedPaths:     []string{"/proc/acpi", "/proc/kcore"},
	},
}}}

func benchEngine(b *testing.B) *Engine {
	pinned, err := Render(benchData)
	if err != nil {
		b.Fatal(err)
	}
	e, err := Load(pinned)
	if err != nil {
		b.Fatal(err)
	}
	e.state.pulled(&agent.PullImageRequest{ContainerId: "app", Reference: "busybox", Digest: "sha256:1111111111111111111111111111111111111111111111111111111111111111"},
		&agent.PullImageResponse{ImageConfig: []byte(`{"config":{"Env":["PATH=/bin"]}}`)})
	return e
}

// BenchmarkAllowCreateContainer is one CreateContainer decision under a
// policy that pins image, args, env, mounts and privileges.
func BenchmarkAllowCreateContainer(b *testing.B) {
	e := benchEngine(b)
	req := &agent.CreateContainerRequest{ContainerId: "app", OciSpec: benchSpec(b)}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := e.Allow(ctx, "", req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllowSmallRequest is one WaitProcess decision.
func BenchmarkAllowSmallRequest(b *testing.B) {
	e := benchEngine(b)
	req := &agent.WaitProcessRequest{ContainerId: "app"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := e.Allow(ctx, "", req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllowStream is one ReadStreamRequest decision.
func BenchmarkAllowStream(b *testing.B) {
	e := benchEngine(b)
	b.ReportAllocs()
	for b.Loop() {
		if !e.AllowStream("app", "", StreamStdout) {
			b.Fatal("denied")
		}
	}
}
