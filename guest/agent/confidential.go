package agent

import (
	"context"
	"crypto/sha512"
	"fmt"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/cofferhq/coffer/guest/image"
	"github.com/cofferhq/coffer/initdata"
	"github.com/containerd/errdefs"
)

// Confidential is the guest's trust machinery: init-data, attestation to
// the KBS, and the confidential data hub. guest/confidential implements it
// for cc-agent; a nil Options.Confidential is a plain guest that accepts
// no init-data and pulls without attestation.
type Confidential interface {
	// Init takes the pod's init-data (the InitSandbox RPC). It fails if the
	// init-data's digest is not the one the TEE bound at launch.
	Init(ctx context.Context, req *agent.InitSandboxRequest) (*agent.InitSandboxResponse, error)
	// PreparePull runs before each image pull: it attests when that is
	// required and has not happened, and completes req with the image
	// security policy and the layer decryption source.
	PreparePull(ctx context.Context, req *image.Request) error
	// UnsealEnv returns env with each sealed secret ("NAME=sealed.…")
	// replaced by its value from the KBS.
	UnsealEnv(ctx context.Context, env []string) ([]string, error)
	// NextEvent blocks until the next attestation event or ctx is done.
	NextEvent(ctx context.Context) (*agent.AttestationEvent, error)
}

// initSandbox passes InitSandbox to the Confidential part.
func (a *Agent) initSandbox(ctx context.Context, req *agent.InitSandboxRequest) (*agent.InitSandboxResponse, error) {
	if a.opts.Confidential == nil {
		if len(req.GetInitData()) > 0 || req.GetRequireAttestation() {
			return nil, fmt.Errorf("init sandbox: this guest has no attestation support (cc-agent built without it), so it cannot take init-data: %w", errdefs.ErrNotImplemented)
		}
		return &agent.InitSandboxResponse{}, nil
	}
	resp, err := a.opts.Confidential.Init(ctx, req)
	if err != nil {
		return nil, err
	}
	// The init-data passed the TEE binding check: its policy is the one
	// the KBS will see measured, so it replaces the built-in default.
	if raw := req.GetInitData(); len(raw) > 0 && a.opts.Policy != nil {
		doc, err := initdata.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("init sandbox: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		if text := doc.AgentPolicy(); text != "" {
			sum := sha512.Sum384([]byte(text))
			a.initPolicySHA384.Store(&sum)
			if err := a.opts.Policy.Install(ctx, text); err != nil {
				return nil, fmt.Errorf("init sandbox: init-data %s: %w", initdata.FilePolicy, err)
			}
			a.log.Info("agent policy from init-data installed")
		}
	}
	return resp, nil
}

// nextAttestationEvent blocks for the next attestation event.
func (a *Agent) nextAttestationEvent(ctx context.Context) (*agent.AttestationEvent, error) {
	if a.opts.Confidential == nil {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return a.opts.Confidential.NextEvent(ctx)
}

// unsealEnv replaces sealed secrets in env, if this is a confidential guest.
func (a *Agent) unsealEnv(ctx context.Context, env []string) ([]string, error) {
	if a.opts.Confidential == nil {
		return env, nil
	}
	return a.opts.Confidential.UnsealEnv(ctx, env)
}

// setPolicy replaces the agent policy if the current one allows it and
// the new one is the init-data's (policy.Engine.SetPolicy).
func (a *Agent) setPolicy(ctx context.Context, text string) error {
	if a.opts.Policy == nil {
		return fmt.Errorf("set policy: this agent enforces no policy: %w", errdefs.ErrNotImplemented)
	}
	var want []byte
	if sum := a.initPolicySHA384.Load(); sum != nil {
		want = sum[:]
	}
	return a.opts.Policy.SetPolicy(ctx, text, want)
}
