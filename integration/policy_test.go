package integration

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/integration/harness"
)

// noInitDataConfig is a shim config body with no init-data: the guest
// enforces the agent policy compiled into cc-agent (configs/policy/
// default.rego).
const noInitDataConfig = "[attestation]\nrequired = false\n"

// policyInitData returns the annotation flag carrying init-data whose
// agent policy is rego (no KBS: these tests use the plain runtime).
func policyInitData(rego string) string {
	return "io.coffer.cc.init-data=" + harness.InitData{Policy: rego}.Annotation()
}

// TestDefaultPolicyDeniesExecLogsFlow runs under the built-in default
// policy: the container's output reaches the host, and `ctr task exec` is
// refused with PermissionDenied naming the request and the rule.
func TestDefaultPolicyDeniesExecLogsFlow(t *testing.T) {
	e := newEnv(t, shortTest, noInitDataConfig)
	ref := e.busybox()

	out, err := e.run([]string{"--rm"}, ref, newID("logs"), "echo", "logs flow")
	require.NoError(t, err)
	require.Equal(t, "logs flow\n", out)

	id := newID("noexec")
	e.startDetached(ref, id, "sleep", "1000")
	_, err = e.ctd.Ctr(e.ctx, "task", "exec", "--exec-id", "x1", id, "cat", "/etc/passwd")
	var ce *harness.CtrError
	require.ErrorAs(t, err, &ce)
	t.Logf("exec under the default policy: %s", ce.Stderr)
	require.Contains(t, ce.Stderr, "ExecProcessRequest is blocked by agent policy")
	require.Contains(t, ce.Stderr, "agent_policy.ExecProcessRequest")
	_, err = e.ctd.Ctr(e.ctx, "task", "kill", "-s", "SIGKILL", id)
	require.NoError(t, err)
}

// TestLogDeniedContainerKeepsRunning runs a container that writes far more
// than a pipe holds under a policy that denies reading its stdout: the
// guest drains and discards the stream, so the container runs to its end
// and exits normally (Kata#10680 would hang it on a full pipe).
func TestLogDeniedContainerKeepsRunning(t *testing.T) {
	e := newEnv(t, shortTest, noInitDataConfig)
	ref := e.busybox()
	rego := strings.Replace(harness.Policy(t, "allow-all.rego"), "default ReadStreamRequest := true", "default ReadStreamRequest := false", 1)
	require.Contains(t, rego, "default ReadStreamRequest := false")

	out, err := e.run([]string{"--rm", "--annotation", policyInitData(rego)}, ref, newID("nologs"),
		"sh", "-c", `i=0; while [ $i -lt 20000 ]; do echo "line $i of a chatty workload"; i=$((i+1)); done; exit 0`)
	require.NoError(t, err, "a container whose logs are denied must run to its end")
	require.Empty(t, out, "the denied stdout must not reach the host")
}

// TestGeneratedPolicyPinsContainer generates a policy for one container
// with `ccctl policy generate`: the container it describes runs, the same
// image with another command is refused, and so is an extra mount the
// host added.
func TestGeneratedPolicyPinsContainer(t *testing.T) {
	e := newEnv(t, shortTest, noInitDataConfig)
	img, err := harness.BusyboxImage()
	require.NoError(t, err)
	ref, digest := e.pushAndPull("busybox", img)
	rego, err := harness.Ccctl(e.ctx, "policy", "generate", "--env", "GREETING=hi", ref+"@"+digest, "pinned", "sh", "-c", "echo $GREETING")
	require.NoError(t, err)
	ann := policyInitData(rego)

	out, err := e.run([]string{"--rm", "--annotation", ann, "--env", "GREETING=hi"}, ref, newID("pinned"), "sh", "-c", "echo $GREETING")
	require.NoError(t, err)
	require.Equal(t, "hi\n", out)

	_, err = e.run([]string{"--rm", "--annotation", ann, "--env", "GREETING=hi"}, ref, newID("othercmd"), "sh", "-c", "cat /etc/shadow")
	var ce *harness.CtrError
	require.ErrorAs(t, err, &ce)
	t.Logf("other command: %s", ce.Stderr)
	require.Contains(t, ce.Stderr, "CreateContainerRequest is blocked by agent policy")

	_, err = e.run([]string{"--rm", "--annotation", ann, "--env", "GREETING=hi", "--mount", "type=tmpfs,src=tmpfs,dst=/secrets,options=rw"},
		ref, newID("extramount"), "sh", "-c", "echo $GREETING")
	require.ErrorAs(t, err, &ce)
	t.Logf("extra mount: %s", ce.Stderr)
	require.Contains(t, ce.Stderr, "CreateContainerRequest is blocked by agent policy")
	require.Contains(t, ce.Stderr, "/secrets")
}
