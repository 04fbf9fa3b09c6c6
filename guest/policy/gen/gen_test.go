package gen

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/cofferhq/coffer/guest/policy"
)

const (
	digest   = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
	manifest = "sha256:4444444444444444444444444444444444444444444444444444444444444444"
)

// imageConfigJSON is the image config the fake guest pull reports.
const imageConfigJSON = `{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/bin:/bin","APP_MODE=prod"],"Entrypoint":["/entry"],"Cmd":["serve"],"WorkingDir":"/srv"}}`

var imageEnv = []string{"PATH=/usr/local/bin:/bin", "APP_MODE=prod"}

// ctrSpec builds the spec `ctr run` builds (cmd/ctr/commands/run/run_unix.go:
// default spec, default Unix devices, --env, --mount, then the image config
// as oci.WithImageConfig applies it, then args and the other flags).
func ctrSpec(t *testing.T, id string, env []string, mounts []specs.Mount, args []string, extra ...oci.SpecOpts) *specs.Spec {
	t.Helper()
	opts := []oci.SpecOpts{oci.WithDefaultSpec(), oci.WithDefaultUnixDevices, oci.WithEnv(env), oci.WithMounts(mounts), withImageConfig}
	if len(args) > 0 {
		opts = append(opts, oci.WithProcessArgs(args...))
	}
	opts = append(opts, extra...)
	s, err := oci.GenerateSpec(namespaces.WithNamespace(context.Background(), "default"), nil, &containers.Container{ID: id}, opts...)
	require.NoError(t, err)
	return s
}

// withImageConfig does what oci.WithImageConfig does with imageConfigJSON
// (that option needs a containerd image): image env under the flags' env,
// Entrypoint+Cmd as args, WorkingDir as cwd.
func withImageConfig(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	env := append([]string{}, imageEnv...)
	for _, e := range s.Process.Env {
		k, _, _ := strings.Cut(e, "=")
		replaced := false
		for i, ie := range env {
			if strings.HasPrefix(ie, k+"=") {
				env[i], replaced = e, true
			}
		}
		if !replaced {
			env = append(env, e)
		}
	}
	s.Process.Env = env
	s.Process.Args = []string{"/entry", "serve"}
	s.Process.Cwd = "/srv"
	return nil
}

// shimView is what containerd-shim-cc-v2 sends the guest (shim/spec.go
// guestSpec): no hooks, no bind mounts of host paths, no namespace paths,
// no cgroups path, root "rootfs".
func shimView(s *specs.Spec) []byte {
	guestTypes := map[string]bool{"proc": true, "sysfs": true, "tmpfs": true, "devpts": true, "mqueue": true, "cgroup": true, "cgroup2": true, "shm": true}
	g := *s
	g.Root = &specs.Root{Path: "rootfs"}
	g.Hooks = nil
	g.Mounts = nil
	for _, m := range s.Mounts {
		if guestTypes[m.Type] && !strings.HasPrefix(m.Source, "/") {
			g.Mounts = append(g.Mounts, m)
		}
	}
	if s.Linux != nil {
		l := *s.Linux
		l.CgroupsPath = ""
		l.Namespaces = nil
		for _, n := range s.Linux.Namespaces {
			if n.Path == "" {
				l.Namespaces = append(l.Namespaces, n)
			}
		}
		g.Linux = &l
	}
	b, _ := json.Marshal(&g)
	return b
}

// guest is an Engine behind its ttrpc interceptor with a fake agent that
// succeeds at everything.
type guest struct {
	t  *testing.T
	e  *policy.Engine
	ic ttrpc.UnaryServerInterceptor
}

func newGuest(t *testing.T, rego string) *guest {
	e, err := policy.Load(rego)
	require.NoError(t, err)
	return &guest{t: t, e: e, ic: e.UnaryServerInterceptor()}
}

func (g *guest) call(method string, req proto.Message, resp any) error {
	b, err := proto.Marshal(req)
	require.NoError(g.t, err)
	_, err = g.ic(context.Background(), func(v any) error { return proto.Unmarshal(b, v.(proto.Message)) },
		&ttrpc.UnaryServerInfo{FullMethod: "/coffer.agent.v1.Agent/" + method},
		func(context.Context, func(any) error) (any, error) { return resp, nil })
	return err
}

func (g *guest) pull(id, ref string) error {
	return g.call("PullImage", &agent.PullImageRequest{ContainerId: id, Reference: ref, Digest: digest},
		&agent.PullImageResponse{ManifestDigest: manifest, ImageConfig: []byte(imageConfigJSON)})
}

