package integration

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/integration/harness"
)

// TestAgentChannelForwardsPullAndRun runs with network.mode = "none": the
// VM has no network device at all, and the guest pulls the image from the
// test registry on the host's loopback through network.forwards carried
// over the agent transport (virtio-serial here, hybrid vsock on Cloud
// Hypervisor). The container sees no interface but lo.
func TestAgentChannelForwardsPullAndRun(t *testing.T) {
	e := newEnvNetwork(t, shortTest, defaultShimConfig, "none", nil)
	ref := e.busybox()
	id := newID("agentfwd")
	out, err := e.run([]string{"--rm"}, ref, id, "sh", "-c", "echo pulled-over-the-agent-channel; ls /sys/class/net")
	require.NoError(t, err)
	lines := strings.Fields(out)
	require.Equal(t, []string{"pulled-over-the-agent-channel", "lo"}, lines, "the guest has no NIC: only lo")
}

// TestAttestedOverAgentChannelForwards attests (sim TEE) to a cc-kbs on
// the host's loopback and reads a KBS resource from the workload, with
// network.mode = "none": the KBS connections, like the registry's, go
// over the agent transport.
func TestAttestedOverAgentChannelForwards(t *testing.T) {
	a := newAttestedEnvNetwork(t, longTest, "", true, "none")
	ref := a.busybox()
	a.kbs.SetResource(t, "default/app/token", []byte("token-over-the-agent-channel"))
	w := a.ctd.WatchEvents(a.ctx, t)
	id := newID("attestfwd")
	out, err := a.run([]string{"--rm", "--annotation", "io.coffer.cc.init-data=" + a.initData("").Annotation()}, ref, id,
		"sh", "-c", `echo "cdh=$(wget -qO- http://127.0.0.1:8006/cdh/resource/default/app/token)"`)
	require.NoError(t, err)
	require.Contains(t, out, "cdh=token-over-the-agent-channel")
	_, err = w.WaitFor(a.ctx, eventWait, func(ev harness.Event) bool { return ev.Topic == "/tasks/delete" && ev.Payload.ContainerID == id })
	require.NoError(t, err)
	phases := attestationPhases(w, id)
	require.GreaterOrEqual(t, len(phases), 3, "phases: %v", phases)
	require.Equal(t, []string{"evidence", "verifying", "allowed"}, phases[:3])
}
