// Package integration holds Coffer's end-to-end tests: real containerd,
// ctr and containerd-shim-cc-v2 processes booting real QEMU guests (TCG on
// machines without KVM) that pull test images from a local distribution
// registry. The reusable machinery is in package harness.
//
// The tests need root, the binaries from `make tools build` in build/bin (or
// $COFFER_BIN_DIR) and the guest from `make guest` in build/guest. Without
// them the package is skipped, unless $COFFER_REQUIRE_E2E is set (CI), in
// which case it fails.
package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/integration/harness"
)

// qemuBinary is the QEMU the shim launches for x86-64 guests.
const qemuBinary = "qemu-system-x86_64"

func TestMain(m *testing.M) {
	if missing := missingPrerequisites(); len(missing) > 0 {
		reason := strings.Join(missing, "; ")
		if harness.RequireE2E() {
			fmt.Fprintf(os.Stderr, "FAIL: end-to-end tests cannot run: %s\n(%s is set, so missing prerequisites are a failure)\n", reason, harness.EnvRequireE2E)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "SKIP: end-to-end tests skipped: %s\n(set %s=1 to turn this into a failure)\n", reason, harness.EnvRequireE2E)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// missingPrerequisites names everything the end-to-end tests need that
// this machine lacks, with how to get it.
func missingPrerequisites() []string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "not running as root (containerd, mounts and QEMU need root)")
	}
	binDir, err := harness.BinDir()
	if err != nil {
		return append(missing, err.Error())
	}
	guestDir, err := harness.GuestDir()
	if err != nil {
		return append(missing, err.Error())
	}
	var bins []string
	for _, b := range []string{"containerd", "ctr", "registry", harness.ShimBinary, "cc-snapshotter", "ccctl", "cc-kbs"} {
		bins = append(bins, filepath.Join(binDir, b))
	}
	if m := harness.MissingFiles(bins...); len(m) > 0 {
		missing = append(missing, fmt.Sprintf("binaries %v not built (run `make tools build`, or set %s)", m, harness.EnvBinDir))
	}
	if m := harness.MissingFiles(filepath.Join(guestDir, "manifest.json")); len(m) > 0 {
		missing = append(missing, fmt.Sprintf("guest %v not built (run `make guest`)", m))
	}
	switch harness.VMM() {
	case "cloud-hypervisor":
		if _, err := exec.LookPath("cloud-hypervisor"); err != nil {
			missing = append(missing, "cloud-hypervisor is not on PATH ($COFFER_VMM=cloud-hypervisor): install a Cloud Hypervisor release binary")
		}
		if _, err := os.Stat("/dev/kvm"); err != nil {
			missing = append(missing, "/dev/kvm is missing: Cloud Hypervisor needs KVM")
		}
	default:
		if _, err := exec.LookPath(qemuBinary); err != nil {
			missing = append(missing, fmt.Sprintf("%s not on PATH (install Debian's qemu-system-x86)", qemuBinary))
		}
	}
	return missing
}

// Per-test time budgets. Under TCG a VM boots in about 4 s and a guest
// pull of the busybox image takes about 1 s; these leave ample room on a
// loaded 2-core machine.
const (
	shortTest = 3 * time.Minute
	longTest  = 6 * time.Minute
	// goneWithin is how long the host may take to reap processes and
	// remove sockets after `ctr task rm` / `ctr container rm` returned.
	goneWithin = 15 * time.Second
	// goneAfterShimKill also covers containerd noticing the dead shim and
	// running `containerd-shim-cc-v2 delete`.
	goneAfterShimKill = 45 * time.Second
)

// env is one test's world: a registry, a containerd, a shim config file
// and a context bounded by the test's time budget.
type env struct {
	t          *testing.T
	ctx        context.Context
	reg        *harness.Registry
	ctd        *harness.Containerd
	shimConfig string
}

// newEnv starts a registry and a containerd for t and writes a shim config
// from shimConfigBody (see shimconfig_test.go). ctx expires after budget.
func newEnv(t *testing.T, budget time.Duration, shimConfigBody string) *env {
	t.Helper()
	return newEnvWith(t, budget, shimConfigBody, nil)
}

// newEnvWith is newEnv with more host addresses the guest may reach
// (network.forwards beside the registry), e.g. a KBS.
func newEnvWith(t *testing.T, budget time.Duration, shimConfigBody string, forwards []string) *env {
	t.Helper()
	return newEnvNetwork(t, budget, shimConfigBody, "", forwards)
}