func (g *guest) create(id string, spec []byte) error {
	return g.call("CreateContainer", &agent.CreateContainerRequest{ContainerId: id, OciSpec: spec}, &agent.CreateContainerResponse{Pid: 1})
}

func render(t *testing.T, cs ...policy.Container) string {
	out, err := policy.Render(policy.Data{Containers: cs})
	require.NoError(t, err)
	return out
}

func TestRunPolicyAcceptsItsContainerAndRefusesAlteredSpecs(t *testing.T) {
	env := []string{"GREETING=hi"}
	mountFlag := "type=tmpfs,src=tmpfs,dst=/scratch,options=nosuid:size=1m"
	m, err := ParseMount(mountFlag)
	require.NoError(t, err)
	args := []string{"sh", "-c", "echo $GREETING"}
	c, err := FromRun(RunOptions{ID: "app", Image: "busybox:1.36@" + digest, Args: args, Env: env, Mounts: []string{mountFlag}})
	require.NoError(t, err)
	rego := render(t, c)

	good := ctrSpec(t, "app", env, []specs.Mount{m}, args)
	g := newGuest(t, rego)
	require.NoError(t, g.pull("app", "docker.io/library/busybox:1.36"))
	require.NoError(t, g.create("app", shimView(good)))

	altered := map[string]*specs.Spec{
		"different command": ctrSpec(t, "app", env, []specs.Mount{m}, []string{"sh", "-c", "cat /secret"}),
		"image default command instead of the pinned one": ctrSpec(t, "app", env, []specs.Mount{m}, nil),
		"extra mount":           ctrSpec(t, "app", env, []specs.Mount{m, {Destination: "/etc", Type: "tmpfs", Source: "tmpfs"}}, args),
		"privileged":            ctrSpec(t, "app", env, []specs.Mount{m}, args, oci.WithPrivileged, oci.WithAllDevicesAllowed),
		"added capability":      ctrSpec(t, "app", env, []specs.Mount{m}, args, oci.WithAddedCapabilities([]string{"CAP_SYS_ADMIN"})),
		"extra env":             ctrSpec(t, "app", append([]string{"LD_PRELOAD=/evil.so"}, env...), []specs.Mount{m}, args),
		"missing env":           ctrSpec(t, "app", nil, []specs.Mount{m}, args),
		"host PID namespace":    ctrSpec(t, "app", env, []specs.Mount{m}, args, oci.WithHostNamespace(specs.PIDNamespace)),
		"mount options changed": ctrSpec(t, "app", env, []specs.Mount{{Destination: "/scratch", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}}}, args),
		"masked paths removed":  ctrSpec(t, "app", env, []specs.Mount{m}, args, oci.WithMaskedPaths(nil)),
	}
	for name, s := range altered {
		t.Run(name, func(t *testing.T) {
			g := newGuest(t, rego)
			require.NoError(t, g.pull("x", "docker.io/library/busybox:1.36"))
			err := g.create("x", shimView(s))
			require.Error(t, err)
			assert.ErrorIs(t, errgrpcNative(err), errdefs.ErrPermissionDenied)
			assert.Contains(t, err.Error(), "CreateContainerRequest is blocked by agent policy")
			t.Log(err)
		})
	}

	// A different image (same spec) is refused at pull and at create.
	g = newGuest(t, rego)
	assert.Error(t, g.call("PullImage", &agent.PullImageRequest{ContainerId: "x", Reference: "busybox:1.36", Digest: manifest}, &agent.PullImageResponse{}))
	assert.Error(t, g.pull("x", "docker.io/library/alpine:3"))
	err = g.create("x", shimView(good))
	assert.ErrorContains(t, err, "no image was pulled")
}

func TestRunPolicyImageDefaults(t *testing.T) {
	c, err := FromRun(RunOptions{ID: "app", Image: "busybox@" + digest})
	require.NoError(t, err)
	g := newGuest(t, render(t, c))
	require.NoError(t, g.pull("app", "busybox"))
	require.NoError(t, g.create("app", shimView(ctrSpec(t, "app", nil, nil, nil))), "image Entrypoint+Cmd and env")
}

