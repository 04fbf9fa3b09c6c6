package qemu

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/vmm/vmproc"
	"github.com/cofferhq/coffer/vmm/vmproc/vmproctest"
)

// TestCleanupOrphan starts QEMU the way Start does (same arguments, pid file
// and environment tag) but daemonized, so its parent is gone, as after a shim
// crash; Cleanup must kill it and its detached helpers.
func TestCleanupOrphan(t *testing.T) {
	requireQEMU(t)
	cfg := testConfig(t)
	args, err := Args(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range args {
		if a == "-nographic" { // -daemonize refuses -nographic
			args = append(args[:i], append([]string{"-display", "none", "-daemonize"}, args[i+1:]...)...)
			break
		}
	}
	cmd := exec.Command(cfg.BinaryPath(), args...)
	cmd.Env = append(os.Environ(), vmproc.Tag(cfg.StateDir))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("daemonized qemu: %v: %s", err, out)
	}
	b, err := os.ReadFile(cfg.PIDFilePath())
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if !vmproctest.Alive(pid) {
		t.Fatalf("daemonized qemu pid %d not running", pid)
	}
	if ppid := parentPid(t, pid); ppid == os.Getpid() {
		t.Fatalf("daemonized qemu's parent is the test process; want an orphan")
	}
	helper := vmproctest.StartDetached(t, vmproc.Tag(cfg.StateDir))
	stale := cfg.StateDir + "/agent.sock"
	if !exists(stale) {
		t.Fatalf("qemu did not create %s", stale)
	}

	if err := Cleanup(cfg.StateDir); err != nil {
		t.Fatalf("Cleanup() = %v", err)
	}
	if vmproctest.Alive(pid) {
		t.Errorf("qemu pid %d alive after Cleanup", pid)
	}
	vmproctest.WaitKilled(t, helper)
	for _, p := range []string{cfg.QMPSocketPath(), cfg.PIDFilePath(), stale} {
		if exists(p) {
			t.Errorf("%s left behind after Cleanup", p)
		}
	}
	if !exists(cfg.ConsoleLogPath()) {
		t.Error("Cleanup removed console.log, which is kept for diagnosis")
	}
	if err := Cleanup(cfg.StateDir); err != nil {
		t.Errorf("second Cleanup() = %v, want nil", err)
	}
}

// TestCleanupIgnoresReusedPid points the pid file at an unrelated process.
func TestCleanupIgnoresReusedPid(t *testing.T) {
	dir := t.TempDir()
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		other.Process.Kill()
		other.Wait()
	}()
	if err := os.WriteFile(dir+"/qemu.pid", []byte(strconv.Itoa(other.Process.Pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(dir); err != nil {
		t.Fatalf("Cleanup() = %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if !vmproctest.Alive(other.Process.Pid) {
		t.Error("Cleanup killed an unrelated process whose pid was in the pid file")
	}
	if exists(dir + "/qemu.pid") {
		t.Error("Cleanup left the stale pid file")
	}
}

func TestCleanupErrors(t *testing.T) {
	dir := t.TempDir()
	if err := Cleanup(dir); err != nil {
		t.Errorf("Cleanup() of an empty dir = %v, want nil", err)
	}
	if err := os.WriteFile(dir+"/qemu.pid", []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Cleanup(dir)
	if err == nil || !strings.Contains(err.Error(), `holds "garbage", want a process id`) {
		t.Errorf("Cleanup() = %v, want a malformed pid file error", err)
	}
}

func parentPid(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}
