package shim

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs/pkg/errgrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cofferhq/coffer/snapshot/guestpull"
)

// AnnotationCRIImageName is the OCI spec annotation in which containerd's
// CRI plugin names a container's image.
const AnnotationCRIImageName = "io.kubernetes.cri.image-name"

// imageRef is what the guest pulls: the reference the user named and, when
// containerd resolved one, the digest of the index or manifest it resolved.
type imageRef struct {
	Name   string
	Digest string
	// Layers are the compressed layer digests the guest must find, base
	// first; empty when only the name (and maybe digest) is known.
	Layers []string
}

// String renders the reference as name@digest when a digest is known.
func (r imageRef) String() string {
	if r.Digest == "" {
		return r.Name
	}
	return r.Name + "@" + r.Digest
}

// resolveImage finds the image a container was created from. CRI names it
// in a spec annotation; ctr and Go clients record it only in containerd's
// container record, which the shim reads over containerd's gRPC API at
// grpcAddress (in the request's namespace, carried by ctx). The image's
// target digest then comes from containerd's image store, so the guest
// pulls exactly what containerd resolved.
func resolveImage(ctx context.Context, grpcAddress, containerID string, spec *specs.Spec) (imageRef, error) {
	var ref imageRef
	if spec.Annotations != nil {
		ref.Name = spec.Annotations[AnnotationCRIImageName]
	}
	if grpcAddress == "" {
		if ref.Name == "" {
			return ref, fmt.Errorf("container %s: no image name in the OCI spec (annotation %s) and no containerd address to look it up", containerID, AnnotationCRIImageName)
		}
		return ref, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+strings.TrimPrefix(grpcAddress, "unix://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return ref, fmt.Errorf("connect to containerd at %s: %w", grpcAddress, err)
	}
	defer conn.Close()
	if ref.Name == "" {
		resp, err := containersapi.NewContainersClient(conn).Get(ctx, &containersapi.GetContainerRequest{ID: containerID})
		if err != nil {
			return ref, fmt.Errorf("look up container %s in containerd: %w", containerID, errgrpc.ToNative(err))
		}
		ref.Name = resp.GetContainer().GetImage()
		if ref.Name == "" {
			return ref, fmt.Errorf("container %s was created without an image (containerd's record has no image and the OCI spec has no %s annotation): create it from an image", containerID, AnnotationCRIImageName)
		}
	}
	img, err := imagesapi.NewImagesClient(conn).Get(ctx, &imagesapi.GetImageRequest{Name: ref.Name})
	if err != nil {
		// CRI may name the image by a reference the image store lacks
		// (e.g. a digest-only name); pulling by name is still correct.
		return ref, nil
	}
	ref.Digest = img.GetImage().GetTarget().GetDigest()
	return ref, nil
}

// kataVolumeOption starts the mount option in which Kata's
// nydus-snapshotter passes a base64 JSON volume descriptor.
const kataVolumeOption = "io.katacontainers.volume="

// kataVolume is the part of Kata's volume descriptor the shim reads.
type kataVolume struct {
	VolumeType string `json:"volume_type"`
}

// errHostRootfs means the rootfs was unpacked on the host.
var errHostRootfs = errors.New("rootfs unpacked on the host")

// rootfsImage decides, from the rootfs mounts containerd passed, what the
// guest pulls:
//
//   - a cc-snapshotter guest-pull mount: its image reference, pinned to the
//     manifest and layer digests containerd resolved;
//   - Kata's nydus-snapshotter form (an io.katacontainers.volume option
//     with volume_type image_guest_pull): the image named by CRI's
//     annotation, as Kata does;
//   - anything else (overlayfs and other host snapshotters): an error
//     wrapping errHostRootfs, because the host already fetched and unpacked
//     the layers.
func rootfsImage(rootfs []*types.Mount, spec *specs.Spec) (imageRef, error) {
	for _, m := range rootfs {
		p, ok, err := guestpull.FromMount(m.GetOptions())
		if ok {
			if err != nil {
				return imageRef{}, fmt.Errorf("rootfs mount: %w", err)
			}
			return imageRef{Name: p.ImageRef, Digest: p.ManifestDigest, Layers: p.Layers}, nil
		}
		for _, o := range m.GetOptions() {
			enc, found := strings.CutPrefix(o, kataVolumeOption)
			if !found {
				continue
			}
			b, err := base64.StdEncoding.DecodeString(enc)
			if err != nil {
				return imageRef{}, fmt.Errorf("rootfs mount option %s: bad base64: %w", strings.TrimSuffix(kataVolumeOption, "="), err)
			}
			var v kataVolume
			if err := json.Unmarshal(b, &v); err != nil {
				return imageRef{}, fmt.Errorf("rootfs mount option %s: bad JSON: %w", strings.TrimSuffix(kataVolumeOption, "="), err)
			}
			if v.VolumeType != "image_guest_pull" {
				return imageRef{}, fmt.Errorf("rootfs mount option %s has volume_type %q: only \"image_guest_pull\" is supported", strings.TrimSuffix(kataVolumeOption, "="), v.VolumeType)
			}
			name := spec.Annotations[AnnotationCRIImageName]
			if name == "" {
				return imageRef{}, fmt.Errorf("rootfs is a Kata image_guest_pull volume, but the OCI spec has no %s annotation naming the image", AnnotationCRIImageName)
			}
			return imageRef{Name: name}, nil
		}
	}
	if len(rootfs) == 0 {
		return imageRef{}, fmt.Errorf("%w: containerd passed no rootfs mount (a rootfs prepared in the bundle)", errHostRootfs)
	}
	return imageRef{}, fmt.Errorf("%w: the rootfs is a %q mount from a host snapshotter", errHostRootfs, rootfs[0].GetType())
}
