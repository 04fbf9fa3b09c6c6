package policy

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"os"
	"testing"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

const busyboxDigest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

func loadFile(t testing.TB, path string) *Engine {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	e, err := Load(string(b))
	require.NoError(t, err)
	return e
}

func TestConfigsDefaultIsEmbeddedDefault(t *testing.T) {
	b, err := os.ReadFile("../../configs/policy/default.rego")
	require.NoError(t, err)
	assert.Equal(t, Default, string(b), "configs/policy/default.rego must be a byte-for-byte copy of guest/policy/default.rego: cp guest/policy/default.rego configs/policy/")
}

// TestDefaultRules covers every rule of the default policy, allow and deny.
func TestDefaultRules(t *testing.T) {
	e, err := LoadDefault()
	require.NoError(t, err)
	ctx := context.Background()
	allowed := []proto.Message{
		&agent.HealthRequest{},
		&agent.DiagnosticsRequest{},
		&agent.InitSandboxRequest{InitData: []byte("version = \"0.1.0\"\n")},
		&agent.GetAttestationEventRequest{},
		&agent.PullImageRequest{ContainerId: "c", Reference: "busybox:1.36"},
		&agent.CreateContainerRequest{ContainerId: "c", OciSpec: []byte(`{"process":{"args":["sh"],"cwd":"/"}}`)},
		&agent.StartContainerRequest{ContainerId: "c"},
		&agent.SignalProcessRequest{ContainerId: "c", Signal: 15},
		&agent.WaitProcessRequest{ContainerId: "c"},
		&agent.CloseStdinRequest{ContainerId: "c"},
		&agent.ResizeTTYRequest{ContainerId: "c", Width: 80, Height: 24},
		&agent.StatsRequest{ContainerId: "c"},
		&agent.ListPidsRequest{ContainerId: "c"},
		&agent.RemoveContainerRequest{ContainerId: "c"},
		&agent.GetOOMEventRequest{},
		&agent.ShutdownRequest{},
	}
	covered := map[string]bool{}
	for _, req := range allowed {
		assert.NoError(t, e.Allow(ctx, "", req), "%T", req)
		covered[string(req.ProtoReflect().Descriptor().Name())] = true
	}
	covered["ExecProcessRequest"], covered[RuleReadStream], covered[RuleWriteStream] = true, true, true
	covered[RuleCopyFile], covered[RuleSetPolicy] = true, true
	for _, r := range Rules() {
		assert.True(t, covered[r], "rule %s is not exercised by this test", r)
		assert.Contains(t, Default, "default "+r+" := ", "default.rego must decide %s explicitly", r)
	}
	err = e.Allow(ctx, "/coffer.agent.v1.Agent/ExecProcess", &agent.ExecProcessRequest{ContainerId: "c", ExecId: "e", Process: []byte(`{"args":["sh"],"cwd":"/"}`)})
	require.Error(t, err)
	assert.Equal(t, "ExecProcessRequest is blocked by agent policy (rule agent_policy.ExecProcessRequest)", err.Error())
	assert.True(t, errors.Is(err, errdefs.ErrPermissionDenied))
	st, ok := status.FromError(err)
	require.True(t, ok)
	assert.Equal(t, codes.PermissionDenied, st.Code())

	assert.True(t, e.AllowStream("c", "", StreamStdout), "ReadStreamRequest stdout")
	assert.True(t, e.AllowStream("c", "e", StreamStderr), "ReadStreamRequest stderr")
	assert.False(t, e.AllowStream("c", "", StreamStdin), "WriteStreamRequest")
	assert.False(t, e.AllowStream("c", "", "tty"), "unknown stream")

	// Pseudo-requests with no RPC yet: CopyFileRequest and SetPolicyRequest.
	err = e.decide(ctx, RuleCopyFile, map[string]any{})
	assert.True(t, IsDenied(err), "CopyFileRequest: %v", err)
	err = e.SetPolicy(ctx, Default, sum256(Default))
	assert.True(t, IsDenied(err), "SetPolicyRequest: %v", err)
}

