// Package cloudhypervisor runs a Coffer VM with Cloud Hypervisor: Config and
// its Validate describe the VM, Client speaks Cloud Hypervisor's REST API
// over its --api-socket unix socket, and CloudHypervisor implements vmm.VMM
// so that the shim can pick it instead of vmm/qemu.
//
// Process model (the rules vmm/qemu follows): cloud-hypervisor runs in its
// own process group (pgid = its pid) with Pdeathsig SIGKILL, started from a
// goroutine locked to its OS thread for the VM's lifetime, so it dies with
// the shim. Its environment carries the same COFFER_VMM_STATE_DIR=<StateDir>
// tag vmm/qemu sets, so that qemu.Cleanup(StateDir), which the shim already
// calls for a stale state directory, also kills a cloud-hypervisor that a
// crashed shim left behind and removes its sockets. Cloud Hypervisor starts
// no helper processes of its own.
package cloudhypervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cofferhq/coffer/vmm"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

const (
	// stateDirEnv is the environment entry vmm/qemu tags its VMs with and
	// qemu.Cleanup looks for (vmm/qemu's unexported stateDirEnv).
	stateDirEnv = "COFFER_VMM_STATE_DIR"
	// pingInterval is the pause between vmm.ping attempts in Start.
	pingInterval = 20 * time.Millisecond
	// callTimeout bounds one API call made by Start or Stop.
	callTimeout = 5 * time.Second
	// shutdownGrace is how long Stop waits for the process to exit after
	// vmm.shutdown before it kills the process group.
	shutdownGrace = 2 * time.Second
	// killWait bounds the wait for a SIGKILLed process to be reaped.
	killWait = 5 * time.Second
	// stderrTailSize is how many bytes of stderr.log error messages quote.
	stderrTailSize = 4096
)

// CloudHypervisor is one cloud-hypervisor process running one VM. It
// implements vmm.VMM; see that interface for the lifecycle contract. Create
// it with New.
type CloudHypervisor struct {
	cfg    Config
	vmCfg  *VmConfig
	args   []string // argv without the binary; tests may replace it
	client *Client

	// startMu serializes the launch in Start with Stop, and Stops with
	// each other.
	startMu sync.Mutex

	mu       sync.Mutex
	launched bool
	stopped  bool
	pid      int
	reaped   bool
	waitErr  error
	exitErr  error
	exited   chan struct{}
}

var _ vmm.VMM = (*CloudHypervisor)(nil)

// New validates cfg (see Config.Validate), builds the vm.create request (see
// Config.VMConfig) and returns a CloudHypervisor ready to Start. It copies
// cfg; the slices inside are shared and must not change afterwards.
func New(cfg *Config) (*CloudHypervisor, error) {
	return newVM(cfg, hypervisorDevices())
}

// newVM is New with the hypervisor devices Validate looks for.
func newVM(cfg *Config, devices []string) (*CloudHypervisor, error) {
	if err := cfg.validate(devices); err != nil {
		return nil, err
	}
	c := *cfg
	return &CloudHypervisor{
		cfg:    c,
		vmCfg:  c.VMConfig(),
		args:   []string{"--api-socket", "path=" + c.APISocketPath()},
		client: NewClient(c.APISocketPath()),
		exited: make(chan struct{}),
	}, nil
}

// Client returns the API client of this VM's socket, for callers that need
// vm.info or other calls.
func (h *CloudHypervisor) Client() *Client { return h.client }

// Start launches cloud-hypervisor, waits until its API answers vmm.ping,
// then creates the VM (vm.create) and boots it (vm.boot). ctx bounds only
// that; pass one with a deadline. cloud-hypervisor's stdout and stderr go to
// StateDir/stderr.log.
//
// Errors: errdefs.ErrFailedPrecondition when already started or stopped;
// "cloud-hypervisor exited during start (<status>): <stderr tail>" when it
// exits first; an *APIError (Cloud Hypervisor's own text and status) when
// vm.create or vm.boot is refused; ctx's error when it ends first. On any
// error nothing is left running and the sockets are removed.
func (h *CloudHypervisor) Start(ctx context.Context) error {
	h.startMu.Lock()
	pid, err := h.launch(ctx)
	h.startMu.Unlock()
	if err != nil {
		return err
	}
	logger := log.G(ctx).WithField("vm", h.cfg.Name).WithField("pid", pid)
	logger.Debug("cloud-hypervisor launched, waiting for its api")
	if err := h.waitAPI(ctx); err != nil {
		return h.abort(ctx, err)
	}
	if err := h.call(ctx, func(cctx context.Context) error { return h.client.CreateVM(cctx, h.vmCfg) }); err != nil {
		return h.abort(ctx, fmt.Errorf("start vm %s: create: %w", h.cfg.Name, err))
	}
	if err := h.call(ctx, h.client.BootVM); err != nil {
		return h.abort(ctx, fmt.Errorf("start vm %s: boot: %w", h.cfg.Name, err))
	}
	logger.Debug("cloud-hypervisor booted the vm")
	return nil
}

