package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	cshim "github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	ccevents "github.com/cofferhq/coffer/api/events/v1"
)

// Version is the shim's version, reported by Connect and Info.
const Version = "v0.1.0"

// stdinGrace bounds how long CloseIO waits for data containerd already
// wrote to the stdin FIFO to reach the guest.
const stdinGrace = 2 * time.Second

// service implements containerd's task API v3 (containerd.task.v3.Task) for
// one pod: every container it serves runs in the same VM (the sandbox),
// which the first Create boots and the last Delete stops.
//
// Lock rules: bootMu serialises Creates up to the moment the sandbox
// exists, so concurrent Creates share one VM; it is taken before mu. mu
// guards cfg, sb and containers and is only held for map and field access,
// never across an agent RPC, so a long in-guest pull does not block State
// or Kill of other containers. A process's mutable state is guarded by its
// own mu. A nil entry in containers reserves an ID while its Create runs.
type service struct {
	ctx         context.Context
	publisher   cshim.Publisher
	shutdown    shutdown.Service
	grpcAddress string
	events      chan event
	// stopEvents is closed on shutdown; forwardEvents then drains events
	// and closes eventsDrained.
	stopEvents    chan struct{}
	eventsDrained chan struct{}

	bootMu     sync.Mutex
	mu         sync.Mutex
	cfg        *Config
	sb         *sandbox
	containers map[string]*container
}

type event struct {
	topic string
	msg   any
}

// container is one containerd task: its init process and its execs.
type container struct {
	id     string
	bundle string
	image  imageRef
	init   *process
	execs  map[string]*process
	// pause marks a CRI pod's sandbox container: the VM is the sandbox,
	// and its "process" lives only in the shim (see isPodSandbox).
	pause bool
}

// process is one process in the guest (a container's init or an exec).
type process struct {
	containerID string
	execID      string
	stdio       stdioPaths
	execSpec    []byte // OCI process JSON, exec processes only

	mu         sync.Mutex
	pid        uint32
	status     task.Status
	exitStatus uint32
	exitedAt   time.Time
	io         *processIO
	exited     chan struct{}
}

// newService returns the task service; the shim plugin registers it.
func newService(ctx context.Context, publisher cshim.Publisher, sd shutdown.Service, grpcAddress string) *service {
	s := &service{
		ctx:           ctx,
		publisher:     publisher,
		shutdown:      sd,
		grpcAddress:   grpcAddress,
		events:        make(chan event, 128),
		stopEvents:    make(chan struct{}),
		eventsDrained: make(chan struct{}),
		containers:    make(map[string]*container),
	}
	go s.forwardEvents()
	// The last events (a /tasks/delete just before containerd calls
	// Shutdown) must reach containerd before the shim exits.
	sd.RegisterCallback(func(ctx context.Context) error {
		close(s.stopEvents)
		select {
		case <-s.eventsDrained:
		case <-time.After(eventDrainTimeout):
			log.G(s.ctx).Warn("shutdown: event queue not drained in time; the last task events may be lost")
		}
		return nil
	})
	sd.RegisterCallback(func(ctx context.Context) error {
		s.mu.Lock()
		sb := s.sb
		s.sb = nil
		s.mu.Unlock()
		if sb != nil {
			return sb.stop(ctx)
		}
		return nil
	})
	return s
}

// RegisterTTRPC registers the task service on the shim's ttrpc server.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

func (s *service) send(topic string, msg any) { s.events <- event{topic, msg} }

// eventDrainTimeout bounds how long shutdown waits for queued events to
// be published; the shim's main gives shutdown 5 s in all.
const eventDrainTimeout = 3 * time.Second

// forwardEvents publishes events to containerd in the order they were
// sent. On shutdown it publishes what is still queued, then returns.
func (s *service) forwardEvents() {
	ns, _ := namespaces.Namespace(s.ctx)
	ctx := namespaces.WithNamespace(context.Background(), ns)
	publish := func(e event) {
		if err := s.publisher.Publish(ctx, e.topic, e.msg); err != nil {
			log.G(s.ctx).WithError(err).WithField("topic", e.topic).Error("publish event")
		}
	}
	defer close(s.eventsDrained)
	for {
		select {
		case e := <-s.events:
			publish(e)
		case <-s.stopEvents:
			for {
				select {
				case e := <-s.events:
					publish(e)
				default:
					return
				}
			}
		}
	}
}

