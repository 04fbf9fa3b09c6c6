package shim

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/types"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/snapshot/guestpull"
)

func TestRootfsImageGuestPull(t *testing.T) {
	p := guestpull.Payload{
		Version:        guestpull.Version,
		ImageRef:       "127.0.0.1:5000/app:1",
		ManifestDigest: "sha256:" + strings.Repeat("1", 64),
		Layers:         []string{"sha256:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("b", 64)},
	}
	m, err := p.Mount("/var/lib/coffer/snapshotter/empty")
	require.NoError(t, err)
	ref, err := rootfsImage([]*types.Mount{m}, &specs.Spec{})
	require.NoError(t, err)
	require.Equal(t, imageRef{Name: p.ImageRef, Digest: p.ManifestDigest, Layers: p.Layers}, ref)
	require.Equal(t, "127.0.0.1:5000/app:1@sha256:"+strings.Repeat("1", 64), ref.String())
}

func TestRootfsImageBadPayload(t *testing.T) {
	m := &types.Mount{Type: "bind", Source: "/e", Options: []string{"ro", guestpull.OptionPrefix + "!!"}}
	_, err := rootfsImage([]*types.Mount{m}, &specs.Spec{})
	require.ErrorContains(t, err, "bad base64")
	require.False(t, errors.Is(err, errHostRootfs))
}

func kataMount(volumeJSON string) *types.Mount {
	return &types.Mount{
		Type:    "fuse.nydus-overlayfs",
		Source:  "overlay",
		Options: []string{"lowerdir=/x", kataVolumeOption + base64.StdEncoding.EncodeToString([]byte(volumeJSON))},
	}
}

func TestRootfsImageKataGuestPull(t *testing.T) {
	spec := &specs.Spec{Annotations: map[string]string{AnnotationCRIImageName: "docker.io/library/nginx:1.27"}}
	ref, err := rootfsImage([]*types.Mount{kataMount(`{"volume_type":"image_guest_pull","source":"dummy","options":[]}`)}, spec)
	require.NoError(t, err)
	require.Equal(t, imageRef{Name: "docker.io/library/nginx:1.27"}, ref)

	_, err = rootfsImage([]*types.Mount{kataMount(`{"volume_type":"image_guest_pull"}`)}, &specs.Spec{})
	require.ErrorContains(t, err, AnnotationCRIImageName)

	_, err = rootfsImage([]*types.Mount{kataMount(`{"volume_type":"blk"}`)}, spec)
	require.ErrorContains(t, err, `volume_type "blk"`)

	_, err = rootfsImage([]*types.Mount{kataMount(`{`)}, spec)
	require.ErrorContains(t, err, "bad JSON")
}

func TestRootfsImageHostRootfs(t *testing.T) {
	_, err := rootfsImage([]*types.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/a:/b"}}}, &specs.Spec{})
	require.True(t, errors.Is(err, errHostRootfs), "%v", err)
	require.ErrorContains(t, err, `"overlay" mount`)

	_, err = rootfsImage(nil, &specs.Spec{})
	require.True(t, errors.Is(err, errHostRootfs), "%v", err)
	require.ErrorContains(t, err, "no rootfs mount")
}
