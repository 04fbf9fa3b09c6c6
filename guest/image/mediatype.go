package image

import (
	"fmt"
	"io"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// maxZstdWindow bounds the zstd window a layer may demand, so a hostile layer
// cannot make the decoder allocate more. zstd levels up to 19 use ≤ 8 MiB;
// "--long=26" uses 64 MiB.
const maxZstdWindow = 64 << 20 // bytes

// compression is how a layer blob is compressed.
type compression int

const (
	uncompressed compression = iota
	gzipped
	zstdCompressed
)

// encryptedSuffix ends the media type of an ocicrypt-encrypted layer
// (containers/ocicrypt docs/spec.md): the encrypted blob of a layer of the
// media type without the suffix.
const encryptedSuffix = "+encrypted"

// layerCompression maps a layer media type to its compression, per the OCI
// image spec (layer.md, media-types.md) and the Docker image manifest v2
// schema 2, and says whether the layer is ocicrypt-encrypted (the same
// types with the "+encrypted" suffix). Unknown types are refused with
// errdefs.ErrNotImplemented.
func layerCompression(mediaType string) (compression, bool, error) {
	base, encrypted := strings.CutSuffix(mediaType, encryptedSuffix)
	c, ok := plainLayerCompression(base)
	if !ok {
		return 0, false, fmt.Errorf("layer media type %q is not supported: want an OCI or Docker tar layer, uncompressed, gzip or zstd, optionally ocicrypt-encrypted (%q suffix): %w", mediaType, encryptedSuffix, errdefs.ErrNotImplemented)
	}
	return c, encrypted, nil
}

// plainLayerCompression maps an unencrypted layer media type to its
// compression; false for unknown types.
func plainLayerCompression(mediaType string) (compression, bool) {
	switch mediaType {
	case "application/vnd.oci.image.layer.v1.tar",
		"application/vnd.oci.image.layer.nondistributable.v1.tar",
		"application/vnd.docker.image.rootfs.diff.tar":
		return uncompressed, true
	case "application/vnd.oci.image.layer.v1.tar+gzip",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"application/vnd.docker.image.rootfs.diff.tar.gzip",
		"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
		return gzipped, true
	case "application/vnd.oci.image.layer.v1.tar+zstd",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
		return zstdCompressed, true
	}
	return 0, false
}

// decompress returns a streaming reader of the tar inside r. Closing it
// releases decoder state; it does not close r.
func (c compression) decompress(r io.Reader) (io.ReadCloser, error) {
	switch c {
	case gzipped:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("open gzip stream: %w", err)
		}
		return zr, nil
	case zstdCompressed:
		zr, err := zstd.NewReader(r,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, fmt.Errorf("open zstd stream: %w", err)
		}
		return zr.IOReadCloser(), nil
	default:
		return io.NopCloser(r), nil
	}
}
