package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/integration/harness"
)

func TestRunPrintsOutput(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	out, err := e.run([]string{"--rm"}, ref, newID("echo"), "echo", "hello-coffer")
	require.NoError(t, err)
	require.Equal(t, "hello-coffer\n", out)
}

func TestRunPropagatesExitCode(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	_, err := e.run([]string{"--rm"}, ref, newID("exit"), "sh", "-c", "exit 3")
	require.Equal(t, 3, exitCode(t, err), "ctr run must exit with the task's status")
}

func TestKillGives137(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	id := newID("kill")
	// An attached `ctr run` waits for the task and exits with its status.
	run := e.ctd.Command(e.ctx, e.runArgs([]string{"--rm"}, ref, id, "sleep", "1000")...)
	var stderr bytes.Buffer
	run.Stderr = &stderr
	require.NoError(t, run.Start())
	waited := make(chan error, 1)
	go func() { waited <- run.Wait() }()
	e.waitTaskStatus(id, "RUNNING")

	_, err := e.ctd.Ctr(e.ctx, "task", "kill", "-s", "SIGKILL", id)
	require.NoError(t, err)
	select {
	case err := <-waited:
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "ctr run stderr: %s", stderr.String())
		require.Equal(t, 137, ee.ExitCode(), "SIGKILL must give exit status 128+9; ctr run stderr: %s", stderr.String())
	case <-e.ctx.Done():
		t.Fatalf("ctr run did not return after SIGKILL of its task: %v", e.ctx.Err())
	}
	// --rm removed the task and the container.
	status, err := e.taskStatus(id)
	require.NoError(t, err)
	require.Empty(t, status)
}

func TestExecInRunningContainer(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	id := newID("exec")
	e.startDetached(ref, id, "sleep", "1000")

	out, err := e.ctd.Ctr(e.ctx, "task", "exec", "--exec-id", "x1", id, "echo", "second")
	require.NoError(t, err)
	require.Equal(t, "second\n", out)

	_, err = e.ctd.Ctr(e.ctx, "task", "exec", "--exec-id", "x2", id, "sh", "-c", "exit 5")
	require.Equal(t, 5, exitCode(t, err), "ctr task exec must exit with the exec'd process's status")

	status, err := e.taskStatus(id)
	require.NoError(t, err)
	require.Equal(t, "RUNNING", status, "execs must not disturb the init process")

	_, err = e.ctd.Ctr(e.ctx, "task", "rm", "-f", id)
	require.NoError(t, err)
	_, err = e.ctd.Ctr(e.ctx, "container", "rm", id)
	require.NoError(t, err)
}

func TestStdinIsForwarded(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	id := newID("stdin")
	cmd := e.ctd.Command(e.ctx, e.runArgs([]string{"--rm"}, ref, id, "cat")...)
	// ctr only forwards stdin's EOF (CloseIO) if it arrives after the task
	// was created (cmd/ctr/commands/tasks.NewTask sets the closer late), so
	// keep stdin open until the task runs and cat has echoed the line.
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout := &syncBuffer{}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	require.NoError(t, cmd.Start())
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	e.waitTaskStatus(id, "RUNNING")

	_, err = io.WriteString(stdin, "ping\n")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return stdout.String() == "ping\n" }, time.Minute, 50*time.Millisecond,
		"cat did not echo stdin; stdout so far: %q", stdout.String())
	require.NoError(t, stdin.Close())
	select {
	case err := <-waited:
		require.NoError(t, err, "cat must exit 0 at stdin's EOF; stderr: %s", stderr.String())
	case <-e.ctx.Done():
		t.Fatalf("ctr run did not return after stdin was closed (EOF not forwarded?): %v", e.ctx.Err())
	}
	require.Equal(t, "ping\n", stdout.String())
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestTTYWithResize(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	cmd := e.ctd.Command(e.ctx, e.runArgs([]string{"--rm", "-t"}, ref, newID("tty"), "sh")...)
	pty, err := harness.StartWithPTY(cmd, 37, 101)
	require.NoError(t, err)
	defer pty.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// ctr sends the terminal's size right after the task started and again
	// on every SIGWINCH; both are asynchronous to the shell, so ask until
	// the expected size shows (an early `stty size` may still see 0x0).
	off := 0
	askSize := func(want string) {
		t.Helper()
		for i := 0; i < 30; i++ {
			_, err := pty.Write([]byte("stty size\n"))
			require.NoError(t, err)
			if next, err := pty.WaitFor(off, want, 2*time.Second); err == nil {
				off = next
				return
			}
		}
		t.Fatalf("terminal size never became %q; terminal output: %q", want, pty.Output())
	}
	askSize("37 101")
	require.NoError(t, pty.Resize(50, 132))
	askSize("50 132")

	_, err = pty.Write([]byte("exit 0\n"))
	require.NoError(t, err)
	select {
	case err := <-exited:
		require.NoError(t, err, "terminal output: %q", pty.Output())
	case <-e.ctx.Done():
		t.Fatalf("ctr run -t did not exit after the shell's exit: %v; terminal output: %q", e.ctx.Err(), pty.Output())
	}
}

