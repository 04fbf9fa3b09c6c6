package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/integration/harness"
)

// requireFailedCreateClean checks that a `ctr run --rm` whose create
// failed left nothing behind: no task, no container, no shim, no QEMU, no
// mount or socket, no new VM state dir.
func requireFailedCreateClean(t *testing.T, e *env, id string, vmDirsBefore []string) {
	t.Helper()
	e.ctd.FootprintOf(id).RequireGone(t, goneWithin)
	requireHostClean(t, e, vmDirsBefore)
	tasks, err := e.ctd.Ctr(e.ctx, "task", "ls", "-q")
	require.NoError(t, err)
	require.Empty(t, strings.Fields(tasks))
	containers, err := e.ctd.Ctr(e.ctx, "container", "ls", "-q")
	require.NoError(t, err)
	require.Empty(t, strings.Fields(containers), "ctr run --rm deletes the container record even when create fails")
}

// TestErrorImageNotInRegistry: the host has the image (ctr needs its
// config), but the registry no longer has the manifest, so the guest's
// pull fails. The create must fail naming the reference.
func TestErrorImageNotInRegistry(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	img, err := harness.BusyboxImage()
	require.NoError(t, err)
	ref, digest := e.pushAndPull("vanishing", img)
	harness.DeleteManifest(t, ref, digest)
	vmDirsBefore, err := harness.VMStateDirs()
	require.NoError(t, err)

	id := newID("notfound")
	_, err = e.run([]string{"--rm"}, ref, id, "echo", "unreachable")
	require.Error(t, err, "create must fail when the registry lacks the image")
	require.NotZero(t, exitCode(t, err))
	repo := e.reg.Addr() + "/vanishing"
	require.Contains(t, stderrOf(t, err), repo, "the error must name the image reference")
	requireFailedCreateClean(t, e, id, vmDirsBefore)
}

// TestErrorRegistryUnreachable: the registry stops after the host pull,
// so the guest cannot reach it. The create must fail naming the registry.
func TestErrorRegistryUnreachable(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	e.reg.Stop()
	vmDirsBefore, err := harness.VMStateDirs()
	require.NoError(t, err)

	id := newID("noregistry")
	_, err = e.run([]string{"--rm"}, ref, id, "echo", "unreachable")
	require.Error(t, err, "create must fail when the registry is down")
	require.NotZero(t, exitCode(t, err))
	require.Contains(t, stderrOf(t, err), e.reg.Addr(), "the error must name the registry that could not be reached")
	requireFailedCreateClean(t, e, id, vmDirsBefore)
}

// TestErrorMissingKernel: the shim config names a kernel that does not
// exist. The error must name the path and tell the user to `make guest`.
func TestErrorMissingKernel(t *testing.T) {
	kernel := filepath.Join("/nonexistent-"+harness.RandomSuffix(), "vmlinuz")
	e := newEnv(t, shortTest, kernelConfig(kernel))
	ref := e.busybox()
	vmDirsBefore, err := harness.VMStateDirs()
	require.NoError(t, err)

	id := newID("nokernel")
	_, err = e.run([]string{"--rm"}, ref, id, "echo", "unreachable")
	require.Error(t, err, "create must fail without a kernel")
	require.NotZero(t, exitCode(t, err))
	stderr := stderrOf(t, err)
	require.Contains(t, stderr, kernel, "the error must name the missing kernel")
	require.Contains(t, stderr, "make guest", "the error must say how to build the guest")
	requireFailedCreateClean(t, e, id, vmDirsBefore)
}

// panicCmdline is a guest kernel command line (console on ttyS0 so the
// shim can read how far the boot got; panic=-1 so a panic reboots, which
// QEMU's -no-reboot turns into an exit) plus the init the kernel runs.
func panicCmdline(rdinit string) string {
	return "console=ttyS0 loglevel=6 panic=-1 rdinit=" + rdinit
}

// bootFailureTimeout is the agent boot timeout of the boot failure
// tests: far above their deadline (bootFailsWithin), so a failure in time
// cannot be the timeout firing.
const bootFailureTimeout = 5 * time.Minute

// bootFailsWithin is how soon a create must fail once the guest kernel
// panicked: a TCG boot to the panic takes about 3 s.
const bootFailsWithin = 90 * time.Second

// requireBootFailure runs a container in an env whose guest cannot start
// cc-agent and checks that the create fails well before the agent boot
// timeout, with an error that says how far the guest got
// (vmm/bootlog.Describe: "kernel panicked: ..."), and that nothing is left
// behind. It returns ctr's stderr.
func requireBootFailure(t *testing.T, e *env, prefix string) string {
	t.Helper()
	ref := e.busybox()
	vmDirsBefore, err := harness.VMStateDirs()
	require.NoError(t, err)
	id := newID(prefix)
	start := time.Now()
	_, err = e.run([]string{"--rm"}, ref, id, "echo", "unreachable")
	elapsed := time.Since(start)
	require.Error(t, err, "create must fail when the guest has no working init")
	require.NotZero(t, exitCode(t, err))
	stderr := stderrOf(t, err)
	t.Logf("create failed after %s: %s", elapsed.Round(time.Millisecond), strings.TrimSpace(stderr))
	require.Less(t, elapsed, bootFailsWithin, "a guest that panicked must fail the create at once, not after agent.boot_timeout (%s)", bootFailureTimeout)
	require.NotContains(t, stderr, "did not answer within", "the error must not be the boot timeout")
	// The guest's panic closes the agent channel a moment before QEMU is
	// reaped; the shim waits for the exit and says the VM exited, and how
	// far the guest got.
	require.Contains(t, stderr, "the VM exited while booting", "the error must say the VM died")
	require.Contains(t, stderr, "kernel panicked: Kernel panic - not syncing", "the error must quote the guest kernel's panic")
	requireFailedCreateClean(t, e, id, vmDirsBefore)
	return stderr
}

