package qemu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cofferhq/coffer/vmm"
	"golang.org/x/sys/unix"
)

// Cleanup kills and removes what a VM left in stateDir after its supervisor
// (the shim) died without calling Stop. It is safe to call when nothing is
// left, and more than once.
//
// It reads stateDir/qemu.pid and kills that process only if its
// /proc/<pid>/cmdline has "-pidfile stateDir/qemu.pid", so a reused pid is
// never hit: SIGKILL to the process and, when it leads its own group, to the
// group. It waits up to 5 s for it to exit. It then kills every process whose
// environment holds COFFER_VMM_STATE_DIR=<stateDir> (QEMU's detached guestfwd
// commands; see the package doc), and removes qemu.pid, qmp.sock and every
// other unix socket directly in stateDir. console.log and stderr.log stay for
// diagnosis.
//
// Errors, joined: an unreadable or malformed pid file, a process still alive
// 5 s after SIGKILL, a file that cannot be removed.
func Cleanup(stateDir string) error {
	stateDir = filepath.Clean(stateDir)
	pidPath := filepath.Join(stateDir, vmm.PIDFileName)
	var errs []error
	if pid, err := readPIDFile(pidPath); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	} else if err := killVerified(pid, pidPath); err != nil {
		errs = append(errs, err)
	}
	if _, err := killTagged(stateDir); err != nil {
		errs = append(errs, err)
	}
	if err := removeStateSockets(stateDir); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("clean up vm state dir %s: %w", stateDir, errors.Join(errs...))
	}
	return nil
}

func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read qemu pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("qemu pid file %s holds %q, want a process id: delete it if no QEMU runs for this VM", path, strings.TrimSpace(string(b)))
	}
	return pid, nil
}

// killVerified SIGKILLs pid (and its group, if it leads one) if it is the
// QEMU that wrote pidPath, then waits for it to exit.
func killVerified(pid int, pidPath string) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil // no such process: QEMU is gone
	}
	defer unix.Close(fd)
	// Checked after the pidfd is open: the pidfd pins this very process.
	if !cmdlineHasArg(pid, pidPath) {
		return nil // the pid now belongs to another process
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		return nil // exited in between
	}
	if pgid, err := unix.Getpgid(pid); err == nil && pgid == pid {
		unix.Kill(-pid, unix.SIGKILL)
	}
	if !waitPidfd(fd, killWait) {
		return fmt.Errorf("qemu pid %d still alive %v after SIGKILL: it may be stuck in uninterruptible I/O; check /proc/%d/stack", pid, killWait, pid)
	}
	return nil
}

// removeStateSockets removes qemu.pid, qmp.sock and any other unix socket
// directly in stateDir.
func removeStateSockets(stateDir string) error {
	paths := []string{filepath.Join(stateDir, vmm.PIDFileName), filepath.Join(stateDir, vmm.QMPSocketName)}
	entries, err := os.ReadDir(stateDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("list state dir: %w", err)
	}
	for _, e := range entries {
		if e.Type()&os.ModeSocket != 0 && e.Name() != vmm.QMPSocketName {
			paths = append(paths, filepath.Join(stateDir, e.Name()))
		}
	}
	return removeFiles(paths...)
}
