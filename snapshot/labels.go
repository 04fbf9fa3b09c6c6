package snapshot

import (
	"fmt"

	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// Labels cc-snapshotter sets on every layer snapshot it commits. They mark
// the snapshot as a guest-pull layer (nothing of it exists on the host) and
// record what the guest must pull. Update refuses to change them.
const (
	// LabelLayerDigest holds the compressed layer digest
	// ("sha256:<64 hex>") from the image manifest, copied from
	// snapshotters.TargetLayerDigestLabel.
	LabelLayerDigest = "containerd.io/snapshot/cc.layer-digest"
	// LabelImageRef holds the image reference containerd pulled the layer
	// for (e.g. "registry.example/app:1.2"), copied from
	// snapshotters.TargetRefLabel.
	LabelImageRef = "containerd.io/snapshot/cc.image-ref"
	// LabelManifestDigest holds the digest of the platform manifest the
	// layer belongs to, copied from snapshotters.TargetManifestDigestLabel.
	LabelManifestDigest = "containerd.io/snapshot/cc.manifest-digest"
)

// ownLabels are the labels only cc-snapshotter may set.
var ownLabels = []string{LabelLayerDigest, LabelImageRef, LabelManifestDigest}

// fixLabels tells the user how to make containerd pass the image labels.
const fixLabels = "containerd passes them only when it pulls with the handler " +
	"snapshotters.AppendInfoHandlerWrapper: for `ctr image pull` and CRI set " +
	"exports = {enable_remote_snapshot_annotations = \"true\"} in [proxy_plugins.cc] " +
	"and add {platform = \"linux/amd64\", snapshotter = \"cc\"} to " +
	"[plugins.\"io.containerd.transfer.v1.local\"].unpack_config; " +
	"or pull with `ccctl image pull REF` (docs/snapshotter.md)"

// layerInfo is what cc-snapshotter records about one image layer.
type layerInfo struct {
	imageRef       string
	layerDigest    digest.Digest
	manifestDigest digest.Digest
}

// labels returns the cc-snapshotter labels recording l.
func (l layerInfo) labels() map[string]string {
	return map[string]string{
		LabelLayerDigest:    l.layerDigest.String(),
		LabelImageRef:       l.imageRef,
		LabelManifestDigest: l.manifestDigest.String(),
	}
}

// layerFromUnpackLabels reads the image labels containerd's unpacker passes
// (pkg/snapshotters: cri.image-ref, cri.layer-digest, cri.manifest-digest)
// for the layer snapshot chainID. It returns an error wrapping
// errdefs.ErrInvalidArgument that names the first missing or malformed
// label and how to make containerd send it.
func layerFromUnpackLabels(chainID string, labels map[string]string) (layerInfo, error) {
	for _, k := range []string{snapshotters.TargetRefLabel, snapshotters.TargetLayerDigestLabel, snapshotters.TargetManifestDigestLabel} {
		if labels[k] == "" {
			return layerInfo{}, fmt.Errorf("prepare layer snapshot %s: missing label %q: cc-snapshotter never fetches or unpacks a layer on the host and needs the image reference and digests to let the guest pull it; %s: %w",
				chainID, k, fixLabels, errdefs.ErrInvalidArgument)
		}
	}
	ref := labels[snapshotters.TargetRefLabel]
	if _, err := reference.Parse(ref); err != nil {
		return layerInfo{}, fmt.Errorf("prepare layer snapshot %s: label %q = %q is not an image reference (%v), want e.g. \"registry.example/app:1.2\": %w",
			chainID, snapshotters.TargetRefLabel, ref, err, errdefs.ErrInvalidArgument)
	}
	ld, err := parseDigestLabel(chainID, labels, snapshotters.TargetLayerDigestLabel)
	if err != nil {
		return layerInfo{}, err
	}
	md, err := parseDigestLabel(chainID, labels, snapshotters.TargetManifestDigestLabel)
	if err != nil {
		return layerInfo{}, err
	}
	return layerInfo{imageRef: ref, layerDigest: ld, manifestDigest: md}, nil
}

// parseDigestLabel parses labels[key] with digest.Parse.
func parseDigestLabel(chainID string, labels map[string]string, key string) (digest.Digest, error) {
	d, err := digest.Parse(labels[key])
	if err != nil {
		return "", fmt.Errorf("prepare layer snapshot %s: label %q = %q is not a digest (%v), want \"sha256:<64 hex>\": %w",
			chainID, key, labels[key], err, errdefs.ErrInvalidArgument)
	}
	return d, nil
}

// layerFromOwnLabels reads the labels cc-snapshotter recorded on the
// committed layer snapshot name. ok is false when the snapshot carries no
// LabelLayerDigest, i.e. cc-snapshotter did not commit it as a guest-pull
// layer; err is set when the recorded labels are damaged.
func layerFromOwnLabels(name string, labels map[string]string) (l layerInfo, ok bool, err error) {
	v, ok := labels[LabelLayerDigest]
	if !ok {
		return layerInfo{}, false, nil
	}
	ld, err := digest.Parse(v)
	if err != nil {
		return layerInfo{}, true, fmt.Errorf("snapshot %s: label %q = %q is not a digest (%v): the metadata was changed outside cc-snapshotter; remove the image and pull it again: %w",
			name, LabelLayerDigest, v, err, errdefs.ErrDataLoss)
	}
	l = layerInfo{layerDigest: ld, imageRef: labels[LabelImageRef]}
	if v := labels[LabelManifestDigest]; v != "" {
		md, err := digest.Parse(v)
		if err != nil {
			return layerInfo{}, true, fmt.Errorf("snapshot %s: label %q = %q is not a digest (%v): remove the image and pull it again: %w",
				name, LabelManifestDigest, v, err, errdefs.ErrDataLoss)
		}
		l.manifestDigest = md
	}
	return l, true, nil
}