func sum256(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
func sum384(s string) []byte { h := sha512.Sum384([]byte(s)); return h[:] }

func TestAllowAllAllowsEverything(t *testing.T) {
	e := loadFile(t, "../../configs/policy/allow-all.rego")
	ctx := context.Background()
	assert.NoError(t, e.Allow(ctx, "", &agent.ExecProcessRequest{ContainerId: "c", ExecId: "e", Process: []byte(`{"args":["sh"],"cwd":"/"}`)}))
	assert.True(t, e.AllowStream("c", "", StreamStdin))
	for _, r := range Rules() {
		assert.NoError(t, e.decide(ctx, r, map[string]any{}), r)
	}
}

func TestUndefinedRuleDenies(t *testing.T) {
	e, err := Load("package agent_policy\n\ndefault HealthRequest := true\n")
	require.NoError(t, err)
	assert.NoError(t, e.Allow(context.Background(), "", &agent.HealthRequest{}))
	assert.True(t, IsDenied(e.Allow(context.Background(), "", &agent.StartContainerRequest{ContainerId: "c"})))
	assert.False(t, e.AllowStream("c", "", StreamStdout))
}

func TestNonBooleanRuleDenies(t *testing.T) {
	e, err := Load("package agent_policy\n\nHealthRequest := \"yes\"\n")
	require.NoError(t, err)
	err = e.Allow(context.Background(), "", &agent.HealthRequest{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "want a boolean")
}

func TestLoadErrors(t *testing.T) {
	_, err := Load("package other\n\ndefault HealthRequest := true\n")
	assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	assert.Contains(t, err.Error(), `want "package agent_policy"`)
	_, err = Load("package agent_policy\n\nHealthRequest if {\n")
	assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	_, err = Load("package agent_policy\n\nHealthRequest if undefined_fn(1)\n")
	assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
}

func TestBadSpecIsInvalidArgument(t *testing.T) {
	e, err := LoadDefault()
	require.NoError(t, err)
	err = e.Allow(context.Background(), "", &agent.CreateContainerRequest{ContainerId: "c", OciSpec: []byte("not json")})
	assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
}

func TestMethodMismatch(t *testing.T) {
	e, err := LoadDefault()
	require.NoError(t, err)
	err = e.Allow(context.Background(), "/coffer.agent.v1.Agent/Health", &agent.ExecProcessRequest{})
	assert.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	err = e.Allow(context.Background(), "/coffer.agent.v1.Agent/Nope", &agent.HealthRequest{})
	assert.True(t, IsDenied(err))
}

func TestCheckPolicyDigest(t *testing.T) {
	assert.NoError(t, CheckPolicyDigest(Default, sum256(Default)))
	assert.NoError(t, CheckPolicyDigest(Default, sum384(Default)))
	err := CheckPolicyDigest(Default+" ", sum256(Default))
	assert.ErrorIs(t, err, errdefs.ErrPermissionDenied)
	assert.Contains(t, err.Error(), "sha256")
	assert.ErrorIs(t, CheckPolicyDigest(Default, nil), errdefs.ErrInvalidArgument)
}

func TestSetPolicy(t *testing.T) {
	allowAll, err := os.ReadFile("../../configs/policy/allow-all.rego")
	require.NoError(t, err)
	e, err := Load(string(allowAll))
	require.NoError(t, err)
	ctx := context.Background()
	// Digest mismatch: refused, old policy stays.
	err = e.SetPolicy(ctx, Default, sum384("something else"))
	assert.ErrorIs(t, err, errdefs.ErrPermissionDenied)
	assert.Equal(t, string(allowAll), e.Source())
	// Matching digest: replaced; exec is now denied.
	require.NoError(t, e.SetPolicy(ctx, Default, sum384(Default)))
	assert.Equal(t, Default, e.Source())
	assert.True(t, IsDenied(e.Allow(ctx, "", &agent.ExecProcessRequest{ContainerId: "c", ExecId: "e", Process: []byte(`{"args":["sh"]}`)})))
	// And the default refuses any further replacement.
	assert.True(t, IsDenied(e.SetPolicy(ctx, string(allowAll), sum256(string(allowAll)))))
}

func TestInstall(t *testing.T) {
	e, err := LoadDefault()
	require.NoError(t, err)
	ctx := context.Background()
	assert.ErrorIs(t, e.Install(ctx, "package agent_policy\n\nx if {"), errdefs.ErrInvalidArgument)
	assert.Equal(t, Default, e.Source())
	allowAll, err := os.ReadFile("../../configs/policy/allow-all.rego")
	require.NoError(t, err)
	require.NoError(t, e.Install(ctx, string(allowAll)))
	assert.NoError(t, e.Allow(ctx, "", &agent.ExecProcessRequest{ContainerId: "c", ExecId: "e", Process: []byte(`{"args":["sh"]}`)}))
}

func TestMethodTableCoversService(t *testing.T) {
	m, err := agentMethods()
	require.NoError(t, err)
	assert.Len(t, m, agent.File_agent_proto.Services().ByName("Agent").Methods().Len())
	assert.Equal(t, "ExecProcessRequest", m["/coffer.agent.v1.Agent/ExecProcess"].rule)
	assert.Equal(t, "StatsRequest", m["/coffer.agent.v1.Agent/Stats"].rule)
}

// TestInterceptorOverTTRPC serves a fake Agent through the interceptor on a
// real ttrpc connection: denials reach the client as PermissionDenied and
// successful pulls and creates update the state.
func TestInterceptorOverTTRPC(t *testing.T) {
	rendered, err := Render(Data{Containers: []Container{{
		Name:    "app",
		Image:   &ImagePin{Name: "docker.io/library/busybox", Digest: busyboxDigest},
		Command: []string{"sh", "-c", "echo hi"},
	}}})
	require.NoError(t, err)
	e, err := Load(rendered)
	require.NoError(t, err)
	client := serveFake(t, e)
	ctx := context.Background()

	_, err = client.ExecProcess(ctx, &agent.ExecProcessRequest{ContainerId: "c", ExecId: "e", Process: []byte(`{"args":["sh"]}`)})
	st, _ := status.FromError(err)
	assert.Equal(t, codes.PermissionDenied, st.Code())
	assert.Contains(t, st.Message(), "ExecProcessRequest is blocked by agent policy")
	assert.ErrorIs(t, errgrpc.ToNative(err), errdefs.ErrPermissionDenied)

	spec := []byte(`{"process":{"args":["sh","-c","echo hi"],"cwd":"/"}}`)
	// Create before any pull: the pinned image was never pulled.
	_, err = client.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: "c", OciSpec: spec})
	st, _ = status.FromError(err)
	assert.Equal(t, codes.PermissionDenied, st.Code())
	assert.Contains(t, st.Message(), "no image was pulled")

	_, err = client.PullImage(ctx, &agent.PullImageRequest{ContainerId: "c", Reference: "docker.io/library/alpine:3", Digest: busyboxDigest})
	st, _ = status.FromError(err)
	assert.Equal(t, codes.PermissionDenied, st.Code(), "another repository")
	_, err = client.PullImage(ctx, &agent.PullImageRequest{ContainerId: "c", Reference: "busybox:1.36", Digest: busyboxDigest})
	require.NoError(t, err)
	_, err = client.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: "c", OciSpec: spec})
	require.NoError(t, err)
	_, err = client.StartContainer(ctx, &agent.StartContainerRequest{ContainerId: "c"})
	require.NoError(t, err)

	sv, err := e.state.value()
	require.NoError(t, err)
	assert.Contains(t, sv.String(), `"created": true`)
	_, err = client.RemoveContainer(ctx, &agent.RemoveContainerRequest{ContainerId: "c"})
	require.NoError(t, err)
	sv, err = e.state.value()
	require.NoError(t, err)
	assert.Equal(t, `{"containers": {}}`, sv.String())
}