// configFor loads the shim config named by the runtime options, once.
func (s *service) configFor(opts *ptypes.Any) (*Config, error) {
	if s.cfg != nil {
		return s.cfg, nil
	}
	var path string
	if opts != nil && opts.GetValue() != nil {
		v, err := typeurl.UnmarshalAny(opts)
		if err != nil {
			return nil, fmt.Errorf("decode runtime options: %w", err)
		}
		if o, ok := v.(*runtimeoptions.Options); ok {
			path = o.ConfigPath
		}
	}
	if path == "" {
		path = os.Getenv("COFFER_SHIM_CONFIG")
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		return nil, err
	}
	s.cfg = cfg
	return cfg, nil
}

// Create boots the sandbox VM if this is the pod's first container, pulls
// the image inside the guest, and creates the container there.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	s.mu.Lock()
	if _, ok := s.containers[r.ID]; ok {
		s.mu.Unlock()
		return nil, errgrpc.ToGRPCf(errdefs.ErrAlreadyExists, "container %s", r.ID)
	}
	s.containers[r.ID] = nil
	cfg, err := s.configFor(r.Options)
	s.mu.Unlock()
	var sb *sandbox
	defer func() {
		if retErr == nil {
			return
		}
		s.mu.Lock()
		delete(s.containers, r.ID)
		var stop *sandbox
		if len(s.containers) == 0 && s.sb != nil {
			stop, s.sb = s.sb, nil
		}
		s.mu.Unlock()
		if stop != nil {
			if err := stop.stop(context.WithoutCancel(ctx)); err != nil {
				log.G(ctx).WithError(err).Warn("stop sandbox after failed create")
			}
		}
	}()
	if err != nil {
		return nil, toGRPC(fmt.Errorf("create %s: %w", r.ID, err))
	}
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, toGRPC(err)
	}
	gspec, dropped, err := guestSpec(spec)
	if err != nil {
		return nil, toGRPC(fmt.Errorf("create %s: %w: %w", r.ID, err, errdefs.ErrInvalidArgument))
	}
	if len(dropped) > 0 {
		log.G(ctx).WithField("mounts", dropped).Warn("host mounts are not available inside the confidential VM and were dropped")
	}
	idata, err := loadInitData(cfg, spec)
	if err != nil {
		return nil, toGRPC(fmt.Errorf("create %s: %w", r.ID, err))
	}
	if isPodSandbox(spec) {
		return s.createPause(ctx, cfg, r, spec, idata)
	}
	ref, err := s.containerImage(ctx, cfg, r, spec)
	if err != nil {
		return nil, toGRPC(fmt.Errorf("create %s: %w", r.ID, err))
	}
	if sb, err = s.ensureSandbox(ctx, cfg, sandboxID(r.ID, spec), idata, podOptionsFor(cfg, spec)); err != nil {
		return nil, toGRPC(fmt.Errorf("create %s: %w", r.ID, err))
	}

	pullCtx, cancel := context.WithTimeout(ctx, time.Duration(cfg.Agent.PullTimeout))
	defer cancel()
	sb.attesting.set(r.ID)
	if _, err := sb.pull(pullCtx, r.ID, ref, cfg); err != nil {
		sb.removeContainer(ctx, r.ID)
		return nil, toGRPC(fmt.Errorf("create %s: %w", r.ID, err))
	}

	specJSON, err := json.Marshal(gspec)
	if err != nil {
		return nil, toGRPC(err)
	}
	p := &process{
		containerID: r.ID,
		stdio:       stdioPaths{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		status:      task.Status_CREATED,
		exited:      make(chan struct{}),
	}
	pio, err := openProcessIO(ctx, sb.dial, r.ID, "", p.stdio)
	if err != nil {
		sb.removeContainer(ctx, r.ID)
		return nil, toGRPC(fmt.Errorf("create %s: %w", r.ID, err))
	}
	resp, err := sb.agent.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: r.ID, OciSpec: specJSON, Stdio: pio.spec})
	if err != nil {
		pio.Close()
		sb.removeContainer(ctx, r.ID)
		return nil, toGRPC(fmt.Errorf("create %s in the guest: %w", r.ID, errgrpc.ToNative(err)))
	}
	p.pid = resp.GetPid()
	p.io = pio
	s.mu.Lock()
	s.containers[r.ID] = &container{id: r.ID, bundle: r.Bundle, image: ref, init: p, execs: map[string]*process{}}
	s.mu.Unlock()
	s.send(runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Pid:         p.pid,
	})
	return &taskAPI.CreateTaskResponse{Pid: p.pid}, nil
}

