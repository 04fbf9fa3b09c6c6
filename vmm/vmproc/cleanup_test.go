package vmproc

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cofferhq/coffer/vmm/vmproc/vmproctest"
	"github.com/stretchr/testify/require"
)

// listenGone leaves a unix socket file at path with nobody listening, as a
// crashed VMM does.
func listenGone(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, l.Close())
}

func TestCleanup(t *testing.T) {
	dir := t.TempDir()
	orphan := vmproctest.StartDetached(t, Tag(dir))
	other := vmproctest.StartDetached(t, Tag(t.TempDir()))
	listenGone(t, filepath.Join(dir, "api.sock"))
	listenGone(t, filepath.Join(dir, "vsock.sock"))
	log := filepath.Join(dir, "console.log")
	require.NoError(t, os.WriteFile(log, []byte("boot"), 0o600))

	require.NoError(t, Cleanup(dir+"/"), "a state dir with a trailing slash names the same tag")
	vmproctest.WaitKilled(t, orphan)
	require.True(t, vmproctest.Alive(other.Process.Pid), "Cleanup killed a process of another state dir")
	require.NoFileExists(t, filepath.Join(dir, "api.sock"))
	require.NoFileExists(t, filepath.Join(dir, "vsock.sock"))
	require.FileExists(t, log, "logs stay for diagnosis")
	require.NoError(t, Cleanup(dir), "a second Cleanup finds nothing")
	require.NoError(t, Cleanup(filepath.Join(dir, "missing")), "a missing state dir is no error")
}

func TestKillTaggedReturnsPids(t *testing.T) {
	dir := t.TempDir()
	a, b := vmproctest.StartDetached(t, Tag(dir)), vmproctest.StartDetached(t, Tag(dir))
	pids, err := KillTagged(dir)
	require.NoError(t, err)
	require.ElementsMatch(t, []int{a.Process.Pid, b.Process.Pid}, pids)
	vmproctest.WaitKilled(t, a)
	vmproctest.WaitKilled(t, b)
}

func TestKillIf(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	pid := cmd.Process.Pid
	var asked int
	require.NoError(t, KillIf(pid, "sleep", func(p int) bool { asked = p; return false }))
	require.Equal(t, pid, asked, "match gets the pid")
	time.Sleep(20 * time.Millisecond)
	require.True(t, vmproctest.Alive(pid), "KillIf killed a process match refused")
	require.NoError(t, KillIf(pid, "sleep", func(int) bool { return true }))
	vmproctest.WaitKilled(t, cmd)
	require.NoError(t, KillIf(1<<22+1, "sleep", func(int) bool { t.Error("match called for a pid with no process"); return true }))
}

func TestRemoveSockets(t *testing.T) {
	dir := t.TempDir()
	listenGone(t, filepath.Join(dir, "a.sock"))
	pidFile := filepath.Join(dir, "vmm.pid")
	require.NoError(t, os.WriteFile(pidFile, []byte(strconv.Itoa(1)), 0o600))
	keep := filepath.Join(dir, "stderr.log")
	require.NoError(t, os.WriteFile(keep, nil, 0o600))
	require.NoError(t, RemoveSockets(dir, pidFile, filepath.Join(dir, "absent.sock")))
	require.NoFileExists(t, filepath.Join(dir, "a.sock"))
	require.NoFileExists(t, pidFile)
	require.FileExists(t, keep)
}