// fakeAgent succeeds at everything.
type fakeAgent struct{ agent.TTRPCAgentService }

func (fakeAgent) PullImage(context.Context, *agent.PullImageRequest) (*agent.PullImageResponse, error) {
	return &agent.PullImageResponse{ManifestDigest: "sha256:2222222222222222222222222222222222222222222222222222222222222222",
		ImageConfig: []byte(`{"config":{"Env":["PATH=/bin"],"Cmd":["sh"]}}`)}, nil
}
func (fakeAgent) CreateContainer(context.Context, *agent.CreateContainerRequest) (*agent.CreateContainerResponse, error) {
	return &agent.CreateContainerResponse{Pid: 7}, nil
}
func (fakeAgent) StartContainer(context.Context, *agent.StartContainerRequest) (*agent.StartContainerResponse, error) {
	return &agent.StartContainerResponse{Pid: 7}, nil
}
func (fakeAgent) RemoveContainer(context.Context, *agent.RemoveContainerRequest) (*agent.RemoveContainerResponse, error) {
	return &agent.RemoveContainerResponse{}, nil
}
func (fakeAgent) ExecProcess(context.Context, *agent.ExecProcessRequest) (*agent.ExecProcessResponse, error) {
	panic("ExecProcess reached the service despite the policy")
}

func serveFake(t *testing.T, e *Engine) agent.TTRPCAgentService {
	t.Helper()
	srv, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(e.UnaryServerInterceptor()))
	require.NoError(t, err)
	agent.RegisterTTRPCAgentService(srv, fakeAgent{})
	l := newPipeListener()
	go srv.Serve(context.Background(), l)
	c := ttrpc.NewClient(l.dial())
	t.Cleanup(func() {
		c.Close()
		srv.Close()
	})
	return agent.NewTTRPCAgentClient(c)
}
