package confidential

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/guest/aa"
	"github.com/cofferhq/coffer/guest/attester"
	"github.com/cofferhq/coffer/guest/image"
	"github.com/cofferhq/coffer/initdata"
)

// fakeTEE is an attester whose launch-bound init-data field is fixed.
type fakeTEE struct {
	tee   attestation.TEE
	bound []byte
}

func (f *fakeTEE) TEE() attestation.TEE { return f.tee }
func (f *fakeTEE) Evidence(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("fake TEE has no evidence")
}
func (f *fakeTEE) InitDataBinding(context.Context) ([]byte, error) { return f.bound, nil }

const docWithKBS = `version = "0.1.0"
algorithm = "sha384"
[data]
"aa.toml" = '''
[token_configs.kbs]
url = "https://127.0.0.1:1"
'''
`

const docWithoutKBS = `version = "0.1.0"
algorithm = "sha256"
[data]
"policy.rego" = "package agent_policy"
`

func hub(att attester.Attester, err error) *Hub {
	return New(Options{Detect: func() (attester.Attester, error) { return att, err }})
}

func digestOf(t *testing.T, doc string, n int) []byte {
	d, err := initdata.Parse([]byte(doc))
	require.NoError(t, err)
	return initdata.Fit(d.Digest(), n)
}

// TestInitChecksLaunchBinding: init-data is accepted only when its digest,
// fitted to the TEE field, equals what the TEE bound at launch.
func TestInitChecksLaunchBinding(t *testing.T) {
	ctx := context.Background()
	good := &fakeTEE{tee: attestation.TEESim, bound: digestOf(t, docWithKBS, 32)}
	resp, err := hub(good, nil).Init(ctx, &agent.InitSandboxRequest{InitData: []byte(docWithKBS), RequireAttestation: true})
	require.NoError(t, err)
	require.Equal(t, "sim", resp.GetTee())

	tdx := &fakeTEE{tee: attestation.TEETDX, bound: digestOf(t, docWithKBS, 48)}
	_, err = hub(tdx, nil).Init(ctx, &agent.InitSandboxRequest{InitData: []byte(docWithKBS)})
	require.NoError(t, err)

	_, err = hub(good, nil).Init(ctx, &agent.InitSandboxRequest{InitData: []byte(docWithKBS + "# changed\n")})
	require.True(t, errdefs.IsPermissionDenied(err), "%v", err)
	require.ErrorContains(t, err, "does not match the launch-bound digest (HOST_DATA")

	_, err = hub(tdx, nil).Init(ctx, &agent.InitSandboxRequest{})
	require.True(t, errdefs.IsPermissionDenied(err), "init-data removed after launch: %v", err)
	require.ErrorContains(t, err, "MRCONFIGID")

	zero := &fakeTEE{tee: attestation.TEESim, bound: make([]byte, 32)}
	_, err = hub(zero, nil).Init(ctx, &agent.InitSandboxRequest{})
	require.NoError(t, err, "no init-data and a zero binding agree")

	h := hub(good, nil)
	_, err = h.Init(ctx, &agent.InitSandboxRequest{InitData: []byte(docWithKBS)})
	require.NoError(t, err)
	_, err = h.Init(ctx, &agent.InitSandboxRequest{InitData: []byte(docWithKBS)})
	require.True(t, errdefs.IsFailedPrecondition(err), "init-data is set once")
}

// TestInitRequiredAttestation: a confidential runtime needs a TEE and a KBS.
func TestInitRequiredAttestation(t *testing.T) {
	ctx := context.Background()
	_, err := hub(nil, attester.ErrNoTEE).Init(ctx, &agent.InitSandboxRequest{InitData: []byte(docWithKBS), RequireAttestation: true})
	require.True(t, errdefs.IsFailedPrecondition(err))
	require.ErrorContains(t, err, "no TEE to attest with")

	bound := &fakeTEE{tee: attestation.TEESNP, bound: digestOf(t, docWithoutKBS, 32)}
	_, err = hub(bound, nil).Init(ctx, &agent.InitSandboxRequest{InitData: []byte(docWithoutKBS), RequireAttestation: true})
	require.True(t, errdefs.IsFailedPrecondition(err))
	require.ErrorContains(t, err, "names no KBS")

	_, err = hub(nil, attester.ErrNoTEE).Init(ctx, &agent.InitSandboxRequest{InitData: []byte("version = \"9\"")})
	require.True(t, errdefs.IsInvalidArgument(err))
}

