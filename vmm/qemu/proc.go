package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// stateDirEnv is the environment variable every QEMU started by this package
// carries, set to its (cleaned) StateDir. Processes QEMU spawns inherit it,
// including guestfwd commands, which libslirp detaches with setsid() and a
// double fork so that neither QEMU's process group nor Pdeathsig reaches
// them. killTagged finds them by it.
const stateDirEnv = "COFFER_VMM_STATE_DIR"

// killWait bounds how long this package waits for a SIGKILLed process to
// exit; only a process stuck in uninterruptible I/O takes longer.
const killWait = 5 * time.Second

func stateDirTag(stateDir string) string {
	return stateDirEnv + "=" + filepath.Clean(stateDir)
}

// killTagged SIGKILLs every process except this one whose environment holds
// stateDirTag(stateDir), together with the process group it leads, if any,
// and waits up to killWait for them to exit. It returns the pids it killed.
// Processes are addressed through pidfds, so a pid reused between the scan
// and the kill is never hit. Reading another user's environment needs root
// (or the same uid); unreadable processes are skipped.
func killTagged(stateDir string) ([]int, error) {
	tag := append([]byte(stateDirTag(stateDir)), 0)
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
		if err != nil || !(bytes.HasPrefix(env, tag) || bytes.Contains(env, append([]byte{0}, tag...))) {
			unix.Close(fd)
			continue
		}
		// The pidfd still refers to the process whose environ we read:
		// had it exited, the pid could not have been reused while open.
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
			unix.Close(fd)
			continue
		}
		if pgid, err := unix.Getpgid(pid); err == nil && pgid == pid {
			unix.Kill(-pid, unix.SIGKILL)
		}
		pids = append(pids, pid)
		fds = append(fds, fd)
	}
	for i, fd := range fds {
		if !waitPidfd(fd, killWait) {
			return pids, fmt.Errorf("process %d of vm state dir %s still alive %v after SIGKILL: it may be stuck in uninterruptible I/O; check /proc/%d/stack", pids[i], stateDir, killWait, pids[i])
		}
	}
	return pids, nil
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

// cmdlineHasArg reports whether /proc/<pid>/cmdline has an argument equal to
// arg.
func cmdlineHasArg(pid int, arg string) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	for _, a := range bytes.Split(b, []byte{0}) {
		if string(a) == arg {
			return true
		}
	}
	return false
}
