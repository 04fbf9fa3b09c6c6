package shim

import (
	"context"
	"fmt"
	"strings"
	"time"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"github.com/containerd/errdefs/pkg/errgrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// AnnotationCRIImageName is the OCI spec annotation in which containerd's
// CRI plugin names a container's image.
const AnnotationCRIImageName = "io.kubernetes.cri.image-name"

// imageRef is what the guest pulls: the reference the user named and, when
// containerd resolved one, the digest of the index or manifest it resolved.
type imageRef struct {
	Name   string
	Digest string
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