// newEnvNetwork is newEnvWith with network.mode set to mode ("" leaves
// the default: QEMU user-mode forwards, or agent-channel forwards under
// COFFER_VMM=cloud-hypervisor).
func newEnvNetwork(t *testing.T, budget time.Duration, shimConfigBody, mode string, forwards []string) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), budget)
	t.Cleanup(cancel)
	reg := harness.StartRegistry(t)
	if !strings.Contains(shimConfigBody, "[attestation]") {
		// The tests of the plain runtime exec, attach stdin and read
		// every stream: they run under the development allow-all policy.
		shimConfigBody += "\n" + initDataConfig(harness.WriteInitData(t, harness.InitData{Policy: harness.Policy(t, "allow-all.rego")}))
	}
	shimConfig := harness.ShimConfig(t, registryConfig(mode, reg.Addr(), forwards...)+"\n"+shimConfigBody)
	return &env{
		t:          t,
		ctx:        ctx,
		reg:        reg,
		ctd:        harness.StartContainerd(t, harness.ContainerdOptions{ShimConfigPath: shimConfig}),
		shimConfig: shimConfig,
	}
}

// pushAndPull pushes img to the registry as name and pulls it into
// containerd with the cc snapshotter (the host fetches the manifest and
// config to build the OCI spec; the guest pulls the layers itself). It
// returns the reference and digest.
func (e *env) pushAndPull(name string, img v1.Image) (ref, digest string) {
	e.t.Helper()
	ref, digest = harness.Push(e.t, e.reg, name, img)
	require.NoError(e.t, harness.ImagePullCC(e.ctx, e.ctd, ref))
	return ref, digest
}

// busybox builds, pushes and pulls harness.BusyboxImage.
func (e *env) busybox() string {
	e.t.Helper()
	img, err := harness.BusyboxImage()
	require.NoError(e.t, err)
	ref, _ := e.pushAndPull("busybox", img)
	return ref
}

// runArgs returns the arguments of `ctr run` with the Coffer runtime,
// this env's shim config and FIFOs kept in the containerd's temp dir:
// run --runtime io.containerd.cc.v2 --runtime-config-path <cfg>
// --fifo-dir <dir> [flags...] <ref> <id> [cmd...].
func (e *env) runArgs(flags []string, ref, id string, cmd ...string) []string {
	args := []string{"run", "--runtime", harness.RuntimeType, "--runtime-config-path", e.shimConfig,
		"--snapshotter", harness.CCSnapshotterName, "--fifo-dir", e.ctd.FIFODir()}
	args = append(args, flags...)
	args = append(args, ref, id)
	return append(args, cmd...)
}

// run runs `ctr run` (see runArgs) to completion and returns its stdout.
func (e *env) run(flags []string, ref, id string, cmd ...string) (string, error) {
	return e.ctd.Ctr(e.ctx, e.runArgs(flags, ref, id, cmd...)...)
}

// startDetached runs `ctr run -d` and waits until `ctr task ls` reports
// the task RUNNING.
func (e *env) startDetached(ref, id string, cmd ...string) {
	e.t.Helper()
	_, err := e.run([]string{"-d"}, ref, id, cmd...)
	require.NoError(e.t, err)
	e.waitTaskStatus(id, "RUNNING")
}

// taskStatus returns the STATUS column of `ctr task ls` for id, "" if the
// task is not listed.
func (e *env) taskStatus(id string) (string, error) {
	out, err := e.ctd.Ctr(e.ctx, "task", "ls")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == id {
			return f[2], nil
		}
	}
	return "", nil
}

// waitTaskStatus polls `ctr task ls` until id has status want.
func (e *env) waitTaskStatus(id, want string) {
	e.t.Helper()
	var got string
	var err error
	require.Eventually(e.t, func() bool {
		got, err = e.taskStatus(id)
		return err == nil && got == want
	}, time.Minute, 200*time.Millisecond, "task %s never reached status %s", id, want)
	require.NoError(e.t, err)
}

// newID returns a fresh container ID with a readable prefix.
func newID(prefix string) string { return prefix + "-" + harness.RandomSuffix() }

// exitCode returns the exit code carried by a *harness.CtrError, failing
// the test if err is nil or of another type.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	require.Error(t, err)
	var ce *harness.CtrError
	require.ErrorAs(t, err, &ce)
	return ce.ExitCode
}

// stderrOf returns ctr's stderr from a *harness.CtrError.
func stderrOf(t *testing.T, err error) string {
	t.Helper()
	var ce *harness.CtrError
	require.ErrorAs(t, err, &ce)
	return ce.Stderr
}

// skipOnCloudHypervisor skips a test under COFFER_VMM=cloud-hypervisor
// when it needs a QEMU-only path (docs/cloud-hypervisor.md says which).
func skipOnCloudHypervisor(t testing.TB, why string) {
	t.Helper()
	if harness.VMM() == "cloud-hypervisor" {
		t.Skipf("not run on Cloud Hypervisor: %s, which Cloud Hypervisor lacks (docs/cloud-hypervisor.md)", why)
	}
}