// containerImage is the image the guest pulls for a new container (see
// rootfsImage). A rootfs a host snapshotter unpacked is refused unless
// image.force_guest_pull is set; then the guest pulls the image by name
// and a /cc/warning event says so.
func (s *service) containerImage(ctx context.Context, cfg *Config, r *taskAPI.CreateTaskRequest, spec *specs.Spec) (imageRef, error) {
	ref, err := rootfsImage(r.Rootfs, spec)
	if err == nil {
		return s.containerOwnImage(ctx, r.ID, spec, ref), nil
	}
	if !errors.Is(err, errHostRootfs) {
		return ref, err
	}
	if !cfg.Image.ForceGuestPull {
		return ref, fmt.Errorf("%w; a confidential container's layers must only be fetched inside the guest: "+
			"pull the image with `ctr image pull --snapshotter cc` (or `ccctl image pull`) and run it with `--snapshotter cc`, "+
			"or set image.force_guest_pull = true in the shim config to pull it in the guest by name anyway: %w", err, errdefs.ErrFailedPrecondition)
	}
	ref, rerr := resolveImage(ctx, s.grpcAddress, r.ID, spec)
	if rerr != nil {
		return ref, rerr
	}
	msg := fmt.Sprintf("%v; image.force_guest_pull is set, so the guest pulls %s by name; the host's unpacked copy is not used but stays on the host", err, ref)
	log.G(ctx).WithField("container", r.ID).Warn(msg)
	s.send(ccevents.TopicWarning, &ccevents.Warning{ContainerId: r.ID, Reason: "ForceGuestPull", Message: msg})
	return ref, nil
}

// containerOwnImage returns the container's own image when it differs
// from the one the guest-pull payload names. cc-snapshotter keys
// snapshots by chain ID, which depends only on the uncompressed layer
// digests, so two images with the same layers (a plain image and its
// encrypted or re-signed copy) share one snapshot chain, and the payload
// names whichever was pulled first. The guest must pull the image the
// container was created from: its name and digest come from containerd.
func (s *service) containerOwnImage(ctx context.Context, id string, spec *specs.Spec, payload imageRef) imageRef {
	own, err := resolveImage(ctx, s.grpcAddress, id, spec)
	if err != nil || own.Name == "" {
		if err != nil {
			log.G(ctx).WithError(err).Debug("look up the container's image; using the snapshot's")
		}
		return payload
	}
	if own.Name == payload.Name && (own.Digest == "" || own.Digest == payload.Digest) {
		return payload
	}
	log.G(ctx).WithFields(log.Fields{"container": id, "snapshot_image": payload.String(), "image": own.String()}).
		Info("the snapshot chain was unpacked for another image with the same layers; the guest pulls the container's own image")
	return own
}

// ensureSandbox returns the pod's VM, booting it on first use.
func (s *service) ensureSandbox(ctx context.Context, cfg *Config, id string, idata *podInitData, pod podOptions) (*sandbox, error) {
	s.bootMu.Lock()
	defer s.bootMu.Unlock()
	if sb := s.sandbox(); sb != nil {
		return sb, nil
	}
	ns, _ := namespaces.Namespace(ctx)
	sb, err := startSandbox(s.ctx, cfg, ns, id, idata, pod)
	if err != nil {
		return nil, err
	}
	if sb.netWarning != "" {
		s.warn(ctx, id, "PodNetworkUnavailable", sb.netWarning)
	}
	go s.watchAttestation(sb)
	s.mu.Lock()
	s.sb = sb
	s.mu.Unlock()
	go s.watchOOM(sb)
	go s.watchSandbox(sb)
	return sb, nil
}

