package agent

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/cofferhq/coffer/guest/image"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// pullImage pulls into <bundle>/rootfs of a container not yet created.
func (a *Agent) pullImage(ctx context.Context, req *agent.PullImageRequest) (*agent.PullImageResponse, error) {
	id := req.GetContainerId()
	if err := validateID("container_id", id); err != nil {
		return nil, err
	}
	if req.GetReference() == "" {
		return nil, fmt.Errorf("pull image for container %q: reference is empty: %w", id, errdefs.ErrInvalidArgument)
	}
	if err := a.reserve(id, "pull image"); err != nil {
		return nil, err
	}
	defer a.unreserve(id)
	bundle := a.bundleDir(id)
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return nil, fmt.Errorf("pull image for container %q: create bundle directory: %w", id, err)
	}
	reg := req.GetRegistry()
	ireq := image.Request{
		Reference:    req.GetReference(),
		Digest:       req.GetDigest(),
		LayerDigests: req.GetLayerDigests(),
		Platform:     req.GetPlatform(),
		Registry: image.RegistryConfig{
			Insecure:  reg.GetInsecure(),
			CAPEM:     reg.GetCaPem(),
			Endpoints: reg.GetEndpoints(),
			Dial:      a.opts.Dial,
		},
	}
	if a.opts.Confidential != nil {
		if err := a.opts.Confidential.PreparePull(ctx, &ireq); err != nil {
			return nil, fmt.Errorf("pull image for container %q: %w", id, err)
		}
	}
	res, err := a.opts.Puller.Pull(ctx, ireq, filepath.Join(bundle, "rootfs"))
	if err != nil {
		return nil, fmt.Errorf("pull image for container %q: %w", id, err)
	}
	a.log.WithField("container_id", id).WithField("manifest", res.ManifestDigest).
		WithField("bytes", res.BytesFetched).WithField("duration", res.Duration).Info("image pulled")
	return &agent.PullImageResponse{
		ManifestDigest: res.ManifestDigest,
		LayerDigests:   res.LayerDigests,
		BytesFetched:   res.BytesFetched,
		DurationNs:     res.Duration.Nanoseconds(),
		ImageConfig:    res.ConfigJSON,
	}, nil
}

// signalProcess signals the init process with runc kill (every process of
// the container when all is set) or an exec process with kill(2).
func (a *Agent) signalProcess(ctx context.Context, req *agent.SignalProcessRequest) error {
	id, execID, sig := req.GetContainerId(), req.GetExecId(), req.GetSignal()
	if err := validateIDs(id, execID); err != nil {
		return err
	}
	if sig == 0 || sig > 64 {
		return fmt.Errorf("signal %d is invalid: want 1-64: %w", sig, errdefs.ErrInvalidArgument)
	}
	p, err := a.getProcess(id, execID)
	if err != nil {
		return fmt.Errorf("signal %d: %w", sig, err)
	}
	if execID == "" {
		if p.hasExited() && !req.GetAll() {
			return fmt.Errorf("signal %d to container %q: init process already exited: %w", sig, id, errdefs.ErrNotFound)
		}
		err := a.runcCall(p.c.bundle, "runc kill", func(r *runc.Runc) error {
			return r.Kill(ctx, id, int(sig), &runc.KillOpts{All: req.GetAll()})
		})
		if err != nil {
			return fmt.Errorf("signal %d to container %q: %w", sig, id, killError(err))
		}
		return nil
	}
	// p.mu keeps setExited out while the signal is sent, so an exited
	// (reaped) PID is never signalled.
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == stateStopped {
		return fmt.Errorf("signal %d to exec %q of container %q: process already exited: %w", sig, execID, id, errdefs.ErrNotFound)
	}
	if err := unix.Kill(p.pid, unix.Signal(sig)); err != nil {
		return fmt.Errorf("signal %d to exec %q of container %q (pid %d): %w", sig, execID, id, p.pid, killError(err))
	}
	return nil
}

