package harness

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseEventLine(t *testing.T) {
	e, err := ParseEventLine(`2026-01-02 03:04:05.123456789 +0000 UTC ns-1 /tasks/exit {"container_id":"c1","id":"x 1","pid":42,"exit_status":137,"exited_at":{"seconds":1}}` + "\n")
	require.NoError(t, err)
	require.Equal(t, "ns-1", e.Namespace)
	require.Equal(t, "/tasks/exit", e.Topic)
	require.Equal(t, EventPayload{ContainerID: "c1", ID: "x 1", Pid: 42, ExitStatus: 137}, e.Payload)
	require.Equal(t, `{"container_id":"c1","id":"x 1","pid":42,"exit_status":137,"exited_at":{"seconds":1}}`, e.JSON)

	e, err = ParseEventLine(`2026-01-02 03:04:05 +0000 UTC ns /namespaces/update {"name":"ns","labels":{"k":"v"}}`)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"k": "v"}, e.Payload.Labels)

	e, err = ParseEventLine(`2026-01-02 03:04:05 +0000 UTC ns /snapshot/commit`)
	require.NoError(t, err, "ctr prints no payload for events it cannot decode")
	require.Equal(t, "/snapshot/commit", e.Topic)
	require.Empty(t, e.JSON)

	_, err = ParseEventLine("time=... level=warning msg=something")
	require.ErrorContains(t, err, "no \"/topic\" field")
	_, err = ParseEventLine(`2026-01-02 03:04:05 +0000 UTC ns /tasks/exit {not json`)
	require.ErrorContains(t, err, "not a JSON object")
}

func TestWatchEvents(t *testing.T) {
	requireRoot(t)
	RequireBinaries(t, "containerd", "ctr")
	ctd := StartContainerd(t, ContainerdOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := ctd.WatchEvents(ctx, t)

	_, err := ctd.Ctr(ctx, "namespaces", "label", ctd.Namespace(), "coffer.test/after=1")
	require.NoError(t, err)
	e, err := w.WaitFor(ctx, 10*time.Second, func(e Event) bool {
		return e.Topic == "/namespaces/update" && e.Payload.Labels["coffer.test/after"] == "1"
	})
	require.NoError(t, err)
	require.Equal(t, ctd.Namespace(), e.Namespace)
	require.Equal(t, ctd.Namespace(), e.Payload.Name)

	// Events of other namespaces are filtered out by `ctr events`.
	_, err = ctd.Ctr(ctx, "namespaces", "create", ctd.Namespace()+"-other")
	require.NoError(t, err)
	_, err = w.WaitFor(ctx, time.Second, func(e Event) bool { return e.Namespace != ctd.Namespace() })
	require.Error(t, err, "an event of another namespace was collected")
	_, err = ctd.Ctr(ctx, "namespaces", "rm", ctd.Namespace()+"-other")
	require.NoError(t, err)

	w.Stop()
	w.Stop() // idempotent
	require.NotEmpty(t, w.Events(), "events stay readable after Stop")
}

func TestRegistryBlobPath(t *testing.T) {
	RequireBinaries(t, "registry")
	reg := StartRegistry(t)
	img, err := BusyboxImage()
	require.NoError(t, err)
	Push(t, reg, "blobs", img)
	layers, err := img.Layers()
	require.NoError(t, err)
	digest, err := layers[0].Digest()
	require.NoError(t, err)
	size, err := layers[0].Size()
	require.NoError(t, err)

	p, err := reg.BlobPath(digest.String())
	require.NoError(t, err)
	require.Contains(t, p, reg.RootDir())
	st, err := os.Stat(p)
	require.NoError(t, err)
	require.Equal(t, size, st.Size(), "the blob file holds the compressed layer")

	_, err = reg.BlobPath("sha256:" + digest.Hex[:63] + "x")
	require.ErrorContains(t, err, "64 lowercase hex")
	_, err = reg.BlobPath("sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	require.ErrorContains(t, err, "was it pushed")
}