// lookup returns the container and the process named by id and execID.
func (s *service) lookup(id, execID string) (*container, *process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok || c == nil {
		return nil, nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if execID == "" {
		return c, c.init, nil
	}
	p, ok := c.execs[execID]
	if !ok {
		return nil, nil, fmt.Errorf("exec %s in container %s: %w", execID, id, errdefs.ErrNotFound)
	}
	return c, p, nil
}

// Start starts a created container, or starts a process added by Exec.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, toGRPC(err)
	}
	sb := s.sandbox()
	if sb == nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "start %s: the VM is not running", r.ID)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status != task.Status_CREATED {
		return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "start %s: process is %s, not created", procName(r.ID, r.ExecID), p.status)
	}
	if c.pause && r.ExecID == "" {
		p.status = task.Status_RUNNING
		s.send(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: r.ID, Pid: p.pid})
		return &taskAPI.StartResponse{Pid: p.pid}, nil
	}
	if r.ExecID == "" {
		resp, err := sb.agent.StartContainer(ctx, &agent.StartContainerRequest{ContainerId: r.ID})
		if err != nil {
			return nil, toGRPC(fmt.Errorf("start %s in the guest: %w", r.ID, errgrpc.ToNative(err)))
		}
		p.pid = resp.GetPid()
		p.status = task.Status_RUNNING
		go s.waitProcess(sb, p)
		s.send(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: r.ID, Pid: p.pid})
		return &taskAPI.StartResponse{Pid: p.pid}, nil
	}
	pio, err := openProcessIO(ctx, sb.dial, r.ID, r.ExecID, p.stdio)
	if err != nil {
		return nil, toGRPC(fmt.Errorf("start exec %s: %w", r.ExecID, err))
	}
	resp, err := sb.agent.ExecProcess(ctx, &agent.ExecProcessRequest{ContainerId: r.ID, ExecId: r.ExecID, Process: p.execSpec, Stdio: pio.spec})
	if err != nil {
		pio.Close()
		return nil, toGRPC(fmt.Errorf("exec %s in container %s: %w", r.ExecID, r.ID, errgrpc.ToNative(err)))
	}
	p.io = pio
	p.pid = resp.GetPid()
	p.status = task.Status_RUNNING
	go s.waitProcess(sb, p)
	s.send(runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: r.ID, ExecID: r.ExecID, Pid: p.pid})
	return &taskAPI.StartResponse{Pid: p.pid}, nil
}

// waitProcess waits for a process to exit in the guest, then for its
// output to drain, and publishes the exit.
func (s *service) waitProcess(sb *sandbox, p *process) {
	ctx := s.ctx
	resp, err := sb.agent.WaitProcess(ctx, &agent.WaitProcessRequest{ContainerId: p.containerID, ExecId: p.execID})
	status := uint32(255)
	exitedAt := time.Now()
	if err != nil {
		log.G(ctx).WithError(err).WithField("process", procName(p.containerID, p.execID)).Error("wait for process in the guest failed; reporting exit status 255")
	} else {
		status = resp.GetExitStatus()
		if t := resp.GetExitedAt(); t != nil {
			exitedAt = t.AsTime()
		}
	}
	if p.io != nil {
		drainCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := p.io.waitOutput(drainCtx); err != nil {
			log.G(ctx).WithError(err).Warn("process output did not drain")
		}
		cancel()
	}
	p.mu.Lock()
	p.status = task.Status_STOPPED
	p.exitStatus = status
	p.exitedAt = exitedAt
	pid := p.pid
	close(p.exited)
	p.mu.Unlock()
	s.send(runtime.TaskExitEventTopic, &eventstypes.TaskExit{
		ContainerID: p.containerID,
		ID:          procID(p),
		Pid:         pid,
		ExitStatus:  status,
		ExitedAt:    protobuf.ToTimestamp(exitedAt),
	})
}

func procID(p *process) string {
	if p.execID != "" {
		return p.execID
	}
	return p.containerID
}

func procName(id, execID string) string {
	if execID == "" {
		return "container " + id
	}
	return fmt.Sprintf("exec %s in container %s", execID, id)
}

func (s *service) sandbox() *sandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sb
}

// Delete removes an exited process, or a whole container once its init
// exited. Deleting the pod's last container stops the VM.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, toGRPC(err)
	}
	p.mu.Lock()
	status, pid := p.status, p.pid
	p.mu.Unlock()
	if status == task.Status_RUNNING {
		return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "cannot delete %s while it is running: kill it first", procName(r.ID, r.ExecID))
	}
	if sb := s.sandbox(); sb != nil && !c.pause {
		if _, err := sb.agent.RemoveContainer(ctx, &agent.RemoveContainerRequest{ContainerId: r.ID, ExecId: r.ExecID}); err != nil {
			log.G(ctx).WithError(err).Warn("remove in the guest failed")
		}
	}
	if p.io != nil {
		p.io.Close()
	}
	p.mu.Lock()
	resp := &taskAPI.DeleteResponse{Pid: pid, ExitStatus: p.exitStatus, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}
	p.mu.Unlock()

	s.mu.Lock()
	var stop *sandbox
	if r.ExecID != "" {
		delete(c.execs, r.ExecID)
	} else {
		delete(s.containers, r.ID)
		if len(s.containers) == 0 {
			stop, s.sb = s.sb, nil
		}
	}
	s.mu.Unlock()
	if stop != nil {
		if err := stop.stop(ctx); err != nil {
			log.G(ctx).WithError(err).Warn("stop the VM")
		}
	}
	if r.ExecID == "" {
		s.send(runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{
			ContainerID: r.ID, Pid: resp.Pid, ExitStatus: resp.ExitStatus, ExitedAt: resp.ExitedAt,
		})
	}
	return resp, nil
}

