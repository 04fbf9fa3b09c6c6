package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/log"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// layer is one manifest layer to apply, with what it must hash to.
type layer struct {
	desc   v1.Descriptor // from the (verified) manifest: digest, size, media type
	diffID v1.Hash       // from the (verified) config's rootfs.diff_ids
	comp   compression
	// encrypted is set for ocicrypt "+encrypted" media types; desc.Digest
	// is then the ciphertext's digest and comp the plaintext's compression.
	encrypted bool
	// keyOpts is the layer's unwrapped ocicrypt
	// PrivateLayerBlockCipherOptions JSON, set before any layer is fetched.
	keyOpts []byte
}

// hashingReader counts and SHA-256-hashes every byte read through it and
// keeps the first error its source returned (io.EOF at a clean end).
type hashingReader struct {
	r   io.Reader
	h   hash.Hash
	n   int64 // bytes
	err error
}

func newHashingReader(r io.Reader) *hashingReader {
	return &hashingReader{r: r, h: sha256.New()}
}

// Read implements io.Reader.
func (h *hashingReader) Read(p []byte) (int, error) {
	if h.err != nil {
		return 0, h.err
	}
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	if err != nil {
		h.err = err
	}
	return n, err
}

// drain reads to the end and returns the source's error, nil at io.EOF.
func (h *hashingReader) drain() error {
	_, err := io.Copy(io.Discard, h)
	return err
}

// digest is "sha256:<hex>" of the bytes read so far.
func (h *hashingReader) digest() string {
	return "sha256:" + hex.EncodeToString(h.h.Sum(nil))
}

// applyLayer streams one layer from the registry into rootfs: fetch the
// compressed blob, hash it, decrypt it if encrypted, decompress by media type, hash the tar against
// the diff_id, and unpack with containerd's archive.Apply (OCI whiteouts
// applied by deletion on a plain directory). Nothing is buffered beyond the
// decoders' fixed windows. Verification necessarily completes only at the
// end of the stream, so the caller must empty rootfs on any error. It
// returns the number of compressed bytes read; a digest, diff_id or size
// mismatch is a *DigestMismatchError naming the layer digest.
func applyLayer(ctx context.Context, img v1.Image, l layer, rootfs string, t *registryTransport) (int64, error) {
	what := "layer " + l.desc.Digest.String()
	t.forgetConnErr()
	cl, err := img.LayerByDigest(l.desc.Digest)
	if err != nil {
		return 0, fmt.Errorf("fetch %s: %w", what, t.explain(err))
	}
	rc, err := cl.Compressed()
	if err != nil {
		return 0, fmt.Errorf("fetch %s: %w", what, t.explain(err))
	}
	defer rc.Close()

	cr := newHashingReader(rc)
	var applyErr error
	if l.encrypted {
		applyErr = unpackEncrypted(ctx, cr, l, rootfs)
	} else {
		applyErr = unpack(ctx, cr, l, rootfs)
	}
	// Read the rest of the blob whatever happened: a tampered blob usually
	// breaks decompression before its end, and the digest mismatch is then
	// the real cause to report.
	readErr := cr.drain()
	if cr.n == l.desc.Size {
		if got := cr.digest(); got != l.desc.Digest.String() {
			return cr.n, &DigestMismatchError{What: what, Kind: "digest", Want: l.desc.Digest.String(), Got: got}
		}
	}
	if readErr != nil {
		return cr.n, fmt.Errorf("fetch %s: read %d of %d bytes: %w", what, cr.n, l.desc.Size, readErr)
	}
	if applyErr != nil {
		return cr.n, applyErr
	}
	if cr.n != l.desc.Size {
		return cr.n, &DigestMismatchError{What: what, Kind: "size", Want: strconv.FormatInt(l.desc.Size, 10), Got: strconv.FormatInt(cr.n, 10)}
	}
	log.G(ctx).WithField("layer", l.desc.Digest.String()).WithField("bytes", cr.n).Debug("layer verified and applied")
	return cr.n, nil
}

// unpackEncrypted decrypts the ciphertext read through cr with l's
// unwrapped key, then unpacks the plaintext like unpack, and finally
// authenticates the whole ciphertext (HMAC) and checks the plaintext
// digest. The caller checks cr's digest.
func unpackEncrypted(ctx context.Context, cr *hashingReader, l layer, rootfs string) error {
	dr, err := l.decrypt(cr)
	if err != nil {
		return err
	}
	if err := unpack(ctx, dr, l, rootfs); err != nil {
		return err
	}
	return dr.finish()
}

// unpack decompresses r, applies the tar to rootfs and checks the
// uncompressed stream against l.diffID.
func unpack(ctx context.Context, r io.Reader, l layer, rootfs string) error {
	what := "layer " + l.desc.Digest.String()
	zr, err := l.comp.decompress(r)
	if err != nil {
		return fmt.Errorf("decompress %s: %w", what, err)
	}
	defer zr.Close()
	ur := newHashingReader(zr)
	if _, err := archive.Apply(ctx, rootfs, ur); err != nil {
		if ur.err != nil && !errors.Is(ur.err, io.EOF) {
			return fmt.Errorf("decompress %s: %w", what, ur.err)
		}
		return fmt.Errorf("apply %s to %s: %w", what, rootfs, err)
	}
	// The tar end marker may precede the end of the stream (record padding,
	// the gzip trailer with its CRC): hash all of it.
	if err := ur.drain(); err != nil {
		return fmt.Errorf("decompress %s: %w", what, err)
	}
	if got := ur.digest(); got != l.diffID.String() {
		return &DigestMismatchError{What: what, Kind: "diff_id", Want: l.diffID.String(), Got: got}
	}
	return nil
}