// TestPlainGuestPullAndSecrets: without a KBS, pulls pass through unless
// attestation is required, and sealed secrets are refused by name.
func TestPlainGuestPullAndSecrets(t *testing.T) {
	ctx := context.Background()
	h := hub(nil, attester.ErrNoTEE)
	_, err := h.Init(ctx, &agent.InitSandboxRequest{InitData: []byte(docWithoutKBS)})
	require.NoError(t, err)
	req := &image.Request{Reference: "r/x:1"}
	require.NoError(t, h.PreparePull(ctx, req))
	require.Nil(t, req.Decrypt)

	env, err := h.UnsealEnv(ctx, []string{"A=1", "B=plain"})
	require.NoError(t, err)
	require.Equal(t, []string{"A=1", "B=plain"}, env)
	_, err = h.UnsealEnv(ctx, []string{"A=1", "DB=sealed.eyJ9.eyJ9.c2ln"})
	require.True(t, errdefs.IsFailedPrecondition(err))
	require.ErrorContains(t, err, "environment variable DB")
	require.NotContains(t, err.Error(), "eyJ9", "the sealed value is not echoed")

	strict := hub(nil, attester.ErrNoTEE)
	strict.require = true
	require.ErrorContains(t, strict.PreparePull(ctx, &image.Request{Reference: "r/x:1"}), "only after attestation")
}

// TestEventsQueueDropsOldest: events wait for the host; when nobody reads,
// the oldest are dropped rather than blocking attestation.
func TestEventsQueueDropsOldest(t *testing.T) {
	h := hub(nil, attester.ErrNoTEE)
	for i := 1; i <= eventBuffer+5; i++ {
		h.push(aa.Event{Phase: aa.PhaseFailed, Attempt: i, Duration: time.Millisecond})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ev, err := h.NextEvent(ctx)
	require.NoError(t, err)
	require.Equal(t, int32(6), ev.GetAttempt())
	require.Equal(t, "failed", ev.GetPhase())
	require.Equal(t, int64(time.Millisecond), ev.GetDurationNs())

	empty := hub(nil, attester.ErrNoTEE)
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	_, err = empty.NextEvent(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

// TestKBSDialUsesRewritesAndOptionsDial: the attestation agent reaches the
// KBS through InitSandbox's dial rewrites and Options.Dial, which is how a
// KBS on the host's loopback is reached over an agent-channel forward.
func TestKBSDialUsesRewritesAndOptionsDial(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dialed := make(chan string, 16)
	h := New(Options{
		Detect: func() (attester.Attester, error) {
			return &fakeTEE{tee: attestation.TEESim, bound: digestOf(t, docWithKBS, 32)}, nil
		},
		Retry: aa.Retry{Attempts: 1},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed <- network + " " + addr
			return nil, errors.New("no KBS in this test")
		},
	})
	_, err := h.Init(ctx, &agent.InitSandboxRequest{
		InitData:              []byte(docWithKBS),
		RequireAttestation:    true,
		AttestationDeadlineNs: int64(time.Second),
		Endpoints:             map[string]string{"127.0.0.1:1": "agent-forward/0"},
	})
	require.NoError(t, err)
	err = h.PreparePull(ctx, &image.Request{Reference: "127.0.0.1:5000/x:y"})
	require.Error(t, err, "the KBS is unreachable")
	require.Equal(t, "tcp agent-forward/0", <-dialed)
}