// Exec records a process to add to a running container; Start runs it.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	c, initp, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, toGRPC(err)
	}
	initp.mu.Lock()
	running := initp.status == task.Status_RUNNING
	initp.mu.Unlock()
	if !running {
		return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "exec in container %s: container is not running", r.ID)
	}
	if c.pause {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "exec in pod sandbox %s: the sandbox is the VM itself and has no process to exec into; exec into one of the pod's containers", r.ID)
	}
	if r.Spec == nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s: no process spec", r.ExecID)
	}
	var ps specs.Process
	if err := json.Unmarshal(r.Spec.GetValue(), &ps); err != nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s: process spec: %v", r.ExecID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := c.execs[r.ExecID]; ok {
		return nil, errgrpc.ToGRPCf(errdefs.ErrAlreadyExists, "exec %s in container %s", r.ExecID, r.ID)
	}
	c.execs[r.ExecID] = &process{
		containerID: r.ID,
		execID:      r.ExecID,
		stdio:       stdioPaths{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		execSpec:    r.Spec.GetValue(),
		status:      task.Status_CREATED,
		exited:      make(chan struct{}),
	}
	s.send(runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return &ptypes.Empty{}, nil
}

// State reports a process's status, PID and stdio.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, toGRPC(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return &taskAPI.StateResponse{
		ID:         r.ID,
		ExecID:     r.ExecID,
		Bundle:     c.bundle,
		Pid:        p.pid,
		Status:     p.status,
		Stdin:      p.stdio.Stdin,
		Stdout:     p.stdio.Stdout,
		Stderr:     p.stdio.Stderr,
		Terminal:   p.stdio.Terminal,
		ExitStatus: p.exitStatus,
		ExitedAt:   protobuf.ToTimestamp(p.exitedAt),
	}, nil
}

// Kill signals a process (or, with All, every process of the container).
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, toGRPC(err)
	}
	if c.pause {
		s.killPause(p, r.Signal)
		return &ptypes.Empty{}, nil
	}
	p.mu.Lock()
	status := p.status
	p.mu.Unlock()
	if status == task.Status_STOPPED {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "%s has already exited", procName(r.ID, r.ExecID))
	}
	sb := s.sandbox()
	if sb == nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "kill %s: the VM is not running", procName(r.ID, r.ExecID))
	}
	if _, err := sb.agent.SignalProcess(ctx, &agent.SignalProcessRequest{ContainerId: r.ID, ExecId: r.ExecID, Signal: r.Signal, All: r.All}); err != nil {
		return nil, toGRPC(fmt.Errorf("kill %s: %w", procName(r.ID, r.ExecID), errgrpc.ToNative(err)))
	}
	return &ptypes.Empty{}, nil
}

// Wait blocks until the process exits.
func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, toGRPC(err)
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, toGRPC(ctx.Err())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return &taskAPI.WaitResponse{ExitStatus: p.exitStatus, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}, nil
}

// Pids lists the guest PIDs of the container's processes.
func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	if c, p, err := s.lookup(r.ID, ""); err == nil && c.pause {
		p.mu.Lock()
		defer p.mu.Unlock()
		return &taskAPI.PidsResponse{Processes: []*task.ProcessInfo{{Pid: p.pid}}}, nil
	}
	sb, err := s.running(r.ID)
	if err != nil {
		return nil, toGRPC(err)
	}
	resp, err := sb.agent.ListPids(ctx, &agent.ListPidsRequest{ContainerId: r.ID})
	if err != nil {
		return nil, toGRPC(fmt.Errorf("pids of %s: %w", r.ID, errgrpc.ToNative(err)))
	}
	out := &taskAPI.PidsResponse{}
	for _, pi := range resp.GetProcesses() {
		out.Processes = append(out.Processes, &task.ProcessInfo{Pid: pi.GetPid()})
	}
	return out, nil
}

