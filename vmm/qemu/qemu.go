// Package qemu runs a Coffer VM with QEMU: Args builds the command line from
// a vmm.Config, QEMU implements vmm.VMM, and Cleanup removes what a crashed
// shim left behind.
//
// Process model: QEMU runs in its own process group (pgid = its pid) with
// Pdeathsig SIGKILL, so it dies with the thread that started it; Start pins
// that thread for the VM's lifetime. Helpers QEMU forks stay in its group and
// are killed with it. Guest-forward commands (vmm.Forward) are the exception:
// libslirp starts them with setsid() and a double fork, so they live in their
// own session with init as parent. They inherit QEMU's environment, which
// carries COFFER_VMM_STATE_DIR=<StateDir>; whenever QEMU exits, and in
// Cleanup, every process carrying that entry is killed too.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/cofferhq/coffer/vmm"
	"github.com/cofferhq/coffer/vmm/qmp"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
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

	// startMu serializes the launch in Start with Stop, and Stops with each
	// other.
	startMu sync.Mutex

	mu       sync.Mutex
	launched bool // Start ran
	stopped  bool // Stop ran, or Start gave up
	pid      int
	reaped   bool
	waitErr  error // raw error from exec.Cmd.Wait
	exitErr  error // what ExitError returns
	stderr   *tailBuffer
	exited   chan struct{}
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
		cfg:    *cfg,
		args:   args,
		stderr: newTailBuffer(stderrTailSize),
		exited: make(chan struct{}),
	}, nil
}

// Start launches QEMU and returns once its QMP socket answers
// qmp_capabilities. ctx bounds only that wait; pass one with a deadline (QMP
// normally answers within a few hundred ms). QEMU's stdout and stderr go to
// StateDir/stderr.log, and the last 4 KiB are kept for error messages.
//
// Errors: errdefs.ErrFailedPrecondition when already started or stopped; if
// QEMU exits first, "qemu exited during start (<status>): <stderr tail>"; if
// ctx ends first, QEMU is killed and the error wraps ctx's error. Either way
// nothing is left running and the sockets and pid file are removed.
func (q *QEMU) Start(ctx context.Context) error {
	q.startMu.Lock()
	pid, err := q.launch(ctx)
	q.startMu.Unlock()
	if err != nil {
		return err
	}
	log.G(ctx).WithField("vm", q.cfg.Name).WithField("pid", pid).Debug("qemu launched, waiting for qmp")
	return q.waitQMP(ctx, pid)
}

func (q *QEMU) launch(ctx context.Context) (int, error) {
	q.mu.Lock()
	switch {
	case q.launched:
		q.mu.Unlock()
		return 0, fmt.Errorf("start vm %s: already started: %w", q.cfg.Name, errdefs.ErrFailedPrecondition)
	case q.stopped:
		q.mu.Unlock()
		return 0, fmt.Errorf("start vm %s: already stopped: create a new VM: %w", q.cfg.Name, errdefs.ErrFailedPrecondition)
	}
	q.launched = true
	q.mu.Unlock()

	if err := ctx.Err(); err != nil {
		q.markStopped()
		return 0, fmt.Errorf("start vm %s: %w", q.cfg.Name, err)
	}
	if err := q.removeRuntimeFiles(); err != nil {
		q.markStopped()
		return 0, fmt.Errorf("start vm %s: remove stale files: %w", q.cfg.Name, err)
	}
	stderrLog, err := os.OpenFile(q.cfg.StderrLogPath(), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		q.markStopped()
		return 0, fmt.Errorf("start vm %s: create qemu stderr log: %w", q.cfg.Name, err)
	}
	out := io.MultiWriter(stderrLog, q.stderr)
	cmd := exec.Command(q.cfg.BinaryPath(), q.args...)
	cmd.Env = append(os.Environ(), stateDirTag(q.cfg.StateDir))
	cmd.Stdout = out // the same writer for both: exec shares one pipe
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	if t := q.cfg.Network.Tap; q.cfg.Network.Mode == vmm.NetworkTap && t != nil && t.File != nil {
		cmd.ExtraFiles = []*os.File{t.File} // becomes TapFD in QEMU
	}

	started := make(chan error, 1)
	go q.run(cmd, stderrLog, log.G(ctx).WithField("vm", q.cfg.Name), started)
	if err := <-started; err != nil {
		stderrLog.Close()
		q.markStopped()
		return 0, fmt.Errorf("start vm %s: run %s: %w", q.cfg.Name, q.cfg.BinaryPath(), err)
	}
	return q.Pid(), nil
}

