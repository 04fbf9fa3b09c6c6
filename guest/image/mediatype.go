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

// layerCompression maps a layer media type to its compression, per the OCI
// image spec (layer.md, media-types.md) and the Docker image manifest v2
// schema 2. Encrypted layers (ocicrypt's "+encrypted" suffix) and unknown
// types are refused with errdefs.ErrNotImplemented.
func layerCompression(mediaType string) (compression, error) {
	if strings.HasSuffix(mediaType, "+encrypted") {
		return 0, fmt.Errorf("layer media type %q: encrypted layers need the attestation path (key release after attestation), not a plain pull: %w", mediaType, errdefs.ErrNotImplemented)
	}
	switch mediaType {
	case "application/vnd.oci.image.layer.v1.tar",
		"application/vnd.oci.image.layer.nondistributable.v1.tar",
		"application/vnd.docker.image.rootfs.diff.tar":
		return uncompressed, nil
	case "application/vnd.oci.image.layer.v1.tar+gzip",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"application/vnd.docker.image.rootfs.diff.tar.gzip",
		"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
		return gzipped, nil
	case "application/vnd.oci.image.layer.v1.tar+zstd",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
		return zstdCompressed, nil
	}
	return 0, fmt.Errorf("layer media type %q is not supported: want an OCI or Docker tar layer, uncompressed, gzip or zstd: %w", mediaType, errdefs.ErrNotImplemented)
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