// waitProcess waits for exit and complete output.
func (a *Agent) waitProcess(ctx context.Context, id, execID string) (*agent.WaitProcessResponse, error) {
	if err := validateIDs(id, execID); err != nil {
		return nil, err
	}
	p, err := a.getProcess(id, execID)
	if err != nil {
		return nil, fmt.Errorf("wait: %w", err)
	}
	status, at, err := p.wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("wait for container %q exec %q: %w", id, execID, err)
	}
	return &agent.WaitProcessResponse{ExitStatus: uint32(status), ExitedAt: timestamp(at)}, nil
}

func (a *Agent) closeStdin(id, execID string) error {
	if err := validateIDs(id, execID); err != nil {
		return err
	}
	p, err := a.getProcess(id, execID)
	if err != nil {
		return fmt.Errorf("close stdin: %w", err)
	}
	p.io.closeStdin()
	return nil
}

func (a *Agent) resizeTTY(req *agent.ResizeTTYRequest) error {
	id, execID := req.GetContainerId(), req.GetExecId()
	if err := validateIDs(id, execID); err != nil {
		return err
	}
	w, h := req.GetWidth(), req.GetHeight()
	if w > math.MaxUint16 || h > math.MaxUint16 {
		return fmt.Errorf("resize terminal to %dx%d: want at most %d in each dimension: %w", w, h, math.MaxUint16, errdefs.ErrInvalidArgument)
	}
	p, err := a.getProcess(id, execID)
	if err != nil {
		return fmt.Errorf("resize terminal: %w", err)
	}
	if err := p.io.resize(uint16(w), uint16(h)); err != nil {
		return fmt.Errorf("resize terminal of container %q exec %q: %w", id, execID, err)
	}
	return nil
}

// listPids lists the container's PIDs (runc ps), naming exec processes.
func (a *Agent) listPids(ctx context.Context, id string) (*agent.ListPidsResponse, error) {
	if err := validateID("container_id", id); err != nil {
		return nil, err
	}
	c, err := a.getContainer(id)
	if err != nil {
		return nil, fmt.Errorf("list pids: %w", err)
	}
	var pids []int
	err = a.runcCall(c.bundle, "runc ps", func(r *runc.Runc) error {
		var err error
		pids, err = r.Ps(ctx, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list pids of container %q: %w", id, err)
	}
	execOf := make(map[int]string)
	c.mu.Lock()
	for execID, p := range c.execs {
		if p != nil && !p.hasExited() {
			execOf[p.getPID()] = execID
		}
	}
	c.mu.Unlock()
	resp := &agent.ListPidsResponse{}
	for _, pid := range pids {
		resp.Processes = append(resp.Processes, &agent.ProcessInfo{Pid: uint32(pid), ExecId: execOf[pid]})
	}
	return resp, nil
}

// shutdown kills every container, waits up to shutdownWait for them to
// exit, then schedules PowerOff.
func (a *Agent) shutdown(ctx context.Context) error {
	first := false
	a.shutdownOnce.Do(func() { first = true })
	if !first {
		return fmt.Errorf("shutdown: already shutting down: %w", errdefs.ErrFailedPrecondition)
	}
	a.log.Info("shutdown: killing all containers")
	a.mu.Lock()
	var cs []*container
	for _, c := range a.containers {
		if c != nil {
			cs = append(cs, c)
		}
	}
	a.mu.Unlock()
	for _, c := range cs {
		if err := a.killAll(ctx, c, unix.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
			a.log.WithField("container_id", c.id).WithError(err).Warn("shutdown: kill container")
		}
	}
	deadline := time.Now().Add(shutdownWait)
	for _, c := range cs {
		if !c.init.waitTimeout(time.Until(deadline)) {
			a.log.WithField("container_id", c.id).Warnf("shutdown: container still running %v after SIGKILL; powering off anyway", shutdownWait)
		}
	}
	a.log.Info("shutdown: powering off")
	go func() {
		time.Sleep(powerOffDelay)
		a.opts.PowerOff()
	}()
	return nil
}
