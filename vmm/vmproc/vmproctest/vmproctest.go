// Package vmproctest holds test helpers for VMM process handling (package
// vmproc and the backends built on it): a stand-in for a VMM's detached
// helper, and checks of how a process ended.
package vmproctest

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// StartDetached starts `sleep 60` the way libslirp starts a QEMU guestfwd
// command: in a new session, with envEntry ("KEY=value", such as
// vmproc.Tag(stateDir)) added to its environment. The test's cleanup kills
// and reaps it if it still runs.
func StartDetached(t testing.TB, envEntry string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.Env = append(os.Environ(), envEntry)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a detached sleep: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// WaitKilled waits up to 5 s for cmd (a started child) to end and reports
// a test error unless SIGKILL ended it.
func WaitKilled(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("pid %d ended with %v, want SIGKILL", cmd.Process.Pid, err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("pid %d still running 5s after it should have been killed", cmd.Process.Pid)
	}
}

// ProcState returns the state letter from /proc/<pid>/stat ("R", "S", "Z",
// ...) or "" when there is no such process.
func ProcState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return "?"
}

// Alive reports whether pid runs (exists and is not a zombie).
func Alive(pid int) bool {
	st := ProcState(pid)
	return st != "" && st != "Z"
}
