package vmproc

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/vmm/vmproc/vmproctest"
	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

// newProc returns a Proc for a VM "test" in a fresh state directory.
func newProc(t *testing.T) (*Proc, Spec) {
	t.Helper()
	dir := t.TempDir()
	spec := Spec{Program: "sleepvmm", VM: "test", StateDir: dir, StderrLog: filepath.Join(dir, "stderr.log")}
	p := New(spec)
	t.Cleanup(func() { p.Stop(context.Background(), 0, noQuit, noRemove) })
	return p, spec
}

func noQuit(context.Context) bool { return false }
func noRemove() error             { return nil }

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestStartStopKills(t *testing.T) {
	p, spec := newProc(t)
	require.Zero(t, p.Pid())
	var prepared bool
	pid, err := p.Start(testCtx(t, 5*time.Second), Command{Path: "sleep", Args: []string{"60"}}, func() error { prepared = true; return nil })
	require.NoError(t, err)
	require.True(t, prepared, "Start runs prepare")
	require.Equal(t, pid, p.Pid())
	require.True(t, vmproctest.Alive(pid))
	pgid, err := syscall.Getpgid(pid)
	require.NoError(t, err)
	require.Equal(t, pid, pgid, "the process leads its own group")
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	require.NoError(t, err)
	require.True(t, bytes.Contains(env, []byte(Tag(spec.StateDir)+"\x00")), "environment carries %s", Tag(spec.StateDir))
	require.True(t, bytes.Contains(env, []byte("\x00"+VMNameEnv+"="+spec.VM+"\x00")), "environment carries the VM name %s", spec.VM)
	require.FileExists(t, spec.StderrLog)
	select {
	case <-p.Exited():
		t.Fatal("Exited closed while the process runs")
	default:
	}
	_, err = p.Start(testCtx(t, time.Second), Command{Path: "sleep", Args: []string{"60"}}, nil)
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
	helper := vmproctest.StartDetached(t, Tag(spec.StateDir))

	removed := 0
	require.NoError(t, p.Stop(testCtx(t, 10*time.Second), time.Second, noQuit, func() error { removed++; return nil }))
	require.Equal(t, 1, removed, "Stop runs remove once")
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited not closed after Stop")
	}
	require.NoError(t, p.ExitError(), "a kill by Stop is a clean exit")
	vmproctest.WaitKilled(t, helper)
	require.NoError(t, p.Stop(testCtx(t, time.Second), time.Second, noQuit, noRemove), "Stop is idempotent")
	_, err = p.Start(testCtx(t, time.Second), Command{Path: "sleep", Args: []string{"60"}}, nil)
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
}

// TestStartInNetns starts the process in another network namespace; the
// starting side stays in its own.
func TestStartInNetns(t *testing.T) {
	_, nsPath, nsIno := vmproctest.NewNetNS(t)
	before, err := vmproctest.NetNSInode("/proc/thread-self/ns/net")
	require.NoError(t, err)
	p, _ := newProc(t)
	pid, err := p.Start(testCtx(t, 5*time.Second), Command{Path: "sleep", Args: []string{"60"}, NetNS: nsPath}, nil)
	require.NoError(t, err)
	got, err := vmproctest.NetNSInode("/proc/" + strconv.Itoa(pid) + "/ns/net")
	require.NoError(t, err)
	require.Equal(t, nsIno, got, "the process runs in the namespace it was given")
	after, err := vmproctest.NetNSInode("/proc/thread-self/ns/net")
	require.NoError(t, err)
	require.Equal(t, before, after)
	require.NotEqual(t, nsIno, after)
	require.NoError(t, p.Stop(testCtx(t, 5*time.Second), 0, noQuit, noRemove))

	missing := filepath.Join(t.TempDir(), "no-netns")
	p2, _ := newProc(t)
	_, err = p2.Start(testCtx(t, 5*time.Second), Command{Path: "sleep", Args: []string{"60"}, NetNS: missing}, nil)
	require.ErrorContains(t, err, "start vm test: run sleep: open network namespace "+missing)
	require.Zero(t, p2.Pid(), "nothing started")
}

