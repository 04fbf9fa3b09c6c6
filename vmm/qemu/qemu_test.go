package qemu

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

	"github.com/cofferhq/coffer/vmm/qmp"
	"github.com/cofferhq/coffer/vmm/vmproc"
	"github.com/cofferhq/coffer/vmm/vmproc/vmproctest"
	"github.com/containerd/errdefs"
)

func TestStartStop(t *testing.T) {
	requireQEMU(t)
	cfg := testConfig(t)
	// A stale socket from an earlier run must not confuse Start.
	if err := os.WriteFile(cfg.QMPSocketPath(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if q.Pid() != 0 {
		t.Errorf("Pid() before Start = %d, want 0", q.Pid())
	}
	if err := q.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatalf("Start() = %v", err)
	}
	pid := q.Pid()
	if !vmproctest.Alive(pid) {
		t.Fatalf("qemu pid %d is not running after Start", pid)
	}
	if pgid, _ := syscall.Getpgid(pid); pgid != pid {
		t.Errorf("qemu pgid = %d, want its own group %d", pgid, pid)
	}
	if b, _ := os.ReadFile(cfg.PIDFilePath()); strings.TrimSpace(string(b)) != strconv.Itoa(pid) {
		t.Errorf("pid file holds %q, want %d", b, pid)
	}
	if env, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ"); !bytes.Contains(env, []byte(vmproc.Tag(cfg.StateDir)+"\x00")) {
		t.Errorf("qemu environment lacks %s", vmproc.Tag(cfg.StateDir))
	}
	for _, p := range []string{cfg.QMPSocketPath(), cfg.Agent.SocketPath, cfg.ConsoleLogPath(), cfg.StderrLogPath()} {
		if !exists(p) {
			t.Errorf("%s missing while the VM runs", p)
		}
	}
	if q.ConsoleLogPath() != filepath.Join(cfg.StateDir, "console.log") {
		t.Errorf("ConsoleLogPath() = %s", q.ConsoleLogPath())
	}
	select {
	case <-q.Exited():
		t.Fatal("Exited() closed while the VM runs")
	default:
	}
	err = q.Start(testCtx(t, time.Second))
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("second Start() = %v, want ErrFailedPrecondition", err)
	}
	helper := vmproctest.StartDetached(t, vmproc.Tag(cfg.StateDir))

	start := time.Now()
	if err := q.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatalf("Stop() = %v", err)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("Stop() took %v; a QMP quit should take well under a second", d)
	}
	select {
	case <-q.Exited():
	default:
		t.Fatal("Exited() not closed after Stop")
	}
	if st := vmproctest.ProcState(pid); st != "" {
		t.Errorf("qemu pid %d still in /proc (state %s) after Stop", pid, st)
	}
	vmproctest.WaitKilled(t, helper)
	for _, p := range []string{cfg.QMPSocketPath(), cfg.Agent.SocketPath, cfg.PIDFilePath()} {
		if exists(p) {
			t.Errorf("%s left behind after Stop", p)
		}
	}
	if err := q.ExitError(); err != nil {
		t.Errorf("ExitError() after Stop = %v, want nil", err)
	}
	if err := q.Stop(testCtx(t, time.Second)); err != nil {
		t.Errorf("second Stop() = %v, want nil", err)
	}
	if err := q.Start(testCtx(t, time.Second)); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Start() after Stop = %v, want ErrFailedPrecondition", err)
	}
}

func TestStopBeforeStart(t *testing.T) {
	requireQEMU(t)
	q, err := New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Stop(testCtx(t, time.Second)); err != nil {
		t.Errorf("Stop() before Start = %v, want nil", err)
	}
	if err := q.ExitError(); err != nil {
		t.Errorf("ExitError() = %v, want nil", err)
	}
}

