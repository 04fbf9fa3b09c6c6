package image

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containers/ocicrypt/blockcipher"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// annotationPubOpts is ocicrypt's layer annotation holding the public
// block-cipher options (cipher type, HMAC) as standard base64 of JSON.
const annotationPubOpts = "org.opencontainers.image.enc.pubopts"

// LayerKeyUnwrapper unwraps the keys of ocicrypt-encrypted layers.
// guest/cdh's KeyProvider implements it (ocicrypt key provider
// "attestation-agent", keys released by the KBS after attestation).
type LayerKeyUnwrapper interface {
	// UnwrapLayerKeys returns, for each encrypted layer descriptor (media
	// type, ciphertext digest and size, annotations from the manifest), in
	// order, its ocicrypt PrivateLayerBlockCipherOptions JSON: symmetric
	// key, nonce and plaintext digest. Its errors name the layer and the
	// key, and Pull returns them unchanged.
	UnwrapLayerKeys(ctx context.Context, layers []ocispec.Descriptor) ([][]byte, error)
}

// unwrapLayerKeys fetches the keys of every encrypted layer of r before
// any layer is fetched, so a key that is missing, withheld or wrong fails
// the pull with nothing fetched or unpacked. It returns how many layers
// are encrypted.
func unwrapLayerKeys(ctx context.Context, u LayerKeyUnwrapper, layers []layer) (int, error) {
	var (
		descs []ocispec.Descriptor
		idx   []int
	)
	for i, l := range layers {
		if !l.encrypted {
			continue
		}
		descs = append(descs, ocispec.Descriptor{
			MediaType:   string(l.desc.MediaType),
			Digest:      digest.Digest(l.desc.Digest.String()),
			Size:        l.desc.Size,
			Annotations: l.desc.Annotations,
		})
		idx = append(idx, i)
	}
	if len(descs) == 0 {
		return 0, nil
	}
	opts, err := u.UnwrapLayerKeys(ctx, descs)
	if err != nil {
		return 0, err
	}
	if len(opts) != len(descs) {
		return 0, fmt.Errorf("unwrap layer keys: the key provider returned %d keys for %d encrypted layers: %w", len(opts), len(descs), errdefs.ErrInternal)
	}
	for j, i := range idx {
		layers[i].keyOpts = opts[j]
	}
	return len(descs), nil
}

// decryptingReader streams the plaintext of an encrypted layer: ocicrypt's
// layer block cipher (AES-256-CTR, HMAC-SHA256 over the ciphertext checked
// at the end of the stream), hashed to check the plaintext digest the
// wrapped key options name.
type decryptingReader struct {
	*hashingReader
	what string
	want digest.Digest // "" when the key options name none
}

// decrypt returns a reader of the plaintext (still compressed per l.comp)
// of the ciphertext read through src, with l's unwrapped key. Read errors are prefixed
// "decrypt <what>". The caller must call finish after the consumer stopped
// reading, to authenticate the whole stream.
func (l layer) decrypt(src *hashingReader) (*decryptingReader, error) {
	what := "layer " + l.desc.Digest.String()
	var priv blockcipher.PrivateLayerBlockCipherOptions
	if err := json.Unmarshal(l.keyOpts, &priv); err != nil {
		return nil, fmt.Errorf("decrypt %s: parse the unwrapped key options: %v: want ocicrypt PrivateLayerBlockCipherOptions JSON: %w", what, err, errdefs.ErrInvalidArgument)
	}
	b64, ok := l.desc.Annotations[annotationPubOpts]
	if !ok {
		return nil, fmt.Errorf("decrypt %s: no %s annotation (cipher type and HMAC): the manifest is not an ocicrypt-encrypted image: %w", what, annotationPubOpts, errdefs.ErrInvalidArgument)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("decrypt %s: decode the %s annotation: %v: want standard base64 of JSON: %w", what, annotationPubOpts, err, errdefs.ErrInvalidArgument)
	}
	var pub blockcipher.PublicLayerBlockCipherOptions
	if err := json.Unmarshal(raw, &pub); err != nil {
		return nil, fmt.Errorf("decrypt %s: parse the %s annotation: %v: %w", what, annotationPubOpts, err, errdefs.ErrInvalidArgument)
	}
	if priv.Digest != "" && priv.Digest.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("decrypt %s: the key options name plaintext digest %s: only sha256 is supported: %w", what, priv.Digest, errdefs.ErrNotImplemented)
	}
	h, err := blockcipher.NewLayerBlockCipherHandler()
	if err != nil {
		return nil, fmt.Errorf("decrypt %s: %w", what, err)
	}
	plain, _, err := h.Decrypt(src, blockcipher.LayerBlockCipherOptions{Public: pub, Private: priv})
	if err != nil {
		return nil, fmt.Errorf("decrypt %s: cipher %q: %w: %w", what, pub.CipherType, err, errdefs.ErrInvalidArgument)
	}
	return &decryptingReader{hashingReader: newHashingReader(authErrReader{r: plain, src: src, what: what}), what: what, want: priv.Digest}, nil
}

// finish reads the rest of the plaintext, which makes the block cipher
// check the HMAC of the whole ciphertext, and checks the plaintext digest.
// A mismatch is a *DigestMismatchError of Kind "plaintext digest".
func (d *decryptingReader) finish() error {
	if err := d.drain(); err != nil {
		return err
	}
	if d.want != "" {
		if got := d.digest(); got != d.want.String() {
			return &DigestMismatchError{What: d.what, Kind: "plaintext digest", Want: d.want.String(), Got: got}
		}
	}
	return nil
}

// authErrReader explains the errors of the block cipher's reader r: an
// error of the ciphertext source src passes unchanged (the fetch failed),
// any other is the cipher's end-of-stream HMAC check failing.
type authErrReader struct {
	r    io.Reader
	src  *hashingReader
	what string
}

// Read implements io.Reader.
func (a authErrReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err == nil || errors.Is(err, io.EOF) {
		return n, err
	}
	if a.src.err != nil && !errors.Is(a.src.err, io.EOF) {
		return n, err
	}
	if strings.HasPrefix(err.Error(), ocicryptHMACFailure) {
		// ocicrypt's message carries the computed HMAC as raw bytes: leave
		// it out.
		return n, fmt.Errorf("decrypt %s: the HMAC-SHA256 of the ciphertext does not match the one in its %s annotation: the ciphertext or the annotation was altered, or the layer key does not belong to them: %w", a.what, annotationPubOpts, errdefs.ErrDataLoss)
	}
	return n, fmt.Errorf("decrypt %s: %w: %w", a.what, err, errdefs.ErrDataLoss)
}

// ocicryptHMACFailure starts the error of ocicrypt's AES-CTR reader
// (blockcipher_aes_ctr.go) when the end-of-stream HMAC check fails.
const ocicryptHMACFailure = "could not properly decrypt byte stream"
