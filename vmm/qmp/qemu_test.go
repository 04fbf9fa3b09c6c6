package qmp

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// startQEMU starts a kernel-less QEMU (-machine none) serving QMP and returns
// its socket path and process.
func startQEMU(t *testing.T) (string, *exec.Cmd) {
	t.Helper()
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 is not installed: the real-QEMU QMP test needs it")
	}
	dir, err := os.MkdirTemp("", "qmpq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "qmp.sock")
	cmd := exec.Command(bin, "-machine", "none", "-nodefaults", "-no-user-config", "-nographic",
		"-qmp", "unix:"+path+",server=on,wait=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// The socket file appears at bind, before QEMU listens: wait until a
	// connection is accepted, not until the file exists.
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			conn.Close()
			return path, cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu did not accept connections on %s within 5s: %v", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRealQEMU(t *testing.T) {
	path, cmd := startQEMU(t)
	ctx := ctxT(t)
	c, err := Connect(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Version() == "" || c.Version() == "0.0.0" {
		t.Errorf("Version() = %q, want QEMU's version", c.Version())
	}

	st, err := c.Status(ctx)
	if err != nil || st != RunStateRunning {
		t.Fatalf("Status() = %q, %v, want running", st, err)
	}

	var ver struct {
		QEMU struct{ Major int } `json:"qemu"`
	}
	if err := c.Execute(ctx, "query-version", nil, &ver); err != nil || ver.QEMU.Major < 7 {
		t.Fatalf("query-version = %+v, %v, want major >= 7", ver, err)
	}

	err = c.Execute(ctx, "no-such-command", nil, nil)
	var qerr *Error
	if !errors.As(err, &qerr) || qerr.Class != "CommandNotFound" || qerr.Desc == "" {
		t.Fatalf("Execute(no-such-command) = %v, want *Error class CommandNotFound", err)
	}
	err = c.Execute(ctx, "query-status", map[string]string{"bogus": "x"}, nil)
	if !errors.As(err, &qerr) || qerr.Class != "GenericError" {
		t.Fatalf("query-status with a bad argument = %v, want *Error class GenericError", err)
	}

	// Pausing emits a STOP event before the reply to stop.
	if err := c.Execute(ctx, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Status(ctx); err != nil || st != RunStatePaused {
		t.Fatalf("Status() after stop = %q, %v, want paused", st, err)
	}
	if err := c.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.SystemPowerdown(ctx); err != nil {
		t.Fatalf("SystemPowerdown() = %v", err)
	}

	if err := c.Quit(ctx); err != nil {
		t.Fatalf("Quit() = %v", err)
	}
	names := map[string]bool{}
	for _, e := range c.Events() {
		names[e.Name] = true
	}
	if !names["STOP"] || !names["RESUME"] {
		t.Errorf("events = %v, want STOP and RESUME", names)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("qemu exited with %v after quit, want status 0", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("qemu still running 5s after quit")
	}
}
