// Package qemu runs a Coffer VM with QEMU: Args builds the command line from
// a vmm.Config, QEMU implements vmm.VMM, and Cleanup removes what a crashed
// shim left behind.
//
// Process model: package vmproc runs QEMU (own process group, Pdeathsig,
// pinned OS thread, the COFFER_VMM_STATE_DIR=<StateDir> environment tag).
// Guest-forward commands (vmm.Forward) are why the tag exists: libslirp
// starts them with setsid() and a double fork, so they live in their own
// session with init as parent, outside QEMU's group; whenever QEMU exits,
// and in Cleanup, every process carrying the tag is killed too.
package qemu

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/cofferhq/coffer/vmm"
	"github.com/cofferhq/coffer/vmm/qmp"
	"github.com/cofferhq/coffer/vmm/vmproc"
	"github.com/containerd/log"
)

const (
	// quitGrace is how long Stop waits for QEMU to exit after QMP quit
	// before it kills the process group.
	quitGrace = 2 * time.Second
	// qmpDialTimeout bounds one QMP connection attempt. QEMU serves one QMP
	// client at a time, so a busy socket accepts but never greets.
	qmpDialTimeout = time.Second
	// qmpPollInterval is the pause between QMP connection attempts in Start.
	qmpPollInterval = 20 * time.Millisecond
)

// QEMU is one QEMU process running a VM. It implements vmm.VMM; see that
// interface for the lifecycle contract. Create it with New.
type QEMU struct {
	cfg  vmm.Config
	args []string // QEMU's argv without the binary; tests may replace it
	proc *vmproc.Proc
}

var _ vmm.VMM = (*QEMU)(nil)

// New validates cfg (see vmm.Config.Validate), builds the command line (see
// Args) and returns a QEMU ready to Start. For TEE kind sim it first runs
// cfg.PrepareSim, which writes StateDir/sim-identity.pem and measures the
// kernel, initrd and cmdline, and appends the sim fw_cfg items after
// cfg.FWCfg. It copies cfg; the slices inside are shared and must not change
// afterwards.
func New(cfg *vmm.Config) (*QEMU, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.TEE.Kind == vmm.TEESim {
		entries, err := cfg.PrepareSim()
		if err != nil {
			return nil, err
		}
		c := *cfg
		c.FWCfg = append(slices.Clone(cfg.FWCfg), entries...)
		cfg = &c
	}
	args, err := Args(cfg)
	if err != nil {
		return nil, err
	}
	return &QEMU{
		cfg:  *cfg,
		args: args,
		proc: vmproc.New(vmproc.Spec{Program: "qemu", VM: cfg.Name, StateDir: cfg.StateDir, StderrLog: cfg.StderrLogPath()}),
	}, nil
}

// Start launches QEMU and returns once its QMP socket answers
// qmp_capabilities. ctx bounds only that wait; pass one with a deadline (QMP
// normally answers within a few hundred ms). QEMU's stdout and stderr go to
// StateDir/stderr.log, whose last 4 KiB error messages quote.
//
// Errors: errdefs.ErrFailedPrecondition when already started or stopped; if
// QEMU exits first, "qemu exited during start (<status>): <stderr tail>"; if
// ctx ends first, QEMU is killed and the error wraps ctx's error. Either way
// nothing is left running and the sockets and pid file are removed.
func (q *QEMU) Start(ctx context.Context) error {
	cmd := vmproc.Command{Path: q.cfg.BinaryPath(), Args: q.args}
	if t := q.cfg.Network.Tap; q.cfg.Network.Mode == vmm.NetworkTap && t != nil && t.File != nil {
		cmd.ExtraFiles = []*os.File{t.File} // becomes TapFD in QEMU
	}
	pid, err := q.proc.Start(ctx, cmd, func() error {
		if err := q.removeRuntimeFiles(); err != nil {
			return fmt.Errorf("remove stale files: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	log.G(ctx).WithField("vm", q.cfg.Name).WithField("pid", pid).Debug("qemu launched, waiting for qmp")
	return q.waitQMP(ctx, pid)
}

// waitQMP polls the QMP socket until it answers, QEMU exits or ctx ends.
func (q *QEMU) waitQMP(ctx context.Context, pid int) error {
	path := q.cfg.QMPSocketPath()
	var lastErr error
	for {
		dctx, cancel := context.WithTimeout(ctx, qmpDialTimeout)
		c, err := qmp.Connect(dctx, path)
		cancel()
		if err == nil {
			c.Close()
			log.G(ctx).WithField("vm", q.cfg.Name).WithField("pid", pid).Debug("qemu qmp answered")
			return nil
		}
		lastErr = err
		select {
		case <-q.proc.Exited():
			q.removeRuntimeFiles()
			return q.proc.ExitedDuringStart()
		case <-ctx.Done():
			if q.proc.Abort() {
				q.removeRuntimeFiles()
			}
			return fmt.Errorf("start vm %s: qmp socket %s did not answer before the start deadline (last attempt: %v); killed qemu pid %d; its stderr: %s: %w",
				q.cfg.Name, path, lastErr, pid, q.proc.StderrTail(), ctx.Err())
		case <-time.After(qmpPollInterval):
		}
	}
}

// Stop quits QEMU over QMP, waits up to 2 s, then SIGKILLs its process group
// (and its detached guestfwd commands), waits for it to be reaped and removes
// qmp.sock, qemu.pid and the agent socket. A done ctx skips the graceful
// quit. It is idempotent; it fails only if QEMU is still alive 5 s after
// SIGKILL, or if a socket cannot be removed.
func (q *QEMU) Stop(ctx context.Context) error {
	return q.proc.Stop(ctx, quitGrace, q.quit, q.removeRuntimeFiles)
}

// quit sends QMP quit and reports whether QEMU accepted it. Failures are
// logged, not returned: Stop falls back to SIGKILL.
func (q *QEMU) quit(ctx context.Context) bool {
	qctx, cancel := context.WithTimeout(ctx, qmpDialTimeout)
	defer cancel()
	c, err := qmp.Connect(qctx, q.cfg.QMPSocketPath())
	if err == nil {
		err = c.Quit(qctx)
		c.Close()
	}
	if err != nil {
		log.G(ctx).WithError(err).WithField("vm", q.cfg.Name).Info("qmp quit failed, will kill qemu")
		return false
	}
	return true
}

// removeRuntimeFiles removes qmp.sock, qemu.pid and the agent socket.
func (q *QEMU) removeRuntimeFiles() error {
	paths := []string{q.cfg.QMPSocketPath(), q.cfg.PIDFilePath()}
	if q.cfg.Agent.Kind == vmm.AgentVirtioSerial && q.cfg.Agent.SocketPath != "" {
		paths = append(paths, q.cfg.Agent.SocketPath)
	}
	return vmproc.RemoveFiles(paths...)
}

// Exited is closed once QEMU has exited and been reaped.
func (q *QEMU) Exited() <-chan struct{} { return q.proc.Exited() }

// ExitError returns nil before the exit, after exit status 0 and after a kill
// by Stop; otherwise an error with the exit status and QEMU's stderr tail.
func (q *QEMU) ExitError() error { return q.proc.ExitError() }

// Pid returns QEMU's pid (also its process group id), or 0 before Start.
func (q *QEMU) Pid() int { return q.proc.Pid() }

// ConsoleLogPath returns StateDir/console.log, the guest's serial console.
func (q *QEMU) ConsoleLogPath() string { return q.cfg.ConsoleLogPath() }