func TestStopGraceful(t *testing.T) {
	p, _ := newProc(t)
	pid, err := p.Start(testCtx(t, 5*time.Second), Command{Path: "sleep", Args: []string{"60"}}, nil)
	require.NoError(t, err)
	quit := func(context.Context) bool { return syscall.Kill(pid, syscall.SIGTERM) == nil }
	start := time.Now()
	require.NoError(t, p.Stop(testCtx(t, 10*time.Second), 5*time.Second, quit, noRemove))
	require.Less(t, time.Since(start), 2*time.Second, "Stop waits for the exit quit asked for, not the whole grace")
	require.NoError(t, p.ExitError())
}

func TestStopBeforeStart(t *testing.T) {
	p, _ := newProc(t)
	called := false
	require.NoError(t, p.Stop(testCtx(t, time.Second), time.Second, noQuit, func() error { called = true; return nil }))
	require.False(t, called, "Stop before Start removes nothing")
	_, err := p.Start(testCtx(t, time.Second), Command{Path: "sleep", Args: []string{"60"}}, nil)
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
	require.ErrorContains(t, err, "already stopped")
}

func TestUnexpectedExit(t *testing.T) {
	p, _ := newProc(t)
	_, err := p.Start(testCtx(t, 5*time.Second), Command{Path: "sh", Args: []string{"-c", "echo first >&2; echo boom >&2; exit 3"}}, nil)
	require.NoError(t, err)
	select {
	case <-p.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("Exited not closed after the process exited")
	}
	require.ErrorContains(t, p.ExitError(), "sleepvmm pid "+strconv.Itoa(p.Pid())+" for vm test exited unexpectedly (exit status 3): first; boom")
	require.EqualError(t, p.ExitedDuringStart(), "start vm test: sleepvmm exited during start (exit status 3): first; boom")
}

func TestAbort(t *testing.T) {
	p, _ := newProc(t)
	pid, err := p.Start(testCtx(t, 5*time.Second), Command{Path: "sleep", Args: []string{"60"}}, nil)
	require.NoError(t, err)
	require.True(t, p.Abort(), "Abort reaps the process")
	require.False(t, vmproctest.Alive(pid))
	require.NoError(t, p.ExitError(), "a kill by Abort is a clean exit")
}

func TestStartErrors(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		cmd     Command
		prepare func() error
		want    string
	}{
		{"prepare", context.Background(), Command{Path: "sleep"}, func() error { return errors.New("remove stale sockets: busy") },
			"start vm test: remove stale sockets: busy"},
		{"binary", context.Background(), Command{Path: "/nonexistent/vmm"}, nil, "start vm test: run /nonexistent/vmm: "},
		{"ctx", cancelled, Command{Path: "sleep"}, nil, "start vm test: context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := newProc(t)
			_, err := p.Start(tt.ctx, tt.cmd, tt.prepare)
			require.ErrorContains(t, err, tt.want)
			require.Zero(t, p.Pid())
			_, err = p.Start(context.Background(), Command{Path: "sleep", Args: []string{"60"}}, nil)
			require.ErrorIs(t, err, errdefs.ErrFailedPrecondition, "a failed Start cannot be retried")
		})
	}
}

func TestStderrTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stderr.log")
	require.Contains(t, fileTail(path, 10), "no stderr log (open "+path)
	require.NoError(t, os.WriteFile(path, []byte(" \n"), 0o600))
	require.Equal(t, "no output on stderr ("+path+")", fileTail(path, 10))
	require.NoError(t, os.WriteFile(path, []byte("abc\ndef\r\n"), 0o600))
	require.Equal(t, "abc; def", fileTail(path, 10))
	require.NoError(t, os.WriteFile(path, []byte("abc\ndef\r\nghij"), 0o600))
	require.Equal(t, "...def; ghij", fileTail(path, 10))
	require.NoError(t, os.WriteFile(path, []byte(strings.Repeat("x", 25)+"0123456789"), 0o600))
	require.Equal(t, "...0123456789", fileTail(path, 10))
}