// TestErrorBootNoInit: the kernel is told to run an init that is not in
// the initramfs; it falls back to mounting a root device, finds none and
// panics. The create must fail promptly, quoting that panic.
func TestErrorBootNoInit(t *testing.T) {
	e := newEnv(t, shortTest, kernelCmdlineConfig(panicCmdline("/nonexistent"))+bootTimeoutConfig(bootFailureTimeout))
	stderr := requireBootFailure(t, e, "noinit")
	require.Contains(t, stderr, "Unable to mount root fs", "the panic line must say why the kernel gave up")
}

// TestErrorBootInitIsNotAgent: the kernel runs runc (which is in the
// initramfs) as init instead of cc-agent; runc prints its usage and
// exits, and the kernel panics because init exited. The create must fail
// promptly, saying init was killed and with which exit code.
func TestErrorBootInitIsNotAgent(t *testing.T) {
	e := newEnv(t, shortTest, kernelCmdlineConfig(panicCmdline("/usr/bin/runc"))+bootTimeoutConfig(bootFailureTimeout))
	stderr := requireBootFailure(t, e, "runcinit")
	require.Contains(t, stderr, "Attempted to kill init! exitcode=0x00000000", "the panic line must say that init exited, and how")
}

// TestErrorLayerDigestMismatch: after the host pulled the image, one byte
// of its layer blob is flipped in the registry's storage (same size), so
// the registry serves a layer that no longer matches its digest. The
// guest's pull must refuse it, and the create must fail naming the layer
// digest and the image, leaving nothing behind.
func TestErrorLayerDigestMismatch(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	img, err := harness.BusyboxImage()
	require.NoError(t, err)
	ref, _ := e.pushAndPull("tampered", img)
	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	layerDigest, err := layers[0].Digest()
	require.NoError(t, err)
	flipBlobByte(t, e.reg, "tampered", layerDigest.String())
	vmDirsBefore, err := harness.VMStateDirs()
	require.NoError(t, err)

	id := newID("tampered")
	_, err = e.run([]string{"--rm"}, ref, id, "echo", "unreachable")
	require.Error(t, err, "create must fail when a layer does not match its digest")
	require.NotZero(t, exitCode(t, err))
	stderr := stderrOf(t, err)
	t.Logf("create failed: %s", strings.TrimSpace(stderr))
	require.Contains(t, stderr, "layer "+layerDigest.String(), "the error must name the layer")
	require.Contains(t, stderr, "digest mismatch", "the error must say the content did not match its digest")
	require.Contains(t, stderr, e.reg.Addr()+"/tampered", "the error must name the image reference")
	requireFailedCreateClean(t, e, id, vmDirsBefore)
}

// flipBlobByte inverts the byte in the middle of the registry's stored
// blob digest in repository repo, keeping its size, and checks that the
// registry now serves bytes of the same length whose SHA-256 is not
// digest.
func flipBlobByte(t *testing.T, reg *harness.Registry, repo, digest string) {
	t.Helper()
	p, err := reg.BlobPath(digest)
	require.NoError(t, err)
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	require.NotEmpty(t, data)
	data[len(data)/2] ^= 0xff
	require.NoError(t, os.WriteFile(p, data, 0o644))

	url := "http://" + reg.Addr() + "/v2/" + repo + "/blobs/" + digest
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s", url)
	served, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Len(t, served, len(data), "the tampered blob must keep its size")
	sum := sha256.Sum256(served)
	require.NotEqual(t, digest, "sha256:"+hex.EncodeToString(sum[:]), "the registry still serves the original blob")
}

// TestPauseResumeNotSupported: pausing a confidential VM's container is
// not defined yet, so `ctr task pause` / `ctr task resume` fail with
// gRPC Unimplemented and a message saying so, and the container keeps
// running.
func TestPauseResumeNotSupported(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	id := newID("pause")
	e.startDetached(ref, id, "sleep", "1000")

	_, err := e.ctd.Ctr(e.ctx, "task", "pause", id)
	require.NotZero(t, exitCode(t, err), "ctr task pause must fail")
	stderr := stderrOf(t, err)
	require.Contains(t, stderr, "pause is not supported", "the error must say pause is not supported")
	require.Contains(t, stderr, "not implemented", "the error must carry gRPC Unimplemented (errdefs.ErrNotImplemented)")

	_, err = e.ctd.Ctr(e.ctx, "task", "resume", id)
	require.NotZero(t, exitCode(t, err), "ctr task resume must fail")
	stderr = stderrOf(t, err)
	require.Contains(t, stderr, "resume is not supported")
	require.Contains(t, stderr, "not implemented")

	status, err := e.taskStatus(id)
	require.NoError(t, err)
	require.Equal(t, "RUNNING", status, "a refused pause must leave the task running")
	out, err := e.ctd.Ctr(e.ctx, "task", "exec", "--exec-id", "x1", id, "echo", "still-here")
	require.NoError(t, err)
	require.Equal(t, "still-here\n", out)

	_, err = e.ctd.Ctr(e.ctx, "task", "rm", "-f", id)
	require.NoError(t, err)
	_, err = e.ctd.Ctr(e.ctx, "container", "rm", id)
	require.NoError(t, err)
}
