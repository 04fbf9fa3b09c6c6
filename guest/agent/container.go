package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// container is one runc container and its processes.
type container struct {
	id     string
	bundle string // <StateDir>/containers/<id>
	pidNS  bool   // the spec gives it its own PID namespace
	init   *process

	mu       sync.Mutex          // guards execs and removing
	execs    map[string]*process // nil value: exec ID reserved
	removing bool
}

func (a *Agent) bundleDir(id string) string {
	return filepath.Join(a.opts.StateDir, "containers", id)
}

// reserve claims a container ID for a create or a pull.
func (a *Agent) reserve(id, what string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.containers[id]; ok {
		if c == nil {
			return fmt.Errorf("container %q is busy with another pull or create: %w", id, errdefs.ErrFailedPrecondition)
		}
		return fmt.Errorf("%s: container %q already exists: %w", what, id, errdefs.ErrAlreadyExists)
	}
	a.containers[id] = nil
	return nil
}

// unreserve drops a reservation (never a created container).
func (a *Agent) unreserve(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.containers[id]; ok && c == nil {
		delete(a.containers, id)
	}
}

// getContainer returns the created container id, or an ErrNotFound error.
func (a *Agent) getContainer(id string) (*container, error) {
	a.mu.Lock()
	c := a.containers[id]
	a.mu.Unlock()
	if c == nil {
		return nil, fmt.Errorf("container %q was not created: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

// getProcess returns the init process (execID "") or an exec process.
func (a *Agent) getProcess(containerID, execID string) (*process, error) {
	c, err := a.getContainer(containerID)
	if err != nil {
		return nil, err
	}
	if execID == "" {
		return c.init, nil
	}
	c.mu.Lock()
	p := c.execs[execID]
	c.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("exec %q of container %q does not exist: %w", execID, containerID, errdefs.ErrNotFound)
	}
	return p, nil
}

// prepareSpec parses the host's OCI spec and points it at the guest: the
// rootfs from PullImage (writable), cgroup /coffer/<id>, and the terminal
// the host asked for.
func prepareSpec(id, rootfs string, raw []byte, terminal bool) (*specs.Spec, error) {
	var spec specs.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, fmt.Errorf("oci_spec is not an OCI runtime spec: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if spec.Process == nil {
		return nil, fmt.Errorf("oci_spec has no process: %w", errdefs.ErrInvalidArgument)
	}
	if len(spec.Process.Args) == 0 && spec.Process.CommandLine == "" {
		return nil, fmt.Errorf("oci_spec process.args is empty: %w", errdefs.ErrInvalidArgument)
	}
	spec.Root = &specs.Root{Path: rootfs, Readonly: false}
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	spec.Linux.CgroupsPath = cgroupPath(id)
	spec.Process.Terminal = terminal
	return &spec, nil
}

// cgroupPath is the cgroup of container id, relative to the cgroup root.
func cgroupPath(id string) string { return "/coffer/" + id }

func hasPIDNamespace(spec *specs.Spec) bool {
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace && ns.Path == "" {
			return true
		}
	}
	return false
}

// createContainer writes the bundle and runs runc create. The container is
// visible to other RPCs only once it fully exists.
func (a *Agent) createContainer(ctx context.Context, req *agent.CreateContainerRequest) (_ uint32, retErr error) {
	id := req.GetContainerId()
	if err := validateID("container_id", id); err != nil {
		return 0, err
	}
	sio := a.policyStdio(id, "", stdioFrom(req.GetStdio()))
	bundle := a.bundleDir(id)
	rootfs := filepath.Join(bundle, "rootfs")
	spec, err := prepareSpec(id, rootfs, req.GetOciSpec(), sio.terminal)
	if err != nil {
		return 0, fmt.Errorf("create container %q: %w", id, err)
	}
	if spec.Process.Env, err = a.unsealEnv(ctx, spec.Process.Env); err != nil {
		return 0, fmt.Errorf("create container %q: %w", id, err)
	}
	if err := a.reserve(id, "create"); err != nil {
		return 0, err
	}
	defer func() {
		if retErr != nil {
			a.unreserve(id)
		}
	}()
	if fi, err := os.Stat(rootfs); err != nil || !fi.IsDir() {
		return 0, fmt.Errorf("create container %q: no rootfs directory at %s: call PullImage first: %w", id, rootfs, errdefs.ErrFailedPrecondition)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return 0, fmt.Errorf("create container %q: encode config.json: %w", id, err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return 0, fmt.Errorf("create container %q: write config.json: %w", id, err)
	}

	c := &container{id: id, bundle: bundle, pidNS: hasPIDNamespace(spec), execs: make(map[string]*process)}
	pio, err := newProcIO(a.log.WithField("container_id", id), a.streams, id, "", sio)
	if err != nil {
		return 0, fmt.Errorf("create container %q: %w", id, err)
	}
	c.init = newProcess(c, "", pio)

	sub := a.watchExits()
	pidFile := filepath.Join(bundle, "init.pid")
	opts := &runc.CreateOpts{PidFile: pidFile}
	opts.IO, opts.ConsoleSocket = pio.runcIO()
	err = a.runcCall(bundle, "runc create", func(r *runc.Runc) error { return r.Create(ctx, id, bundle, opts) })
	var pid int
	if err == nil {
		pid, err = runc.ReadPidFile(pidFile)
	}
	if err == nil {
		err = pio.receiveConsole()
	}
	if err != nil {
		a.release(sub)
		pio.close()
		if derr := a.runcCall(bundle, "runc delete", func(r *runc.Runc) error {
			return r.Delete(context.WithoutCancel(ctx), id, &runc.DeleteOpts{Force: true})
		}); derr != nil && !strings.Contains(derr.Error(), "does not exist") {
			a.log.WithField("container_id", id).WithError(derr).Warn("clean up after failed create")
		}
		return 0, fmt.Errorf("create container %q: %w", id, err)
	}
	pio.start()
	c.init.mu.Lock()
	c.init.pid = pid
	c.init.mu.Unlock()
	a.track(sub, c.init)
	a.watchOOM(c)

	a.mu.Lock()
	a.containers[id] = c
	a.mu.Unlock()
	a.log.WithField("container_id", id).WithField("pid", pid).Info("container created")
	return uint32(pid), nil
}

// startContainer runs runc start on a created container.
func (a *Agent) startContainer(ctx context.Context, id string) (uint32, error) {
	if err := validateID("container_id", id); err != nil {
		return 0, err
	}
	c, err := a.getContainer(id)
	if err != nil {
		return 0, fmt.Errorf("start container: %w", err)
	}
	if st := c.init.getState(); st != stateCreated {
		return 0, fmt.Errorf("start container %q: it is %s, want created: %w", id, st, errdefs.ErrFailedPrecondition)
	}
	if err := a.runcCall(c.bundle, "runc start", func(r *runc.Runc) error { return r.Start(ctx, id) }); err != nil {
		return 0, fmt.Errorf("start container %q: %w", id, err)
	}
	p := c.init
	p.mu.Lock()
	if p.state == stateCreated {
		p.state = stateRunning
	}
	pid := p.pid
	p.mu.Unlock()
	a.log.WithField("container_id", id).Info("container started")
	return uint32(pid), nil
}

// execProcess starts an additional process in a container with
// runc exec --detach.
func (a *Agent) execProcess(ctx context.Context, req *agent.ExecProcessRequest) (_ uint32, retErr error) {
	id, execID := req.GetContainerId(), req.GetExecId()
	if err := validateID("container_id", id); err != nil {
		return 0, err
	}
	if err := validateID("exec_id", execID); err != nil {
		return 0, err
	}
	c, err := a.getContainer(id)
	if err != nil {
		return 0, fmt.Errorf("exec %q: %w", execID, err)
	}
	fail := func(err error) error { return fmt.Errorf("exec %q in container %q: %w", execID, id, err) }
	if c.init.hasExited() {
		return 0, fail(fmt.Errorf("the container's init process has exited: %w", errdefs.ErrFailedPrecondition))
	}
	var spec specs.Process
	if err := json.Unmarshal(req.GetProcess(), &spec); err != nil {
		return 0, fail(fmt.Errorf("process is not an OCI process object: %w: %w", err, errdefs.ErrInvalidArgument))
	}
	if len(spec.Args) == 0 && spec.CommandLine == "" {
		return 0, fail(fmt.Errorf("process.args is empty: %w", errdefs.ErrInvalidArgument))
	}
	if spec.Env, err = a.unsealEnv(ctx, spec.Env); err != nil {
		return 0, fail(err)
	}
	sio := a.policyStdio(id, execID, stdioFrom(req.GetStdio()))
	spec.Terminal = sio.terminal

	c.mu.Lock()
	if _, ok := c.execs[execID]; ok || c.removing {
		c.mu.Unlock()
		if c.removing {
			return 0, fail(fmt.Errorf("the container is being removed: %w", errdefs.ErrFailedPrecondition))
		}
		return 0, fail(fmt.Errorf("exec ID is in use: %w", errdefs.ErrAlreadyExists))
	}
	c.execs[execID] = nil
	c.mu.Unlock()
	defer func() {
		if retErr != nil {
			c.mu.Lock()
			delete(c.execs, execID)
			c.mu.Unlock()
		}
	}()

	pio, err := newProcIO(a.log.WithField("container_id", id).WithField("exec_id", execID), a.streams, id, execID, sio)
	if err != nil {
		return 0, fail(err)
	}
	p := newProcess(c, execID, pio)
	sub := a.watchExits()
	pidFile := filepath.Join(c.bundle, "exec-"+execID+".pid")
	defer os.Remove(pidFile)
	opts := &runc.ExecOpts{PidFile: pidFile, Detach: true}
	opts.IO, opts.ConsoleSocket = pio.runcIO()
	err = a.runcCall(c.bundle, "runc exec", func(r *runc.Runc) error { return r.Exec(ctx, id, spec, opts) })
	var pid int
	if err == nil {
		pid, err = runc.ReadPidFile(pidFile)
	}
	if err == nil {
		err = pio.receiveConsole()
	}
	if err != nil {
		a.release(sub)
		pio.close()
		return 0, fail(err)
	}
	pio.start()
	p.mu.Lock()
	p.pid, p.state = pid, stateRunning
	p.mu.Unlock()
	a.track(sub, p)
	c.mu.Lock()
	c.execs[execID] = p
	c.mu.Unlock()
	a.log.WithField("container_id", id).WithField("exec_id", execID).WithField("pid", pid).Info("exec started")
	return uint32(pid), nil
}

// removeContainer removes one exec (execID set) or the whole container:
// runc delete --force, then the bundle with its rootfs. Removing an ID that
// was pulled but never created removes its bundle.
func (a *Agent) removeContainer(ctx context.Context, id, execID string) error {
	if err := validateIDs(id, execID); err != nil {
		return err
	}
	if execID != "" {
		return a.removeExec(id, execID)
	}
	a.mu.Lock()
	c, ok := a.containers[id]
	switch {
	case ok && c == nil:
		a.mu.Unlock()
		return fmt.Errorf("remove container %q: a pull or create is in progress: %w", id, errdefs.ErrFailedPrecondition)
	case !ok:
		a.mu.Unlock()
		return a.removeBundle(id)
	}
	c.mu.Lock()
	if c.removing {
		c.mu.Unlock()
		a.mu.Unlock()
		return fmt.Errorf("remove container %q: already being removed: %w", id, errdefs.ErrFailedPrecondition)
	}
	c.removing = true
	execs := make([]*process, 0, len(c.execs))
	for _, p := range c.execs {
		if p != nil {
			execs = append(execs, p)
		}
	}
	c.mu.Unlock()
	a.mu.Unlock()

	err := a.runcCall(c.bundle, "runc delete --force", func(r *runc.Runc) error {
		return r.Delete(ctx, id, &runc.DeleteOpts{Force: true})
	})
	if err != nil && !strings.Contains(err.Error(), "does not exist") {
		c.mu.Lock()
		c.removing = false
		c.mu.Unlock()
		return fmt.Errorf("remove container %q: %w", id, err)
	}
	for _, p := range append(execs, c.init) {
		if !p.waitTimeout(removeWait) {
			a.log.WithField("container_id", id).WithField("exec_id", p.execID).
				Warnf("process not reaped or output not drained %v after runc delete; dropping it", removeWait)
		}
		p.io.close()
	}
	a.mu.Lock()
	delete(a.containers, id)
	a.mu.Unlock()
	if err := os.RemoveAll(c.bundle); err != nil {
		return fmt.Errorf("remove container %q: remove bundle: %w", id, err)
	}
	a.log.WithField("container_id", id).Info("container removed")
	return nil
}

// removeBundle removes the bundle of a container that was pulled but never
// created; ErrNotFound when there is none.
func (a *Agent) removeBundle(id string) error {
	bundle := a.bundleDir(id)
	if _, err := os.Lstat(bundle); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove container %q: no such container or bundle: %w", id, errdefs.ErrNotFound)
	}
	if err := os.RemoveAll(bundle); err != nil {
		return fmt.Errorf("remove container %q: remove bundle: %w", id, err)
	}
	return nil
}

// removeExec forgets an exited exec process.
func (a *Agent) removeExec(id, execID string) error {
	c, err := a.getContainer(id)
	if err != nil {
		return fmt.Errorf("remove exec %q: %w", execID, err)
	}
	c.mu.Lock()
	p := c.execs[execID]
	switch {
	case p == nil:
		c.mu.Unlock()
		return fmt.Errorf("remove exec %q of container %q: no such exec: %w", execID, id, errdefs.ErrNotFound)
	case !p.hasExited():
		c.mu.Unlock()
		return fmt.Errorf("remove exec %q of container %q: it is still running; signal it and wait first: %w", execID, id, errdefs.ErrFailedPrecondition)
	}
	delete(c.execs, execID)
	c.mu.Unlock()
	if !p.waitTimeout(removeWait) {
		a.log.WithField("container_id", id).WithField("exec_id", execID).Warnf("output not drained %v after exit; dropping it", removeWait)
	}
	p.io.close()
	return nil
}