// TestStopKillsWhenQMPBusy holds the only QMP connection so that Stop cannot
// quit gracefully and must kill the process group.
func TestStopKillsWhenQMPBusy(t *testing.T) {
	requireQEMU(t)
	cfg := testConfig(t)
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	c, err := qmp.Connect(testCtx(t, 5*time.Second), cfg.QMPSocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pid := q.Pid()
	start := time.Now()
	if err := q.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatalf("Stop() = %v", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Stop() took %v, want about the 1 s QMP timeout", d)
	}
	if st := vmproctest.ProcState(pid); st != "" {
		t.Errorf("qemu pid %d still in /proc (state %s) after Stop", pid, st)
	}
	if err := q.ExitError(); err != nil {
		t.Errorf("ExitError() after a kill by Stop = %v, want nil", err)
	}
	if exists(cfg.QMPSocketPath()) || exists(cfg.PIDFilePath()) {
		t.Error("Stop left qmp.sock or qemu.pid after SIGKILL")
	}
}

func TestUnexpectedExit(t *testing.T) {
	requireQEMU(t)
	t.Run("killed from outside", func(t *testing.T) {
		cfg := testConfig(t)
		q, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Start(testCtx(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		helper := vmproctest.StartDetached(t, vmproc.Tag(cfg.StateDir))
		syscall.Kill(q.Pid(), syscall.SIGKILL)
		select {
		case <-q.Exited():
		case <-time.After(5 * time.Second):
			t.Fatal("Exited() not closed 5 s after SIGKILL")
		}
		// QEMU's detached helpers die with it even without Stop.
		vmproctest.WaitKilled(t, helper)
		err = q.ExitError()
		if err == nil || !strings.Contains(err.Error(), "exited unexpectedly (signal: killed)") {
			t.Errorf("ExitError() = %v, want an unexpected exit by signal", err)
		}
		if err := q.Stop(testCtx(t, 5*time.Second)); err != nil {
			t.Errorf("Stop() after the exit = %v", err)
		}
		if exists(cfg.QMPSocketPath()) || exists(cfg.Agent.SocketPath) || exists(cfg.PIDFilePath()) {
			t.Error("Stop left sockets or the pid file behind a killed QEMU")
		}
	})
	t.Run("clean quit from the guest side", func(t *testing.T) {
		cfg := testConfig(t)
		q, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := testCtx(t, 10*time.Second)
		if err := q.Start(ctx); err != nil {
			t.Fatal(err)
		}
		c, err := qmp.Connect(ctx, cfg.QMPSocketPath())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Quit(ctx); err != nil {
			t.Fatal(err)
		}
		c.Close()
		select {
		case <-q.Exited():
		case <-time.After(5 * time.Second):
			t.Fatal("Exited() not closed 5 s after quit")
		}
		if err := q.ExitError(); err != nil {
			t.Errorf("ExitError() after exit status 0 = %v, want nil", err)
		}
		q.Stop(ctx)
	})
}

func TestStartFailureCarriesStderr(t *testing.T) {
	requireQEMU(t)
	tests := []struct {
		name   string
		break_ func(t *testing.T, kernel string)
		want   string
	}{
		{"kernel removed after validation", func(t *testing.T, kernel string) { os.Remove(kernel) },
			"could not open kernel file"},
		{"garbage kernel", func(t *testing.T, kernel string) { os.WriteFile(kernel, make([]byte, 4096), 0o644) },
			"linux kernel too old to load a ram disk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			tt.break_(t, cfg.Kernel)
			err = q.Start(testCtx(t, 10*time.Second))
			if err == nil {
				q.Stop(testCtx(t, 5*time.Second))
				t.Fatal("Start() = nil, want an error")
			}
			for _, w := range []string{"qemu exited during start (exit status 1): ", tt.want} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Start() = %q, want it to contain %q", err, w)
				}
			}
			if log, _ := os.ReadFile(cfg.StderrLogPath()); !strings.Contains(string(log), tt.want) {
				t.Errorf("stderr.log = %q, want it to contain %q", log, tt.want)
			}
			if st := vmproctest.ProcState(q.Pid()); st != "" {
				t.Errorf("qemu pid %d still in /proc after a failed start", q.Pid())
			}
			for _, p := range []string{cfg.QMPSocketPath(), cfg.Agent.SocketPath, cfg.PIDFilePath()} {
				if exists(p) {
					t.Errorf("%s left behind after a failed start", p)
				}
			}
			if err := q.ExitError(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ExitError() = %v, want it to carry %q", err, tt.want)
			}
		})
	}
}

// TestStartDeadline runs a QEMU without a QMP socket (through the test hook
// that replaces the arguments) so that Start's context ends first.
func TestStartDeadline(t *testing.T) {
	requireQEMU(t)
	cfg := testConfig(t)
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	q.args = []string{"-machine", "none", "-nodefaults", "-no-user-config", "-display", "none"}
	start := time.Now()
	err = q.Start(testCtx(t, 300*time.Millisecond))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start() = %v, want a deadline error", err)
	}
	if !strings.Contains(err.Error(), "qmp socket "+cfg.QMPSocketPath()+" did not answer") {
		t.Errorf("Start() = %q, want it to name the silent QMP socket", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Start() took %v after a 300 ms deadline", d)
	}
	if st := vmproctest.ProcState(q.Pid()); st != "" {
		t.Errorf("qemu pid %d still in /proc (state %s) after Start gave up", q.Pid(), st)
	}
}