// bigOutputSize is 64 MiB: enough to cross every buffer on the stdio path
// (FIFO, shim, virtio-serial, agent) many times.
const bigOutputSize = 64 << 20

func TestLargeStdoutIsByteExact(t *testing.T) {
	e := newEnv(t, longTest, defaultShimConfig)
	ref := e.busybox()

	want := sha256.New()
	line := []byte("coffer\n")
	for n := 0; n < bigOutputSize; n += len(line) {
		if rest := bigOutputSize - n; rest < len(line) {
			want.Write(line[:rest])
		} else {
			want.Write(line)
		}
	}

	cmd := e.ctd.Command(e.ctx, e.runArgs([]string{"--rm"}, ref, newID("bigout"),
		"sh", "-c", fmt.Sprintf("yes coffer | head -c %d", bigOutputSize))...)
	got := sha256.New()
	counter := &countingWriter{}
	var stderr bytes.Buffer
	cmd.Stdout = io.MultiWriter(got, counter)
	cmd.Stderr = &stderr
	start := time.Now()
	require.NoError(t, cmd.Run(), "stderr: %s", stderr.String())
	t.Logf("64 MiB of stdout in %s", time.Since(start).Round(time.Millisecond))
	require.EqualValues(t, bigOutputSize, counter.n, "stdout byte count")
	require.Equal(t, hex.EncodeToString(want.Sum(nil)), hex.EncodeToString(got.Sum(nil)), "stdout SHA-256")
}

// countingWriter counts the bytes written to it.
type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

func TestWhiteoutsAreApplied(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	img, err := harness.WhiteoutImage()
	require.NoError(t, err)
	ref, _ := e.pushAndPull("whiteout", img)

	out, err := e.run([]string{"--rm"}, ref, newID("wh"), "find", "/data", "-type", "f")
	require.NoError(t, err)
	files := strings.Fields(out)
	sort.Strings(files)
	require.Equal(t, []string{"/data/b", "/data/dir/y"}, files,
		"/data/a is whited out and /data/dir is opaque in the top layer")

	out, err = e.run([]string{"--rm"}, ref, newID("wh"), "cat", "/data/b", "/data/dir/y")
	require.NoError(t, err)
	require.Equal(t, "b\ny\n", out)
}

func TestSmallVMFromShimConfig(t *testing.T) {
	const mib = 160
	e := newEnv(t, shortTest, memoryConfig(mib))
	ref := e.busybox()
	out, err := e.run([]string{"--rm"}, ref, newID("mem"), "cat", "/proc/meminfo")
	require.NoError(t, err)
	total := memTotalKiB(t, out)
	// MemTotal is RAM minus what the kernel reserves for itself, so it is
	// somewhat below the VM size; the guest floor is about 96 MiB.
	require.LessOrEqual(t, total, int64(mib*1024), "guest MemTotal %d KiB exceeds the configured %d MiB", total, mib)
	require.Greater(t, total, int64(64*1024), "guest MemTotal %d KiB is implausibly small for %d MiB", total, mib)

	out, err = e.run([]string{"--rm"}, ref, newID("mem"), "echo", "hello-coffer")
	require.NoError(t, err)
	require.Equal(t, "hello-coffer\n", out)
}

// memTotalKiB parses "MemTotal: N kB" from /proc/meminfo text.
func memTotalKiB(t *testing.T, meminfo string) int64 {
	t.Helper()
	for _, line := range strings.Split(meminfo, "\n") {
		var kib int64
		if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kib); err == nil {
			return kib
		}
	}
	t.Fatalf("no MemTotal line in /proc/meminfo output:\n%s", meminfo)
	return 0
}
