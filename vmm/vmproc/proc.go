// Package vmproc runs a VMM child process (qemu-system-x86_64,
// cloud-hypervisor) for a Coffer backend: it starts it tagged with its VM's
// state directory so that orphans can be found, reaps it, kills its process
// group, and cleans up after a crashed shim (Cleanup).
//
// Process model: the VMM runs in its own process group (pgid = its pid) with
// Pdeathsig SIGKILL, so it dies with the thread that started it; Start pins
// that thread for the VMM's lifetime. Helpers the VMM forks stay in its group
// and are killed with it. Processes that leave the group (QEMU's guestfwd
// commands, which libslirp starts with setsid() and a double fork) still
// inherit the VMM's environment, which carries StateDirEnv=<StateDir> (Tag):
// whenever the VMM exits, and in Cleanup, every process carrying that entry
// is killed too.
package vmproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Spec names the VMM process of one VM.
type Spec struct {
	// Program names the VMM in messages: "qemu", "cloud-hypervisor".
	Program string
	// VM is the VM's name (vmm.Config.Name), for messages.
	VM string
	// StateDir is the VM's state directory; the process's environment is
	// tagged with it (Tag).
	StateDir string
	// StderrLog is the file the process's stdout and stderr go to
	// (StateDir/stderr.log), truncated by Start. Its last 4 KiB are quoted
	// in errors (StderrTail).
	StderrLog string
}

// Command is the program Start runs.
type Command struct {
	// Path is the VMM binary, absolute or looked up in PATH.
	Path string
	// Args are its arguments, without the binary.
	Args []string
	// ExtraFiles become the child's file descriptors 3, 4, ... (QEMU's
	// -netdev tap,fd=3); the caller keeps its copies.
	ExtraFiles []*os.File
	// NetNS is the network namespace to start the process in: a
	// bind-mounted file such as /var/run/netns/cni-<uuid>, or
	// /proc/<pid>/ns/net. Empty means the caller's. Start enters it only
	// on the pinned thread that forks the process, and leaves it again.
	NetNS string
}

// Proc is one VMM process. Create it with New; it starts at most once.
type Proc struct {
	spec Spec

	// startMu serializes Start with Stop, and Stops with each other.
	startMu sync.Mutex

	mu       sync.Mutex
	launched bool // Start ran
	stopped  bool // Stop or Abort ran, or Start gave up
	pid      int
	reaped   bool
	waitErr  error // raw error from exec.Cmd.Wait
	exitErr  error // what ExitError returns
	exited   chan struct{}
}

// New returns a Proc for spec, ready to Start.
func New(spec Spec) *Proc {
	return &Proc{spec: spec, exited: make(chan struct{})}
}

