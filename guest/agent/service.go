package agent

import (
	"context"
	"os"
	"strconv"
	"strings"
	"time"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// service is the ttrpc edge of the Agent: it converts errdefs errors to
// gRPC status errors (errgrpc.ToGRPC) so that the shim can map them back
// with errgrpc.ToNative.
type service struct {
	a *Agent
}

var _ agent.TTRPCAgentService = (*service)(nil)

// apiVersion is the agent API version served.
const apiVersion = "v1"

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// Health reports the agent version, API version and start time (when New
// ran).
func (s *service) Health(context.Context, *agent.HealthRequest) (*agent.HealthResponse, error) {
	return &agent.HealthResponse{Version: s.a.opts.Version, Api: apiVersion, StartedAt: timestamp(s.a.started)}, nil
}

// Diagnostics returns the log tail, memory, mounts, kernel and container
// states; unreadable /proc files are reported in place of their contents.
func (s *service) Diagnostics(context.Context, *agent.DiagnosticsRequest) (*agent.DiagnosticsResponse, error) {
	a := s.a
	resp := &agent.DiagnosticsResponse{
		Log:        a.ring.snapshot(),
		Meminfo:    readOrError("/proc/meminfo"),
		Mountinfo:  readOrError("/proc/self/mountinfo"),
		Containers: make(map[string]string),
	}
	resp.AgentRssBytes, resp.AgentPeakRssBytes = selfRSS()
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		resp.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	a.mu.Lock()
	cs := make([]*container, 0, len(a.containers))
	for _, c := range a.containers {
		if c != nil {
			cs = append(cs, c)
		}
	}
	a.mu.Unlock()
	for _, c := range cs {
		resp.Containers[c.id] = string(c.init.getState())
	}
	return resp, nil
}

func readOrError(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "error: " + err.Error()
	}
	return string(b)
}

// InitSandbox takes the pod's init-data.
func (s *service) InitSandbox(ctx context.Context, req *agent.InitSandboxRequest) (*agent.InitSandboxResponse, error) {
	resp, err := s.a.initSandbox(ctx, req)
	return resp, errgrpc.ToGRPC(err)
}

// SetPolicy replaces the agent policy with the init-data's one.
func (s *service) SetPolicy(ctx context.Context, req *agent.SetPolicyRequest) (*agent.SetPolicyResponse, error) {
	return &agent.SetPolicyResponse{}, errgrpc.ToGRPC(s.a.setPolicy(ctx, req.GetPolicy()))
}

// GetAttestationEvent blocks for the next attestation event.
func (s *service) GetAttestationEvent(ctx context.Context, _ *agent.GetAttestationEventRequest) (*agent.AttestationEvent, error) {
	ev, err := s.a.nextAttestationEvent(ctx)
	return ev, errgrpc.ToGRPC(err)
}

// PullImage pulls an image into a container's rootfs.
func (s *service) PullImage(ctx context.Context, req *agent.PullImageRequest) (*agent.PullImageResponse, error) {
	resp, err := s.a.pullImage(ctx, req)
	return resp, errgrpc.ToGRPC(err)
}

// CreateContainer runs runc create.
func (s *service) CreateContainer(ctx context.Context, req *agent.CreateContainerRequest) (*agent.CreateContainerResponse, error) {
	pid, err := s.a.createContainer(ctx, req)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &agent.CreateContainerResponse{Pid: pid}, nil
}

// StartContainer runs runc start.
func (s *service) StartContainer(ctx context.Context, req *agent.StartContainerRequest) (*agent.StartContainerResponse, error) {
	pid, err := s.a.startContainer(ctx, req.GetContainerId())
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &agent.StartContainerResponse{Pid: pid}, nil
}

// ExecProcess runs runc exec --detach.
func (s *service) ExecProcess(ctx context.Context, req *agent.ExecProcessRequest) (*agent.ExecProcessResponse, error) {
	pid, err := s.a.execProcess(ctx, req)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &agent.ExecProcessResponse{Pid: pid}, nil
}

// SignalProcess signals an init or exec process.
func (s *service) SignalProcess(ctx context.Context, req *agent.SignalProcessRequest) (*agent.SignalProcessResponse, error) {
	if err := s.a.signalProcess(ctx, req); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &agent.SignalProcessResponse{}, nil
}

// WaitProcess waits for exit and complete output.
func (s *service) WaitProcess(ctx context.Context, req *agent.WaitProcessRequest) (*agent.WaitProcessResponse, error) {
	resp, err := s.a.waitProcess(ctx, req.GetContainerId(), req.GetExecId())
	return resp, errgrpc.ToGRPC(err)
}

// CloseStdin closes a process's stdin.
func (s *service) CloseStdin(_ context.Context, req *agent.CloseStdinRequest) (*agent.CloseStdinResponse, error) {
	if err := s.a.closeStdin(req.GetContainerId(), req.GetExecId()); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &agent.CloseStdinResponse{}, nil
}

// ResizeTTY sets a terminal's window size.
func (s *service) ResizeTTY(_ context.Context, req *agent.ResizeTTYRequest) (*agent.ResizeTTYResponse, error) {
	if err := s.a.resizeTTY(req); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &agent.ResizeTTYResponse{}, nil
}

// Stats returns cgroup v2 metrics.
func (s *service) Stats(_ context.Context, req *agent.StatsRequest) (*agent.StatsResponse, error) {
	m, err := s.a.stats(req.GetContainerId())
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &agent.StatsResponse{Metrics: m}, nil
}

// ListPids lists a container's PIDs.
func (s *service) ListPids(ctx context.Context, req *agent.ListPidsRequest) (*agent.ListPidsResponse, error) {
	resp, err := s.a.listPids(ctx, req.GetContainerId())
	return resp, errgrpc.ToGRPC(err)
}

// RemoveContainer removes a container or one exec.
func (s *service) RemoveContainer(ctx context.Context, req *agent.RemoveContainerRequest) (*agent.RemoveContainerResponse, error) {
	if err := s.a.removeContainer(ctx, req.GetContainerId(), req.GetExecId()); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &agent.RemoveContainerResponse{}, nil
}

// GetOOMEvent blocks until an OOM kill.
func (s *service) GetOOMEvent(ctx context.Context, _ *agent.GetOOMEventRequest) (*agent.GetOOMEventResponse, error) {
	id, err := s.a.oomEvent(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &agent.GetOOMEventResponse{ContainerId: id}, nil
}

// Shutdown kills all containers and powers off.
func (s *service) Shutdown(ctx context.Context, _ *agent.ShutdownRequest) (*agent.ShutdownResponse, error) {
	if err := s.a.shutdown(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &agent.ShutdownResponse{}, nil
}

// selfRSS returns VmRSS and VmHWM of this process in bytes, 0 when
// /proc/self/status cannot be read.
func selfRSS() (rss, peak uint64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch key {
		case "VmRSS":
			rss = n * 1024
		case "VmHWM":
			peak = n * 1024
		}
	}
	return rss, peak
}
