package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cofferhq/coffer/vmm"
	"github.com/cofferhq/coffer/vmm/vmproc"
)

// Cleanup kills and removes what a VM left in stateDir after its supervisor
// (the shim) died without calling Stop. It is safe to call when nothing is
// left, and more than once. It works for any backend's state directory
// (vmproc.Cleanup plus QEMU's pid file), so the shim calls it for a stale
// one whatever the VMM.
//
// It reads stateDir/qemu.pid and kills that process only if its
// /proc/<pid>/cmdline has "-pidfile stateDir/qemu.pid", so a reused pid is
// never hit: SIGKILL to the process and, when it leads its own group, to the
// group. It waits up to 5 s for it to exit. It then kills every process whose
// environment holds COFFER_VMM_STATE_DIR=<stateDir> (vmproc.KillTagged: QEMU
// itself and its detached guestfwd commands, see package vmproc), and
// removes qemu.pid, qmp.sock and every other unix socket directly in
// stateDir. console.log and stderr.log stay for diagnosis.
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
	} else if err := vmproc.KillIf(pid, "qemu", func(pid int) bool { return cmdlineHasArg(pid, pidPath) }); err != nil {
		errs = append(errs, err)
	}
	if _, err := vmproc.KillTagged(stateDir); err != nil {
		errs = append(errs, err)
	}
	if err := vmproc.RemoveSockets(stateDir, pidPath, filepath.Join(stateDir, vmm.QMPSocketName)); err != nil {
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