// call runs one API call bounded by ctx and callTimeout.
func (h *CloudHypervisor) call(ctx context.Context, f func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return f(cctx)
}

func (h *CloudHypervisor) launch(ctx context.Context) (int, error) {
	h.mu.Lock()
	switch {
	case h.launched:
		h.mu.Unlock()
		return 0, fmt.Errorf("start vm %s: already started: %w", h.cfg.Name, errdefs.ErrFailedPrecondition)
	case h.stopped:
		h.mu.Unlock()
		return 0, fmt.Errorf("start vm %s: already stopped: create a new VM: %w", h.cfg.Name, errdefs.ErrFailedPrecondition)
	}
	h.launched = true
	h.mu.Unlock()

	if err := ctx.Err(); err != nil {
		h.markStopped()
		return 0, fmt.Errorf("start vm %s: %w", h.cfg.Name, err)
	}
	// Cloud Hypervisor refuses to bind a socket path that exists.
	if err := h.removeSockets(); err != nil {
		h.markStopped()
		return 0, fmt.Errorf("start vm %s: remove stale sockets: %w", h.cfg.Name, err)
	}
	out, err := os.OpenFile(h.cfg.StderrLogPath(), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		h.markStopped()
		return 0, fmt.Errorf("start vm %s: create cloud-hypervisor stderr log: %w", h.cfg.Name, err)
	}
	cmd := exec.Command(h.cfg.BinaryPath(), h.args...)
	cmd.Env = append(os.Environ(), stateDirEnv+"="+filepath.Clean(h.cfg.StateDir))
	cmd.Stdout = out // a file: no copying goroutine, nothing lost at exit
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	started := make(chan error, 1)
	go h.run(cmd, out, log.G(ctx).WithField("vm", h.cfg.Name), started)
	if err := <-started; err != nil {
		out.Close()
		h.markStopped()
		return 0, fmt.Errorf("start vm %s: run %s: %w", h.cfg.Name, h.cfg.BinaryPath(), err)
	}
	return h.Pid(), nil
}

// run starts cmd and supervises it until it is reaped, on a goroutine
// locked to one OS thread: Pdeathsig fires when the creating thread exits.
func (h *CloudHypervisor) run(cmd *exec.Cmd, out *os.File, logger *log.Entry, started chan<- error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		started <- err
		return
	}
	h.mu.Lock()
	h.pid = cmd.Process.Pid
	h.mu.Unlock()
	started <- nil

	err := cmd.Wait()
	out.Close()
	h.mu.Lock()
	h.reaped = true
	h.waitErr = err
	h.exitErr = h.classifyExit(err)
	h.mu.Unlock()
	if err != nil {
		logger.WithError(err).Debug("cloud-hypervisor exited")
	}
	close(h.exited)
}

// classifyExit turns cmd.Wait's error into ExitError's value. h.mu is held.
func (h *CloudHypervisor) classifyExit(err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if h.stopped && errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return nil // killed by Stop
		}
	}
	return fmt.Errorf("cloud-hypervisor pid %d for vm %s exited unexpectedly (%w): %s", h.pid, h.cfg.Name, err, h.stderrTail())
}

// stderrTail returns the last 4 KiB of stderr.log as one line.
func (h *CloudHypervisor) stderrTail() string {
	path := h.cfg.StderrLogPath()
	f, err := os.Open(path)
	if err != nil {
		return "no stderr log (" + err.Error() + ")"
	}
	defer f.Close()
	cut := ""
	if fi, err := f.Stat(); err == nil && fi.Size() > stderrTailSize {
		f.Seek(fi.Size()-stderrTailSize, io.SeekStart)
		cut = "..."
	}
	b, _ := io.ReadAll(io.LimitReader(f, stderrTailSize))
	lines := strings.FieldsFunc(strings.TrimSpace(string(b)), func(r rune) bool { return r == '\n' || r == '\r' })
	if len(lines) == 0 {
		return "no output on stderr (" + path + ")"
	}
	return cut + strings.Join(lines, "; ")
}

