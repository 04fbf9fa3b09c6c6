// Package vmproctest holds test helpers for VMM process handling (package
// vmproc and the backends built on it): a stand-in for a VMM's detached
// helper, checks of how a process ended, and network namespaces to start
// a VMM in.
package vmproctest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
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

// NewNetNS creates a network namespace and returns a handle to it, a path
// that opens it (/proc/<pid>/fd/<handle>, valid while the handle is open)
// and its inode number. The calling goroutine's thread is not moved. It
// skips the test when not root; Cleanup closes the handle, which frees the
// namespace once nothing else uses it.
func NewNetNS(t testing.TB) (ns netns.NsHandle, path string, ino uint64) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	type result struct {
		ns  netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer orig.Close()
		ns, err := netns.New() // switches this thread
		// Unlock only once back home; otherwise the thread exits with
		// this goroutine instead of running others in ns.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{ns, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("create a network namespace: %v", r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	ino, err := NetNSInode(fmt.Sprintf("/proc/self/fd/%d", int(r.ns)))
	if err != nil {
		t.Fatal(err)
	}
	return r.ns, fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(r.ns)), ino
}

// InNetNS runs f on a locked OS thread switched into ns, switches back and
// returns f's error, or the error entering ns. The thread returns to the
// scheduler only once back in its own namespace.
func InNetNS(ns netns.NsHandle, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- fmt.Errorf("get the current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		err = f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// NetNSInode returns the inode number of the network namespace file at
// path, such as /proc/<pid>/ns/net: two processes share a namespace when
// their inodes are equal.
func NetNSInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat network namespace %s: %w", path, err)
	}
	return st.Ino, nil
}