func TestRunPrivilegedPolicy(t *testing.T) {
	c, err := FromRun(RunOptions{ID: "app", Image: "busybox@" + digest, Args: []string{"true"}, Privileged: true})
	require.NoError(t, err)
	g := newGuest(t, render(t, c))
	require.NoError(t, g.pull("app", "busybox"))
	require.NoError(t, g.create("app", shimView(ctrSpec(t, "app", nil, nil, []string{"true"}, oci.WithPrivileged, oci.WithAllDevicesAllowed, oci.WithHostDevices))))
}

func TestRunOptionErrors(t *testing.T) {
	_, err := FromRun(RunOptions{ID: "app", Image: "busybox:1.36"})
	assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	assert.ErrorContains(t, err, "has no digest")
	_, err = FromRun(RunOptions{ID: "app", Image: "busybox@" + digest, Mounts: []string{"type=bind,src=/a"}})
	assert.ErrorContains(t, err, "has no dst")
	_, err = FromRun(RunOptions{ID: "app", Image: "busybox@" + digest, User: "root"})
	assert.ErrorContains(t, err, "numeric")
}

const podYAML = `apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: app
    image: docker.io/library/busybox:1.36@` + digest + `
    command: ["sh", "-c"]
    args: ["echo $GREETING; sleep 3600"]
    env:
    - name: GREETING
      value: hello
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    securityContext:
      allowPrivilegeEscalation: false
      capabilities:
        drop: ["NET_RAW"]
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    emptyDir: {}
`

// criSpec approximates the spec containerd's CRI plugin builds for the
// pod's container (internal/cri/server/container_create.go): default spec
// without /run, the cgroup mount, Kubernetes command/args, env with
// HOSTNAME and service links, the securityContext, and the emptyDir as a
// bind mount of a host path (which the shim drops).
func criSpec(t *testing.T, extra ...oci.SpecOpts) *specs.Spec {
	opts := []oci.SpecOpts{
		oci.WithoutRunMount, oci.WithMounts([]specs.Mount{criCgroupMount}),
		oci.WithMounts([]specs.Mount{{Destination: "/data", Type: "bind", Source: "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~empty-dir/data", Options: []string{"rbind", "rw"}}}),
		oci.WithEnv([]string{"HOSTNAME=web", "GREETING=hello", "POD_IP=10.0.0.7", "KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443", "KUBERNETES_PORT_443_TCP_PROTO=tcp"}),
		oci.WithNewPrivileges, oci.WithNoNewPrivileges, oci.WithDroppedCapabilities([]string{"CAP_NET_RAW"}),
	}
	return ctrSpec(t, "0123abcd", nil, nil, []string{"sh", "-c", "echo $GREETING; sleep 3600"}, append(opts, extra...)...)
}

func TestPodPolicyAcceptsItsPodAndRefusesAlteredSpecs(t *testing.T) {
	cs, err := FromPod([]byte(podYAML))
	require.NoError(t, err)
	require.Len(t, cs, 1)
	assert.Equal(t, []string{"GREETING=hello"}, cs[0].Env)
	rego := render(t, cs...)

	g := newGuest(t, rego)
	require.NoError(t, g.pull("0123abcd", "docker.io/library/busybox:1.36"))
	require.NoError(t, g.create("0123abcd", shimView(criSpec(t))))

	altered := map[string]*specs.Spec{
		"extra mount":       criSpec(t, oci.WithMounts([]specs.Mount{{Destination: "/host", Type: "tmpfs", Source: "tmpfs"}})),
		"privileged":        criSpec(t, oci.WithPrivileged),
		"different command": criSpec(t, oci.WithProcessArgs("sh", "-c", "cat /run/secrets/*")),
		"NET_RAW back":      criSpec(t, oci.WithAddedCapabilities([]string{"CAP_NET_RAW"})),
		"new privileges":    criSpec(t, oci.WithNewPrivileges),
	}
	for name, s := range altered {
		t.Run(name, func(t *testing.T) {
			g := newGuest(t, rego)
			require.NoError(t, g.pull("0123abcd", "docker.io/library/busybox:1.36"))
			err := g.create("0123abcd", shimView(s))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "CreateContainerRequest is blocked by agent policy")
		})
	}
}

func TestPodErrors(t *testing.T) {
	_, err := FromPod([]byte("kind: Deployment\n"))
	assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	_, err = FromPod([]byte("kind: Pod\nspec:\n  containers:\n  - name: a\n    image: busybox:1.36\n"))
	assert.ErrorContains(t, err, "has no digest")
	_, err = FromPod([]byte("kind: Pod\n"))
	assert.ErrorContains(t, err, "no containers")
}