// waitAPI polls vmm.ping until it answers, the process exits or ctx ends.
func (h *CloudHypervisor) waitAPI(ctx context.Context) error {
	var lastErr error
	for {
		err := h.call(ctx, func(cctx context.Context) error {
			_, err := h.client.Ping(cctx)
			return err
		})
		if err == nil {
			return nil
		}
		lastErr = err
		select {
		case <-h.exited:
			h.mu.Lock()
			waitErr := h.waitErr
			h.mu.Unlock()
			return fmt.Errorf("start vm %s: cloud-hypervisor exited during start (%v): %s", h.cfg.Name, waitErr, h.stderrTail())
		case <-ctx.Done():
			return fmt.Errorf("start vm %s: api socket %s did not answer vmm.ping before the start deadline (last attempt: %v); its stderr: %s: %w",
				h.cfg.Name, h.cfg.APISocketPath(), lastErr, h.stderrTail(), ctx.Err())
		case <-time.After(pingInterval):
		}
	}
}

// abort kills what Start launched and returns err, with the process's
// stderr added when it exited meanwhile.
func (h *CloudHypervisor) abort(ctx context.Context, err error) error {
	h.markStopped()
	h.killGroup()
	select {
	case <-h.exited:
	case <-time.After(killWait):
		log.G(ctx).WithField("vm", h.cfg.Name).Warn("cloud-hypervisor still alive after SIGKILL")
	}
	h.removeSockets()
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return fmt.Errorf("%w; killed cloud-hypervisor; its stderr: %s", err, h.stderrTail())
	}
	return err
}

// Stop asks Cloud Hypervisor to exit (vmm.shutdown), waits up to 2 s, then
// SIGKILLs its process group, waits for it to be reaped and removes the API
// and vsock sockets. A done ctx skips the graceful shutdown. It is
// idempotent; it fails only if the process is still alive 5 s after
// SIGKILL, or if a socket cannot be removed.
func (h *CloudHypervisor) Stop(ctx context.Context) error {
	h.startMu.Lock()
	defer h.startMu.Unlock()
	h.markStopped()
	pid := h.Pid()
	if pid == 0 {
		return nil
	}
	select {
	case <-h.exited:
	default:
		if ctx.Err() != nil || !h.shutdown(ctx) || !h.waitExited(ctx, shutdownGrace) {
			log.G(ctx).WithField("vm", h.cfg.Name).WithField("pid", pid).Info("cloud-hypervisor did not exit in time, killing its process group")
			h.killGroup()
			select {
			case <-h.exited:
			case <-time.After(killWait):
				return fmt.Errorf("stop vm %s: cloud-hypervisor pid %d still alive %v after SIGKILL: it may be stuck in uninterruptible I/O; check /proc/%d/stack", h.cfg.Name, pid, killWait, pid)
			}
		}
	}
	if err := h.removeSockets(); err != nil {
		return fmt.Errorf("stop vm %s: %w", h.cfg.Name, err)
	}
	return nil
}

// shutdown sends vmm.shutdown and reports whether it was accepted. A
// connection cut by the exiting VMM counts as accepted.
func (h *CloudHypervisor) shutdown(ctx context.Context) bool {
	err := h.call(ctx, h.client.ShutdownVMM)
	if err == nil {
		return true
	}
	select {
	case <-h.exited:
		return true
	default:
	}
	log.G(ctx).WithError(err).WithField("vm", h.cfg.Name).Info("vmm.shutdown failed, will kill cloud-hypervisor")
	return false
}

func (h *CloudHypervisor) waitExited(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-h.exited:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// killGroup SIGKILLs the process group unless the process was reaped
// (after which its pid could belong to someone else).
func (h *CloudHypervisor) killGroup() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pid != 0 && !h.reaped {
		unix.Kill(-h.pid, unix.SIGKILL)
	}
}

func (h *CloudHypervisor) markStopped() {
	h.mu.Lock()
	h.stopped = true
	h.mu.Unlock()
}

// removeSockets removes the API socket and the hybrid vsock socket.
func (h *CloudHypervisor) removeSockets() error {
	paths := []string{h.cfg.APISocketPath()}
	if h.cfg.Agent.Kind == vmm.AgentHybridVsock && h.cfg.Agent.SocketPath != "" {
		paths = append(paths, h.cfg.Agent.SocketPath)
	}
	var errs []error
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Exited is closed once cloud-hypervisor has exited and been reaped.
func (h *CloudHypervisor) Exited() <-chan struct{} { return h.exited }

// ExitError returns nil before the exit, after exit status 0 and after a
// kill by Stop; otherwise an error with the exit status and stderr's tail.
func (h *CloudHypervisor) ExitError() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.exitErr
}

// Pid returns cloud-hypervisor's pid (also its process group id), or 0
// before Start.
func (h *CloudHypervisor) Pid() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pid
}

// ConsoleLogPath returns StateDir/console.log, the guest's serial port
// (ttyS0).
func (h *CloudHypervisor) ConsoleLogPath() string { return h.cfg.ConsoleLogPath() }