// Start runs prepare (when not nil; backends remove stale sockets there),
// truncates Spec.StderrLog and starts cmd with it as stdout and stderr, the
// environment entries Tag(StateDir) and VMNameEnv=<VM> added, in a new
// process group, with Pdeathsig SIGKILL and in the network namespace
// cmd.NetNS names, if any. It returns the pid once the process runs; ctx is
// only checked before the launch.
//
// Errors, all "start vm <VM>: ...": errdefs.ErrFailedPrecondition when Start
// already ran or Stop ran; ctx's error; prepare's error; "create <Program>
// stderr log: ..."; "run <Path>: ..." when the network namespace cannot be
// entered or exec fails. After an error
// nothing runs and the Proc cannot start again.
func (p *Proc) Start(ctx context.Context, cmd Command, prepare func() error) (int, error) {
	p.startMu.Lock()
	defer p.startMu.Unlock()
	p.mu.Lock()
	switch {
	case p.launched:
		p.mu.Unlock()
		return 0, fmt.Errorf("start vm %s: already started: %w", p.spec.VM, errdefs.ErrFailedPrecondition)
	case p.stopped:
		p.mu.Unlock()
		return 0, fmt.Errorf("start vm %s: already stopped: create a new VM: %w", p.spec.VM, errdefs.ErrFailedPrecondition)
	}
	p.launched = true
	p.mu.Unlock()

	if err := ctx.Err(); err != nil {
		p.markStopped()
		return 0, fmt.Errorf("start vm %s: %w", p.spec.VM, err)
	}
	if prepare != nil {
		if err := prepare(); err != nil {
			p.markStopped()
			return 0, fmt.Errorf("start vm %s: %w", p.spec.VM, err)
		}
	}
	out, err := os.OpenFile(p.spec.StderrLog, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		p.markStopped()
		return 0, fmt.Errorf("start vm %s: create %s stderr log: %w", p.spec.VM, p.spec.Program, err)
	}
	c := exec.Command(cmd.Path, cmd.Args...)
	c.Env = append(os.Environ(), Tag(p.spec.StateDir), VMNameEnv+"="+p.spec.VM)
	c.Stdout = out // a file: no copying goroutine, nothing lost at exit
	c.Stderr = out
	c.ExtraFiles = cmd.ExtraFiles
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	started := make(chan error, 1)
	go p.run(c, cmd.NetNS, out, log.G(ctx).WithField("vm", p.spec.VM), started)
	if err := <-started; err != nil {
		out.Close()
		p.markStopped()
		return 0, fmt.Errorf("start vm %s: run %s: %w", p.spec.VM, cmd.Path, err)
	}
	return p.Pid(), nil
}

// run starts cmd and supervises it until it is reaped. It keeps its
// goroutine locked to one OS thread for the process's whole life, because
// Pdeathsig fires when the creating thread (not process) exits, and Go may
// retire an idle thread. With netnsPath set, the thread enters that
// network namespace just for the fork (startIn).
func (p *Proc) run(cmd *exec.Cmd, netnsPath string, out *os.File, logger *log.Entry, started chan<- error) {
	runtime.LockOSThread()
	home := true
	defer func() {
		if home {
			runtime.UnlockOSThread()
		} // else the thread exits with this goroutine
	}()
	var err error
	if netnsPath == "" {
		err = cmd.Start()
	} else {
		home, err = startIn(netnsPath, cmd, logger)
	}
	if err != nil {
		started <- err
		return
	}
	pid := cmd.Process.Pid
	p.mu.Lock()
	p.pid = pid
	p.mu.Unlock()
	started <- nil

	if err := waitExitNoReap(pid); err != nil {
		logger.WithError(err).WithField("pid", pid).Warnf("waitid on %s failed", p.spec.Program)
	}
	// The VMM is a zombie, so its pid and group id are still reserved: kill
	// whatever is left in its group, then its detached helpers.
	p.mu.Lock()
	unix.Kill(-pid, unix.SIGKILL)
	p.mu.Unlock()
	if _, err := KillTagged(p.spec.StateDir); err != nil {
		logger.WithError(err).Warnf("kill %s's detached helpers", p.spec.Program)
	}
	err = cmd.Wait()
	out.Close()

	p.mu.Lock()
	p.reaped = true
	p.waitErr = err
	p.exitErr = p.classifyExit(err)
	p.mu.Unlock()
	if err != nil {
		logger.WithError(err).Debugf("%s exited", p.spec.Program)
	}
	close(p.exited)
}

// startIn starts cmd from the calling (locked) thread switched into the
// network namespace at path, then switches the thread back. It reports
// whether the thread is back in its own namespace; when it is not, the
// caller must not unlock it. Errors: "open network namespace <path>: ...",
// "enter network namespace <path>: ..." (nothing started then), or
// cmd.Start's.
func startIn(path string, cmd *exec.Cmd, logger *log.Entry) (home bool, err error) {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return true, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer target.Close()
	orig, err := netns.Get()
	if err != nil {
		return true, fmt.Errorf("get the current network namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		return true, fmt.Errorf("enter network namespace %s: %w", path, err)
	}
	err = cmd.Start()
	if rerr := netns.Set(orig); rerr != nil {
		logger.WithError(rerr).Warn("could not leave the network namespace the VMM was started in; retiring the thread with the VMM")
		return false, err
	}
	return true, err
}

// classifyExit turns cmd.Wait's error into ExitError's value. p.mu is held.
func (p *Proc) classifyExit(err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if p.stopped && errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return nil // killed by Stop or Abort
		}
	}
	return fmt.Errorf("%s pid %d for vm %s exited unexpectedly (%w): %s", p.spec.Program, p.pid, p.spec.VM, err, p.StderrTail())
}