// run starts cmd and supervises it until it is reaped. It keeps its
// goroutine locked to one OS thread for QEMU's whole life, because Pdeathsig
// fires when the creating thread (not process) exits, and Go may retire an
// idle thread.
func (q *QEMU) run(cmd *exec.Cmd, stderrLog *os.File, logger *log.Entry, started chan<- error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		started <- err
		return
	}
	pid := cmd.Process.Pid
	q.mu.Lock()
	q.pid = pid
	q.mu.Unlock()
	started <- nil

	if err := waitExitNoReap(pid); err != nil {
		logger.WithError(err).WithField("pid", pid).Warn("waitid on qemu failed")
	}
	// QEMU is a zombie, so its pid and group id are still reserved: kill
	// whatever is left in its group, then its detached guestfwd commands.
	q.mu.Lock()
	unix.Kill(-pid, unix.SIGKILL)
	q.mu.Unlock()
	if _, err := killTagged(q.cfg.StateDir); err != nil {
		logger.WithError(err).Warn("kill qemu's detached helpers")
	}
	err := cmd.Wait()
	stderrLog.Close()

	q.mu.Lock()
	q.reaped = true
	q.waitErr = err
	q.exitErr = q.classifyExit(err)
	q.mu.Unlock()
	close(q.exited)
}

// classifyExit turns cmd.Wait's error into ExitError's value. q.mu is held.
func (q *QEMU) classifyExit(err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if q.stopped && errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return nil // killed by Stop
		}
	}
	return fmt.Errorf("qemu pid %d for vm %s exited unexpectedly (%w): %s", q.pid, q.cfg.Name, err, q.stderrTail())
}

func (q *QEMU) stderrTail() string {
	if s := q.stderr.String(); s != "" {
		return s
	}
	return "no output on stderr (" + q.cfg.StderrLogPath() + ")"
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
		case <-q.exited:
			q.mu.Lock()
			waitErr := q.waitErr
			q.mu.Unlock()
			q.removeRuntimeFiles()
			return fmt.Errorf("start vm %s: qemu exited during start (%v): %s", q.cfg.Name, waitErr, q.stderrTail())
		case <-ctx.Done():
			q.markStopped()
			q.killGroup()
			select {
			case <-q.exited:
				q.removeRuntimeFiles()
			case <-time.After(killWait):
			}
			return fmt.Errorf("start vm %s: qmp socket %s did not answer before the start deadline (last attempt: %v); killed qemu pid %d; its stderr: %s: %w",
				q.cfg.Name, path, lastErr, pid, q.stderrTail(), ctx.Err())
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
	q.startMu.Lock()
	defer q.startMu.Unlock()
	q.markStopped()
	pid := q.Pid()
	if pid == 0 {
		return nil // never launched
	}
	select {
	case <-q.exited:
	default:
		if ctx.Err() != nil || !q.quit(ctx) || !q.waitExited(ctx, quitGrace) {
			log.G(ctx).WithField("vm", q.cfg.Name).WithField("pid", pid).Info("qemu did not quit in time, killing its process group")
			q.killGroup()
			select {
			case <-q.exited:
			case <-time.After(killWait):
				return fmt.Errorf("stop vm %s: qemu pid %d still alive %v after SIGKILL: it may be stuck in uninterruptible I/O; check /proc/%d/stack", q.cfg.Name, pid, killWait, pid)
			}
		}
	}
	if err := q.removeRuntimeFiles(); err != nil {
		return fmt.Errorf("stop vm %s: %w", q.cfg.Name, err)
	}
	return nil
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

// waitExited waits up to d (or until ctx ends) for QEMU to be reaped.
func (q *QEMU) waitExited(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-q.exited:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// killGroup SIGKILLs QEMU's process group unless QEMU has been reaped (after
// which its pid could belong to someone else).
func (q *QEMU) killGroup() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pid != 0 && !q.reaped {
		unix.Kill(-q.pid, unix.SIGKILL)
	}
}

func (q *QEMU) markStopped() {
	q.mu.Lock()
	q.stopped = true
	q.mu.Unlock()
}

// removeRuntimeFiles removes qmp.sock, qemu.pid and the agent socket.
func (q *QEMU) removeRuntimeFiles() error {
	paths := []string{q.cfg.QMPSocketPath(), q.cfg.PIDFilePath()}
	if q.cfg.Agent.Kind == vmm.AgentVirtioSerial && q.cfg.Agent.SocketPath != "" {
		paths = append(paths, q.cfg.Agent.SocketPath)
	}
	return removeFiles(paths...)
}

func removeFiles(paths ...string) error {
	var errs []error
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Exited is closed once QEMU has exited and been reaped.
func (q *QEMU) Exited() <-chan struct{} { return q.exited }

// ExitError returns nil before the exit, after exit status 0 and after a kill
// by Stop; otherwise an error with the exit status and QEMU's stderr tail.
func (q *QEMU) ExitError() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.exitErr
}

// Pid returns QEMU's pid (also its process group id), or 0 before Start.
func (q *QEMU) Pid() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pid
}

// ConsoleLogPath returns StateDir/console.log, the guest's serial console.
func (q *QEMU) ConsoleLogPath() string { return q.cfg.ConsoleLogPath() }
