package bench

import (
	"archive/tar"
	"bytes"
	"fmt"
	"math/rand/v2"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/cofferhq/coffer/integration/harness"
)

// fillerTime is the modification time of the filler files, fixed so the
// same size always yields the same digests.
var fillerTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// FillerImage is the busybox test image (harness.BusyboxImage) on top of
// one uncompressed tar layer (application/vnd.oci.image.layer.v1.tar) holding
// mib files /filler/fN of 1 MiB each, of pseudo-random bytes (ChaCha8,
// fixed seed: incompressible and reproducible). An uncompressed layer
// keeps decompression out of the pull-and-decrypt figure, as
// guest/image's BenchmarkPullDecryptVsShell does. The layer is held in
// memory (mib MiB). mib must be at least 1.
func FillerImage(mib int) (v1.Image, error) {
	if mib < 1 {
		return nil, fmt.Errorf("filler image of %d MiB: want at least 1 MiB", mib)
	}
	base, err := harness.BusyboxImage()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(mib<<20 + mib*1024 + 4096)
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "filler/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: fillerTime}); err != nil {
		return nil, fmt.Errorf("write filler layer: %w", err)
	}
	rng := rand.NewChaCha8([32]byte{'c', 'o', 'f', 'f', 'e', 'r'})
	body := make([]byte, 1<<20)
	for i := range mib {
		_, _ = rng.Read(body)
		hdr := &tar.Header{Name: fmt.Sprintf("filler/f%d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: fillerTime}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("write filler layer: %w", err)
		}
		if _, err := tw.Write(body); err != nil {
			return nil, fmt.Errorf("write filler layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("write filler layer: %w", err)
	}
	// The filler goes below busybox, so that every size has its own layer
	// chain: images sharing the busybox chain but encrypted under other
	// keys share a cc snapshot, and the shim then pins the other image's
	// (ciphertext) layer digests.
	bbLayers, err := base.Layers()
	if err != nil || len(bbLayers) != 1 {
		return nil, fmt.Errorf("busybox test image layers: %v (%d layers, want 1)", err, len(bbLayers))
	}
	cf, err := base.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("busybox test image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs = nil
	cf.History = nil
	img, err := mutate.ConfigFile(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), cf)
	if err != nil {
		return nil, fmt.Errorf("filler image config: %w", err)
	}
	img, err = mutate.AppendLayers(img, static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer), bbLayers[0])
	if err != nil {
		return nil, fmt.Errorf("stack the %d MiB filler layer and the busybox layer: %w", mib, err)
	}
	return img, nil
}
