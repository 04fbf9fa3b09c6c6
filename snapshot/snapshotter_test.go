package snapshot

import (
	"context"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestIsUnpackKey(t *testing.T) {
	for key, want := range map[string]bool{
		"extract-123-abc sha256:00":       true,
		"default/4/extract-1-x sha256:00": true,
		"k8s.io/12/ctr-1":                 false,
		"rootfs":                          false,
		"extracted":                       false,
		"ns/1/extractor":                  false,
	} {
		assert.Equal(t, want, isUnpackKey(key), key)
	}
}

// TestDamagedLabels checks the error for layer metadata changed behind
// cc-snapshotter's back (Update cannot do it; a hand-edited database can).
func TestDamagedLabels(t *testing.T) {
	ctx := context.Background()
	sn, err := NewSnapshotter(t.TempDir())
	require.NoError(t, err)
	defer sn.Close()

	d := "sha256:" + strings.Repeat("a", 64)
	_, err = sn.Prepare(ctx, "extract-1 c0", "", snapshots.WithLabels(map[string]string{
		snapshots.LabelSnapshotRef:             "c0",
		snapshotters.TargetRefLabel:            "registry.example/app:1",
		snapshotters.TargetLayerDigestLabel:    d,
		snapshotters.TargetManifestDigestLabel: d,
	}))
	require.True(t, errdefs.IsAlreadyExists(err), "got %v", err)

	require.NoError(t, sn.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, err := storage.UpdateInfo(ctx, snapshots.Info{Name: "c0", Labels: map[string]string{LabelLayerDigest: "garbage"}}, "labels."+LabelLayerDigest)
		return err
	}))
	_, err = sn.Prepare(ctx, "rootfs", "c0")
	require.Error(t, err)
	assert.True(t, errdefs.IsDataLoss(err), "got %v", err)
	assert.Contains(t, err.Error(), `"garbage"`)
	assert.Contains(t, err.Error(), "pull it again")
	_, err = sn.Stat(ctx, "rootfs")
	assert.True(t, errdefs.IsNotFound(err), "nothing may be created: %v", err)
}
