package integration

import (
	"path/filepath"
	"strings"
	"testing"

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
