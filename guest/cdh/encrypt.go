package cdh

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	"github.com/containers/ocicrypt/blockcipher"
	"github.com/opencontainers/go-digest"
)

// LayerEncryptFinalizer returns the annotations an encrypted layer's
// descriptor must carry: AnnotationKeyProvider (the wrapped layer key) and
// AnnotationPubOpts (cipher type and HMAC). It may be called only after the
// ciphertext stream was read to its end.
type LayerEncryptFinalizer func() (map[string]string, error)

// EncryptLayer is the encrypting side of the key provider, as ocicrypt's
// EncryptLayer with CoCo's "attestation-agent" key provider does it: it
// streams the layer blob plain (tar, gzip or zstd, as pushed; its digest
// is plainDigest, "sha256:<hex>") through ocicrypt's
// AES_256_CTR_HMAC_SHA256 layer block cipher under a fresh random 32-byte
// layer key, and wraps that key's PrivateLayerBlockCipherOptions (key,
// nonce, plainDigest) with AES-256-GCM under kek (KEKSize bytes) for kid
// (a "kbs:///repo/type/tag" resource URI). The encrypted layer's media
// type is the plain one with "+encrypted" appended. Errors wrap
// errdefs.ErrInvalidArgument for a bad kek, kid or plainDigest.
func EncryptLayer(plain io.Reader, plainDigest string, kek []byte, kid string) (io.Reader, LayerEncryptFinalizer, error) {
	d, err := digest.Parse(plainDigest)
	if err != nil {
		return nil, nil, fmt.Errorf("encrypt layer %s: %v: %w", plainDigest, err, errdefs.ErrInvalidArgument)
	}
	if _, err := newGCM(kek); err != nil {
		return nil, nil, fmt.Errorf("encrypt layer %s: key-encryption key for %s: %w", d, kid, err)
	}
	if _, err := ParseResourceURI(kid); err != nil {
		return nil, nil, fmt.Errorf("encrypt layer %s: %w", d, err)
	}
	h, err := blockcipher.NewLayerBlockCipherHandler()
	if err != nil {
		return nil, nil, fmt.Errorf("encrypt layer %s: %w", d, err)
	}
	enc, fin, err := h.Encrypt(plain, blockcipher.AES256CTR)
	if err != nil {
		return nil, nil, fmt.Errorf("encrypt layer %s: %w", d, err)
	}
	finalize := func() (map[string]string, error) {
		opts, err := fin()
		if err != nil {
			return nil, fmt.Errorf("finish encrypting layer %s: %w", d, err)
		}
		opts.Private.Digest = d
		priv, err := json.Marshal(opts.Private)
		if err != nil {
			return nil, fmt.Errorf("finish encrypting layer %s: encode key options: %w", d, err)
		}
		defer clear(priv)
		pub, err := json.Marshal(opts.Public)
		if err != nil {
			return nil, fmt.Errorf("finish encrypting layer %s: encode public options: %w", d, err)
		}
		wrapped, err := WrapLayerKey(kek, kid, priv)
		if err != nil {
			return nil, fmt.Errorf("finish encrypting layer %s: %w", d, err)
		}
		return map[string]string{
			AnnotationKeyProvider: wrapped,
			AnnotationPubOpts:     base64.StdEncoding.EncodeToString(pub),
		}, nil
	}
	return enc, finalize, nil
}