// ExitedDuringStart returns the error a backend's Start gives when the
// process exited before its control socket answered: "start vm <VM>:
// <Program> exited during start (<wait status>): <stderr tail>". Call it
// once Exited is closed.
func (p *Proc) ExitedDuringStart() error {
	p.mu.Lock()
	waitErr := p.waitErr
	p.mu.Unlock()
	return fmt.Errorf("start vm %s: %s exited during start (%v): %s", p.spec.VM, p.spec.Program, waitErr, p.StderrTail())
}

// Abort undoes a Start whose later steps failed: it marks the Proc stopped
// (so the exit counts as a kill, and ExitError stays nil), SIGKILLs the
// process group and waits up to KillWait for the reap. It reports whether
// the process was reaped.
func (p *Proc) Abort() bool {
	p.markStopped()
	p.killGroup()
	select {
	case <-p.exited:
		return true
	case <-time.After(KillWait):
		return false
	}
}

// Stop ends the process. Unless it has exited already or ctx is done, it
// calls quit (the backend's graceful request, which reports whether the VMM
// accepted it) and waits up to grace for the exit; then it SIGKILLs the
// process group and waits up to KillWait for the reap. Last, if Start had
// launched the process, it runs remove (the backend's socket removal). Stop
// is idempotent and a no-op before Start.
//
// Errors: "stop vm <VM>: <Program> pid N still alive 5s after SIGKILL: ...",
// or "stop vm <VM>: " and remove's error.
func (p *Proc) Stop(ctx context.Context, grace time.Duration, quit func(context.Context) bool, remove func() error) error {
	p.startMu.Lock()
	defer p.startMu.Unlock()
	p.markStopped()
	pid := p.Pid()
	if pid == 0 {
		return nil // never launched
	}
	select {
	case <-p.exited:
	default:
		if ctx.Err() != nil || !quit(ctx) || !p.waitExited(ctx, grace) {
			log.G(ctx).WithField("vm", p.spec.VM).WithField("pid", pid).Infof("%s did not exit in time, killing its process group", p.spec.Program)
			p.killGroup()
			select {
			case <-p.exited:
			case <-time.After(KillWait):
				return fmt.Errorf("stop vm %s: %w", p.spec.VM, stillAlive(fmt.Sprintf("%s pid %d", p.spec.Program, pid), pid))
			}
		}
	}
	if err := remove(); err != nil {
		return fmt.Errorf("stop vm %s: %w", p.spec.VM, err)
	}
	return nil
}

// waitExited waits up to d (or until ctx ends) for the reap.
func (p *Proc) waitExited(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exited:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// killGroup SIGKILLs the process group unless the process has been reaped
// (after which its pid could belong to someone else).
func (p *Proc) killGroup() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pid != 0 && !p.reaped {
		unix.Kill(-p.pid, unix.SIGKILL)
	}
}

func (p *Proc) markStopped() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
}

// Exited is closed once the process has exited and been reaped. It is never
// closed if Start did not launch a process.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// ExitError returns nil before the exit, after exit status 0 and after a
// kill by Stop or Abort; otherwise "<Program> pid N for vm <VM> exited
// unexpectedly (<status>): <stderr tail>".
func (p *Proc) ExitError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// Pid returns the process id (also its process group id), or 0 before
// Start.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}
