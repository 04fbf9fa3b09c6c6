// Package vmm defines how Coffer describes and drives the virtual machine that
// holds one pod: the typed Config the shim fills in, its validation, the
// accelerator choice, the checks backends reuse (Check*), and the small VMM
// interface a backend (package vmm/qemu or vmm/cloudhypervisor) implements;
// package vmm/vmproc runs the backend's process.
//
// One VM runs per pod. Every VM owns a state directory (Config.StateDir, for
// example /run/cc/<short-hash>/) that holds its QMP socket, serial console
// log, pid file and QEMU's stderr log. Keep that path short: unix socket
// paths are limited to 107 bytes plus a NUL (sun_path is 108 bytes).
package vmm

import "context"

// VMM is one virtual machine process.
//
// Lifecycle contract:
//   - Start launches the VM once. It returns nil only when the hypervisor is
//     running and its control socket answers; the guest may still be booting
//     (watch ConsoleLogPath and the agent for that). ctx bounds only the wait
//     during Start: the VM outlives it. If the hypervisor exits during
//     Start, or ctx ends first, Start kills whatever it started and returns
//     an error that carries the hypervisor's own stderr. Calling Start twice,
//     or after Stop, returns an error wrapping errdefs.ErrFailedPrecondition.
//   - Stop asks the VM to quit, waits a short grace period, then kills the
//     whole process tree, reaps it and removes the control and agent sockets.
//     It is idempotent and safe to call concurrently, before Start (a no-op)
//     and after the VM exited on its own. A done ctx skips the graceful
//     quit. It returns an error only when the process is still alive a few
//     seconds after SIGKILL, or when a socket cannot be removed.
//   - Exited is closed once the VM process has exited and been reaped, for
//     whatever reason (Stop, guest poweroff or reboot, crash, external kill).
//     It is never closed if Start never launched a process.
//   - ExitError is valid after Exited is closed: nil for a clean exit (status
//     0, or killed by Stop), otherwise the exit status and the tail of the
//     hypervisor's stderr. It returns nil before the exit.
//   - Pid is the hypervisor's process id (also its process group id), or 0
//     before Start.
//   - ConsoleLogPath is the file the guest's serial console is written to
//     (StateDir/console.log); feed it to vmm/bootlog to explain a failed boot.
type VMM interface {
	// Start launches the VM and waits until its control socket answers.
	Start(ctx context.Context) error
	// Stop shuts the VM down (graceful quit, then SIGKILL) and removes its sockets.
	Stop(ctx context.Context) error
	// Exited is closed when the VM process has exited and been reaped.
	Exited() <-chan struct{}
	// ExitError explains an unexpected exit; nil before the exit or for a clean one.
	ExitError() error
	// Pid returns the hypervisor's process id, 0 before Start.
	Pid() int
	// ConsoleLogPath returns the path of the guest serial console log.
	ConsoleLogPath() string
}
