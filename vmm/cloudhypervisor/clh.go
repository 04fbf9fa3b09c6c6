// Package cloudhypervisor runs a Coffer VM with Cloud Hypervisor: Config and
// its Validate describe the VM, Client speaks Cloud Hypervisor's REST API
// over its --api-socket unix socket, and CloudHypervisor implements vmm.VMM
// so that the shim can pick it instead of vmm/qemu.
//
// Process model: package vmproc runs cloud-hypervisor the way it runs QEMU
// (own process group, Pdeathsig SIGKILL from a pinned OS thread, the
// COFFER_VMM_STATE_DIR=<StateDir> environment tag), so that vmproc.Cleanup
// (and qemu.Cleanup, which the shim calls for a stale state directory) also
// kills a cloud-hypervisor that a crashed shim left behind and removes its
// sockets. Cloud Hypervisor starts no helper processes of its own.
package cloudhypervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/vmm"
	"github.com/cofferhq/coffer/vmm/vmproc"
	"github.com/containerd/log"
)

const (
	// pingInterval is the pause between vmm.ping attempts in Start.
	pingInterval = 20 * time.Millisecond
	// callTimeout bounds one API call made by Start or Stop.
	callTimeout = 5 * time.Second
	// shutdownGrace is how long Stop waits for the process to exit after
	// vmm.shutdown before it kills the process group.
	shutdownGrace = 2 * time.Second
)

// CloudHypervisor is one cloud-hypervisor process running one VM. It
// implements vmm.VMM; see that interface for the lifecycle contract. Create
// it with New.
type CloudHypervisor struct {
	cfg    Config
	vmCfg  *VmConfig
	args   []string // argv without the binary; tests may replace it
	client *Client
	proc   *vmproc.Proc
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
		proc:   vmproc.New(vmproc.Spec{Program: "cloud-hypervisor", VM: c.Name, StateDir: c.StateDir, StderrLog: c.StderrLogPath()}),
	}, nil
}

// Client returns the API client of this VM's socket, for callers that need
// vm.info or other calls.
func (h *CloudHypervisor) Client() *Client { return h.client }

// Start launches cloud-hypervisor (in the tap's network namespace when
// Network.Tap.NetNS is set), waits until its API answers vmm.ping,
// then creates the VM (vm.create), passes a tap given by file descriptor
// (vm.add-net, see Config.TapNetConfig) and boots it (vm.boot). ctx bounds only
// that; pass one with a deadline. cloud-hypervisor's stdout and stderr go to
// StateDir/stderr.log.
//
// Errors: errdefs.ErrFailedPrecondition when already started or stopped;
// "cloud-hypervisor exited during start (<status>): <stderr tail>" when it
// exits first; an *APIError (Cloud Hypervisor's own text and status) when
// vm.create, vm.add-net or vm.boot is refused; ctx's error when it ends first. On any
// error nothing is left running and the sockets are removed.
func (h *CloudHypervisor) Start(ctx context.Context) error {
	// Cloud Hypervisor refuses to bind a socket path that exists.
	cmd := vmproc.Command{Path: h.cfg.BinaryPath(), Args: h.args}
	if t := h.cfg.Network.Tap; h.cfg.Network.Mode == vmm.NetworkTap && t != nil {
		cmd.NetNS = t.NetNS
	}
	pid, err := h.proc.Start(ctx, cmd, func() error {
		if err := h.removeSockets(); err != nil {
			return fmt.Errorf("remove stale sockets: %w", err)
		}
		return nil
	})
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
	if nic, taps := h.cfg.TapNetConfig(); nic != nil {
		if err := h.call(ctx, func(cctx context.Context) error { return h.client.AddNet(cctx, nic, taps) }); err != nil {
			return h.abort(ctx, fmt.Errorf("start vm %s: pass tap %s: %w", h.cfg.Name, h.cfg.Network.Tap.Name, err))
		}
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
		case <-h.proc.Exited():
			return h.proc.ExitedDuringStart()
		case <-ctx.Done():
			return fmt.Errorf("start vm %s: api socket %s did not answer vmm.ping before the start deadline (last attempt: %v); its stderr: %s: %w",
				h.cfg.Name, h.cfg.APISocketPath(), lastErr, h.proc.StderrTail(), ctx.Err())
		case <-time.After(pingInterval):
		}
	}
}

// abort kills what Start launched and returns err, with the process's
// stderr added when it exited meanwhile.
func (h *CloudHypervisor) abort(ctx context.Context, err error) error {
	if !h.proc.Abort() {
		log.G(ctx).WithField("vm", h.cfg.Name).Warn("cloud-hypervisor still alive after SIGKILL")
	}
	h.removeSockets()
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return fmt.Errorf("%w; killed cloud-hypervisor; its stderr: %s", err, h.proc.StderrTail())
	}
	return err
}

// Stop asks Cloud Hypervisor to exit (vmm.shutdown), waits up to 2 s, then
// SIGKILLs its process group, waits for it to be reaped and removes the API
// and vsock sockets. A done ctx skips the graceful shutdown. It is
// idempotent; it fails only if the process is still alive 5 s after
// SIGKILL, or if a socket cannot be removed.
func (h *CloudHypervisor) Stop(ctx context.Context) error {
	return h.proc.Stop(ctx, shutdownGrace, h.shutdown, h.removeSockets)
}

// shutdown sends vmm.shutdown and reports whether it was accepted. A
// connection cut by the exiting VMM counts as accepted.
func (h *CloudHypervisor) shutdown(ctx context.Context) bool {
	err := h.call(ctx, h.client.ShutdownVMM)
	if err == nil {
		return true
	}
	select {
	case <-h.proc.Exited():
		return true
	default:
	}
	log.G(ctx).WithError(err).WithField("vm", h.cfg.Name).Info("vmm.shutdown failed, will kill cloud-hypervisor")
	return false
}

// removeSockets removes the API socket and the hybrid vsock socket.
func (h *CloudHypervisor) removeSockets() error {
	paths := []string{h.cfg.APISocketPath()}
	if h.cfg.Agent.Kind == vmm.AgentHybridVsock && h.cfg.Agent.SocketPath != "" {
		paths = append(paths, h.cfg.Agent.SocketPath)
	}
	return vmproc.RemoveFiles(paths...)
}

// Exited is closed once cloud-hypervisor has exited and been reaped.
func (h *CloudHypervisor) Exited() <-chan struct{} { return h.proc.Exited() }

// ExitError returns nil before the exit, after exit status 0 and after a
// kill by Stop; otherwise an error with the exit status and stderr's tail.
func (h *CloudHypervisor) ExitError() error { return h.proc.ExitError() }

// Pid returns cloud-hypervisor's pid (also its process group id), or 0
// before Start.
func (h *CloudHypervisor) Pid() int { return h.proc.Pid() }

// ConsoleLogPath returns StateDir/console.log, the guest's serial port
// (ttyS0).
func (h *CloudHypervisor) ConsoleLogPath() string { return h.cfg.ConsoleLogPath() }
