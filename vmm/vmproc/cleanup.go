package vmproc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// StateDirEnv is the environment variable every VMM started by Start
// carries, set to its (cleaned) state directory. Processes the VMM spawns
// inherit it, including ones that leave its process group; KillTagged finds
// them by it.
const StateDirEnv = "COFFER_VMM_STATE_DIR"

// VMNameEnv is the environment variable every VMM started by Start
// carries, set to its VM's name (Spec.VM, "coffer-<sandbox id>" in the
// shim), so that ps and tests can tell which pod a VMM belongs to even
// when, like cloud-hypervisor, it has no name on its command line.
const VMNameEnv = "COFFER_VM_NAME"

// KillWait bounds how long this package waits for a SIGKILLed process to
// exit; only a process stuck in uninterruptible I/O takes longer.
const KillWait = 5 * time.Second

// Tag returns the environment entry "COFFER_VMM_STATE_DIR=<stateDir>"
// (cleaned with filepath.Clean) that Start adds.
func Tag(stateDir string) string {
	return StateDirEnv + "=" + filepath.Clean(stateDir)
}

// Cleanup kills and removes what a VMM left in stateDir after its
// supervisor (the shim) died without stopping it. It is safe to call when
// nothing is left, and more than once. It kills every process tagged with
// stateDir (KillTagged: the VMM itself and its detached helpers) and
// removes every unix socket directly in stateDir (RemoveSockets); logs
// stay for diagnosis.
//
// Errors, joined under "clean up vm state dir <stateDir>: ": a process
// still alive 5 s after SIGKILL, an unreadable /proc or stateDir, a socket
// that cannot be removed.
func Cleanup(stateDir string) error {
	stateDir = filepath.Clean(stateDir)
	var errs []error
	if _, err := KillTagged(stateDir); err != nil {
		errs = append(errs, err)
	}
	if err := RemoveSockets(stateDir); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("clean up vm state dir %s: %w", stateDir, errors.Join(errs...))
	}
	return nil
}

// KillTagged SIGKILLs every process except this one whose environment holds
// Tag(stateDir), together with the process group it leads, if any, and
// waits up to KillWait for them to exit. It returns the pids it killed.
// Processes are addressed through pidfds, so a pid reused between the scan
// and the kill is never hit. Reading another user's environment needs root
// (or the same uid); unreadable processes are skipped.
//
// Errors: /proc cannot be listed; a killed process still alive after
// KillWait (the pids are returned all the same).
func KillTagged(stateDir string) ([]int, error) {
	tag := append([]byte(Tag(stateDir)), 0)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("scan /proc for processes of vm state dir %s: %w", stateDir, err)
	}
	self := os.Getpid()
	var pids []int
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // gone already
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		// The pidfd still refers to the process whose environ we read:
		// had it exited, the pid could not have been reused while open.
		if err != nil || !(bytes.HasPrefix(env, tag) || bytes.Contains(env, append([]byte{0}, tag...))) || !killPidfd(fd, pid) {
			unix.Close(fd)
			continue
		}
		pids = append(pids, pid)
		fds = append(fds, fd)
	}
	for i, fd := range fds {
		if !waitPidfd(fd, KillWait) {
			return pids, stillAlive(fmt.Sprintf("process %d of vm state dir %s", pids[i], stateDir), pids[i])
		}
	}
	return pids, nil
}

// KillIf SIGKILLs process pid, and the process group it leads if any, when
// match(pid) reports true, then waits up to KillWait for it to exit. match
// runs once pid is pinned by a pidfd, so a process that match accepted
// is the one killed even if its pid is reused meanwhile. A pid with no
// process, or one match refuses, is left alone.
//
// Errors: "<what> pid N still alive 5s after SIGKILL: ..." when the process
// outlives KillWait.
func KillIf(pid int, what string, match func(pid int) bool) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil // no such process
	}
	defer unix.Close(fd)
	if !match(pid) || !killPidfd(fd, pid) {
		return nil // another process, or exited in between
	}
	if !waitPidfd(fd, KillWait) {
		return stillAlive(fmt.Sprintf("%s pid %d", what, pid), pid)
	}
	return nil
}

// RemoveSockets removes every unix socket directly in dir and the named
// files (paths; a missing one is no error).
//
// Errors: dir cannot be listed (a missing dir is no error); files that
// cannot be removed, joined.
func RemoveSockets(dir string, files ...string) error {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("list state dir: %w", err)
	}
	paths := slices.Clone(files)
	for _, e := range entries {
		if p := filepath.Join(dir, e.Name()); e.Type()&os.ModeSocket != 0 && !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	return RemoveFiles(paths...)
}

// RemoveFiles removes each path; one that does not exist is no error.
// The errors of the others are joined.
func RemoveFiles(paths ...string) error {
	var errs []error
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killPidfd SIGKILLs the process behind fd and, when pid leads its own
// process group, the group. It reports whether the process got the signal.
func killPidfd(fd, pid int) bool {
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		return false
	}
	if pgid, err := unix.Getpgid(pid); err == nil && pgid == pid {
		unix.Kill(-pid, unix.SIGKILL)
	}
	return true
}

// stillAlive words a process that outlived SIGKILL; what names it.
func stillAlive(what string, pid int) error {
	return fmt.Errorf("%s still alive %v after SIGKILL: it may be stuck in uninterruptible I/O; check /proc/%d/stack", what, KillWait, pid)
}

// waitPidfd waits up to timeout for the process behind the pidfd to exit
// (it need not be our child, nor reaped) and reports whether it did.
func waitPidfd(fd int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left < 0 {
			left = 0
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds()))
		if err == nil && n > 0 {
			return true
		}
		if errors.Is(err, unix.EINTR) && left > 0 {
			continue
		}
		return false
	}
}

// waitExitNoReap blocks until the child pid has exited, leaving it a zombie
// so that its pid, and so its process group id, cannot be reused yet.
func waitExitNoReap(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
