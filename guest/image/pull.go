// Package image pulls an OCI or Docker image from a registry, inside the
// confidential guest, into a guest-local rootfs directory.
//
// The host, and the network path to the registry, are untrusted. Pull checks
// every digest on the chain (OCI image spec: descriptor.md, manifest.md,
// config.md, layer.md):
//
//   - the index or manifest against Request.Digest, when given (pull by
//     digest, never by tag, when the host resolved one);
//   - the platform manifest against its index entry;
//   - the config blob against the manifest's config descriptor;
//   - the manifest's layer digests against Request.LayerDigests, when given;
//   - each compressed layer blob against its manifest digest and size, and
//     its uncompressed tar against the config's rootfs.diff_ids.
//
// Layers are streamed: fetch, hash, decompress, hash, unpack, with memory
// bounded by the decoders' windows whatever the image size, and nothing
// spooled to disk. Since a stream's digest is known only at its end, a layer
// is unpacked before its verification completes; on any failure Pull empties
// the rootfs, so nothing unverified is left to run.
//
// Layers are unpacked with containerd's pkg/archive Apply, whose default
// whiteout handling deletes whited-out paths on a plain directory (no
// overlayfs), and which keeps every entry inside the rootfs (symlinks and
// ".." resolved against the rootfs root).
package image

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/log"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Request says what to pull and how to reach the registry.
type Request struct {
	// Reference names the image, e.g. "127.0.0.1:5000/test/busybox:latest"
	// or "registry.example:5000/app@sha256:<hex>". Docker Hub shorthand
	// ("busybox") resolves to index.docker.io as usual.
	Reference string
	// Digest is an optional "sha256:<64 hex>" the host resolved: the digest
	// of an index or of a manifest. When set, the image is fetched by this
	// digest, never by tag; a Reference that pins a different digest is
	// refused.
	Digest string
	// LayerDigests are optional expected compressed layer digests
	// ("sha256:<hex>"), in manifest order; a manifest whose layers differ in
	// number or value is refused before any layer is fetched.
	LayerDigests []string
	// Platform is "os/arch[/variant]" (containerd platforms syntax); ""
	// means runtime.GOOS/runtime.GOARCH. It picks the manifest from an
	// index (strict match: no 386 fallback for amd64) and must match the
	// config's os/architecture when those are set.
	Platform string
	// Registry is how the guest reaches registries.
	Registry RegistryConfig
	// Decrypt unwraps the keys of ocicrypt-encrypted layers ("+encrypted"
	// media types); guest/cdh's KeyProvider is the one to pass. Every key
	// is unwrapped before any layer is fetched. nil refuses encrypted
	// images (errdefs.ErrFailedPrecondition, naming the first encrypted
	// layer).
	Decrypt LayerKeyUnwrapper
}

// Result describes a completed pull.
type Result struct {
	// ManifestDigest is the "sha256:<hex>" of the image manifest unpacked
	// (the platform's manifest when the reference named an index).
	ManifestDigest string
	// IndexDigest is the "sha256:<hex>" of the index the manifest was
	// chosen from, or "" when the reference named a manifest.
	IndexDigest string
	// LayerDigests are the verified compressed layer digests, in order.
	LayerDigests []string
	// BytesFetched counts bytes read from the registry: manifests, config
	// and compressed layers.
	BytesFetched int64
	// Duration is the wall time of the whole pull.
	Duration time.Duration
	// ConfigJSON is the raw OCI image config blob (verified against the
	// manifest), for the caller to build the runtime spec from.
	ConfigJSON []byte
	// DecryptedLayers counts the ocicrypt-encrypted layers decrypted.
	DecryptedLayers int
}

// Pull fetches the image of req into rootfs, an absolute directory path
// that must be missing or empty (it is created with mode 0755), applying the
// layers in order with full OCI layer semantics (whiteouts, opaque
// directories, hard and symbolic links, modes including setuid and sticky,
// ownership, mtimes, device nodes where permitted, xattrs).
//
// Encrypted layers (ocicrypt, "+encrypted" media types) are decrypted in
// the same stream with keys from req.Decrypt; their plaintext is checked
// against the key options' digest and the config's diff_id, and the whole
// ciphertext against ocicrypt's HMAC.
//
// Every error starts with "pull <Reference>: " and wraps an errdefs class:
// ErrInvalidArgument (bad request, malformed image), ErrFailedPrecondition
// (rootfs not empty, LayerDigests differ, an encrypted layer and no
// req.Decrypt), ErrNotFound (no such manifest, no manifest for the
// platform), ErrNotImplemented (unknown layer media types, schema 1),
// ErrUnavailable (*UnreachableError, *TLSError, 5xx), ErrUnauthenticated /
// ErrPermissionDenied (401/403), ErrDataLoss (*DigestMismatchError, a
// failed ciphertext HMAC). Layer key errors come from req.Decrypt unchanged
// (guest/cdh's *KeyError). Registry error responses keep the registry's
// "CODE: message". On any error the rootfs is left empty; if emptying
// fails too, the error says so and the rootfs must not be used.
func Pull(ctx context.Context, req Request, rootfs string) (res *Result, retErr error) {
	start := time.Now()
	fail := func(err error) error { return fmt.Errorf("pull %s: %w", req.Reference, err) }

	if err := prepareRootfs(rootfs); err != nil {
		return nil, fail(err)
	}
	defer func() {
		if retErr == nil {
			return
		}
		if err := emptyRootfs(rootfs); err != nil {
			retErr = fmt.Errorf("%w; the partially written rootfs could not be emptied, do not use it: %v", retErr, err)
		}
	}()

	ref, err := parseReference(req)
	if err != nil {
		return nil, fail(err)
	}
	plat, err := parsePlatform(req.Platform)
	if err != nil {
		return nil, fail(err)
	}
	t, err := newRegistryTransport(req.Registry)
	if err != nil {
		return nil, fail(err)
	}
	defer t.CloseIdleConnections()
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(t),
		remote.WithAuth(authn.Anonymous),
	}

	r, err := resolve(ctx, req, ref, plat, t, opts)
	if err != nil {
		return nil, fail(err)
	}
	res = &Result{
		ManifestDigest: r.manifestDigest.String(),
		IndexDigest:    r.indexDigest,
		BytesFetched:   r.fetched,
		ConfigJSON:     r.rawConfig,
	}
	if res.DecryptedLayers, err = unwrapLayerKeys(ctx, req.Decrypt, r.layers); err != nil {
		return nil, fail(err)
	}
	for i, l := range r.layers {
		n, err := applyLayer(ctx, r.img, l, rootfs, t)
		res.BytesFetched += n
		if err != nil {
			return nil, fail(fmt.Errorf("layer %d of %d: %w", i+1, len(r.layers), err))
		}
		res.LayerDigests = append(res.LayerDigests, l.desc.Digest.String())
	}
	res.Duration = time.Since(start)
	log.G(ctx).WithField("ref", req.Reference).WithField("manifest", res.ManifestDigest).
		WithField("layers", len(res.LayerDigests)).WithField("decrypted", res.DecryptedLayers).WithField("bytes", res.BytesFetched).
		WithField("duration", res.Duration).Info("image pulled and verified")
	return res, nil
}