// running returns the sandbox when container id exists and the VM runs.
func (s *service) running(id string) (*sandbox, error) {
	if _, _, err := s.lookup(id, ""); err != nil {
		return nil, err
	}
	sb := s.sandbox()
	if sb == nil {
		return nil, fmt.Errorf("container %s: the VM is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	return sb, nil
}

// CloseIO closes a process's stdin.
func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, toGRPC(err)
	}
	if !r.Stdin {
		return &ptypes.Empty{}, nil
	}
	p.mu.Lock()
	pio := p.io
	p.mu.Unlock()
	if pio != nil {
		pio.closeStdin(stdinGrace)
	}
	if sb := s.sandbox(); sb != nil {
		if _, err := sb.agent.CloseStdin(ctx, &agent.CloseStdinRequest{ContainerId: r.ID, ExecId: r.ExecID}); err != nil {
			return nil, toGRPC(fmt.Errorf("close stdin of %s: %w", procName(r.ID, r.ExecID), errgrpc.ToNative(err)))
		}
	}
	return &ptypes.Empty{}, nil
}

// ResizePty sets a process's terminal size.
func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	sb, err := s.running(r.ID)
	if err != nil {
		return nil, toGRPC(err)
	}
	if _, err := sb.agent.ResizeTTY(ctx, &agent.ResizeTTYRequest{ContainerId: r.ID, ExecId: r.ExecID, Width: r.Width, Height: r.Height}); err != nil {
		return nil, toGRPC(fmt.Errorf("resize tty of %s: %w", procName(r.ID, r.ExecID), errgrpc.ToNative(err)))
	}
	return &ptypes.Empty{}, nil
}

// Stats returns the container's cgroup v2 metrics from the guest.
func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	if c, _, err := s.lookup(r.ID, ""); err == nil && c.pause {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "stats of pod sandbox %s: the sandbox is the VM, which has no cgroup of its own in the guest", r.ID)
	}
	sb, err := s.running(r.ID)
	if err != nil {
		return nil, toGRPC(err)
	}
	resp, err := sb.agent.Stats(ctx, &agent.StatsRequest{ContainerId: r.ID})
	if err != nil {
		return nil, toGRPC(fmt.Errorf("stats of %s: %w", r.ID, errgrpc.ToNative(err)))
	}
	return &taskAPI.StatsResponse{Stats: resp.GetMetrics()}, nil
}

// Connect reports the shim's PID and the container's guest PID.
func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	resp := &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), Version: Version}
	if _, p, err := s.lookup(r.ID, ""); err == nil {
		p.mu.Lock()
		resp.TaskPid = p.pid
		p.mu.Unlock()
	}
	return resp, nil
}

// Shutdown stops the shim once it serves no container.
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	n := len(s.containers)
	s.mu.Unlock()
	if n > 0 {
		return &ptypes.Empty{}, nil
	}
	s.shutdown.Shutdown()
	return &ptypes.Empty{}, nil
}

// Pause is not supported: a paused confidential VM is not yet defined.
func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "pause is not supported by the cc runtime (io.containerd.cc.v2)")
}

// Resume is not supported (see Pause).
func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "resume is not supported by the cc runtime (io.containerd.cc.v2)")
}

// Checkpoint is not supported: checkpointing would write guest memory,
// which must never leave the TEE, to the host.
func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "checkpoint is not supported by the cc runtime: guest memory never leaves the confidential VM")
}

// Update is not supported: resource changes need VM hotplug.
func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "update of a running task is not supported by the cc runtime")
}

// watchOOM publishes an OOM event for each OOM kill the guest reports.
func (s *service) watchOOM(sb *sandbox) {
	for {
		resp, err := sb.agent.GetOOMEvent(sb.ctx, &agent.GetOOMEventRequest{})
		if err != nil {
			if sb.ctx.Err() == nil {
				log.G(s.ctx).WithError(err).Debug("oom watch ended")
			}
			return
		}
		s.send(runtime.TaskOOMEventTopic, &eventstypes.TaskOOM{ContainerID: resp.GetContainerId()})
	}
}

// watchSandbox reports every process as exited when the VM dies under it.
func (s *service) watchSandbox(sb *sandbox) {
	select {
	case <-sb.ctx.Done():
		return
	case <-sb.vm.Exited():
	}
	log.G(s.ctx).WithError(sb.vm.ExitError()).Error("the VM exited unexpectedly")
	sb.closeAgent()
	s.mu.Lock()
	var pauses []*process
	for _, c := range s.containers {
		if c != nil && c.pause {
			pauses = append(pauses, c.init)
		}
	}
	s.mu.Unlock()
	for _, p := range pauses {
		s.exitPause(p, 255)
	}
}
