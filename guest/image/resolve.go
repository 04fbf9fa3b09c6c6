package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"runtime"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/platforms"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	specs "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxConfigSize bounds the image config blob, which is read whole into
// memory (it is small: a few KiB in practice).
const maxConfigSize = 8 << 20 // bytes

var sha256Digest = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// resolved is an image manifest chosen for the platform, verified down to
// its config.
type resolved struct {
	indexDigest    string // "" when the reference named a manifest
	manifestDigest v1.Hash
	img            v1.Image
	layers         []layer
	rawConfig      []byte
	fetched        int64 // bytes of index, manifest and config read
}

// parseReference parses req.Reference and, when req.Digest is set, turns it
// into a by-digest reference (so no tag is ever resolved). Hosts listed in
// Insecure get name.Insecure.
func parseReference(req Request) (name.Reference, error) {
	if req.Reference == "" {
		return nil, invalidArgument(fmt.Errorf("parse reference: Request.Reference is empty: want e.g. \"registry:5000/repo:tag\""))
	}
	ref, err := name.ParseReference(req.Reference)
	if err != nil {
		return nil, invalidArgument(fmt.Errorf("parse reference %q: %w", req.Reference, err))
	}
	if listed(req.Registry.Insecure, ref.Context().RegistryStr()) {
		if ref, err = name.ParseReference(req.Reference, name.Insecure); err != nil {
			return nil, invalidArgument(fmt.Errorf("parse reference %q: %w", req.Reference, err))
		}
	}
	if req.Digest == "" {
		return ref, nil
	}
	if !sha256Digest.MatchString(req.Digest) {
		return nil, invalidArgument(fmt.Errorf("parse Request.Digest %q: want \"sha256:\" and 64 lowercase hex digits", req.Digest))
	}
	if d, ok := ref.(name.Digest); ok && d.DigestStr() != req.Digest {
		return nil, invalidArgument(fmt.Errorf("reference %q pins digest %s but Request.Digest is %s: pass one digest", req.Reference, d.DigestStr(), req.Digest))
	}
	return ref.Context().Digest(req.Digest), nil
}

// parsePlatform parses "os/arch[/variant]", "" meaning the running
// platform's os/arch.
func parsePlatform(s string) (specs.Platform, error) {
	if s == "" {
		return platforms.Normalize(specs.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}), nil
	}
	p, err := platforms.Parse(s)
	if err != nil {
		return specs.Platform{}, invalidArgument(fmt.Errorf("parse Request.Platform %q: want \"os/arch[/variant]\": %w", s, err))
	}
	return platforms.Normalize(p), nil
}

// resolve fetches the manifest (through an index when the reference names
// one), the config, and checks every digest go-containerregistry does not
// check for us, the diff_id count, LayerDigests and the platform.
func resolve(ctx context.Context, req Request, ref name.Reference, plat specs.Platform, t *registryTransport, opts []remote.Option) (*resolved, error) {
	var r resolved
	t.forgetConnErr()
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("fetch manifest: %w", t.explain(err))
	}
	r.fetched += int64(len(desc.Manifest))
	// go-containerregistry checks by-digest manifests; check again, cheaply,
	// so the guarantee does not rest on a library detail.
	if d, ok := ref.(name.Digest); ok {
		if got := sha256Hex(desc.Manifest); got != d.DigestStr() {
			return nil, &DigestMismatchError{What: "manifest " + ref.String(), Kind: "digest", Want: d.DigestStr(), Got: got}
		}
	}

	mt := mediaType(desc.MediaType, desc.Manifest)
	var img v1.Image
	want := ""
	switch {
	case mt.IsIndex():
		r.indexDigest = desc.Digest.String()
		child, err := pickManifest(desc.Manifest, r.indexDigest, plat)
		if err != nil {
			return nil, err
		}
		want = child.String()
		t.forgetConnErr()
		if img, err = remote.Image(ref.Context().Digest(want), opts...); err != nil {
			return nil, fmt.Errorf("fetch manifest %s for %s: %w", want, platforms.Format(plat), t.explain(err))
		}
	case mt == types.DockerManifestSchema1 || mt == types.DockerManifestSchema1Signed:
		return nil, fmt.Errorf("manifest %s is Docker schema 1 (%s), which is not supported: push the image with a current tool (OCI or Docker schema 2): %w", desc.Digest, mt, errdefs.ErrNotImplemented)
	default:
		if img, err = desc.Image(); err != nil {
			return nil, fmt.Errorf("read manifest %s: %w", desc.Digest, t.explain(err))
		}
		if _, ok := ref.(name.Digest); ok {
			want = desc.Digest.String()
		}
	}

	raw, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("fetch manifest: %w", t.explain(err))
	}
	if r.indexDigest != "" {
		r.fetched += int64(len(raw))
	}
	got := sha256Hex(raw)
	if want != "" && got != want {
		return nil, &DigestMismatchError{What: "manifest " + want, Kind: "digest", Want: want, Got: got}
	}
	if r.manifestDigest, err = v1.NewHash(got); err != nil {
		return nil, fmt.Errorf("parse manifest digest %s: %w", got, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse manifest %s: %w", got, invalidArgument(err))
	}
	if r.rawConfig, err = fetchConfig(img, m, t); err != nil {
		return nil, err
	}
	r.fetched += int64(len(r.rawConfig))
	cfg, err := v1.ParseConfigFile(bytes.NewReader(r.rawConfig))
	if err != nil {
		return nil, fmt.Errorf("parse config %s: %w", m.Config.Digest, invalidArgument(err))
	}
	if err := checkPlatform(cfg, plat, got); err != nil {
		return nil, err
	}
	if err := checkLayerDigests(m, req.LayerDigests, got); err != nil {
		return nil, err
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("manifest %s has %d layers but its config %s lists %d rootfs.diff_ids: the image is malformed: %w",
			got, len(m.Layers), m.Config.Digest, len(cfg.RootFS.DiffIDs), errdefs.ErrInvalidArgument)
	}
	for i, d := range m.Layers {
		if d.Digest.Algorithm != "sha256" || cfg.RootFS.DiffIDs[i].Algorithm != "sha256" {
			return nil, fmt.Errorf("layer %d of manifest %s: digest %s, diff_id %s: only sha256 is supported: %w", i, got, d.Digest, cfg.RootFS.DiffIDs[i], errdefs.ErrNotImplemented)
		}
		comp, encrypted, err := layerCompression(string(d.MediaType))
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", d.Digest, err)
		}
		if encrypted && req.Decrypt == nil {
			return nil, fmt.Errorf("layer %s is encrypted (media type %q) but no decryption source is configured (Request.Decrypt): encrypted layers need the attestation path, where the confidential data hub releases layer keys after attestation: %w",
				d.Digest, d.MediaType, errdefs.ErrFailedPrecondition)
		}
		r.layers = append(r.layers, layer{desc: d, diffID: cfg.RootFS.DiffIDs[i], comp: comp, encrypted: encrypted})
	}
	if _, ok := ref.(name.Digest); !ok {
		log.G(ctx).WithField("ref", ref.String()).WithField("manifest", got).Warn("pulled by tag: the manifest is not pinned by a digest from the host")
	}
	r.img = img
	return &r, nil
}

// fetchConfig fetches the config blob named by m and checks its size and
// digest.
func fetchConfig(img v1.Image, m *v1.Manifest, t *registryTransport) ([]byte, error) {
	what := "config " + m.Config.Digest.String()
	if m.Config.Size > maxConfigSize || m.Config.Size < 0 {
		return nil, fmt.Errorf("%s: size %d bytes is outside 0..%d: the manifest is malformed or hostile: %w", what, m.Config.Size, maxConfigSize, errdefs.ErrInvalidArgument)
	}
	t.forgetConnErr()
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", what, t.explain(err))
	}
	if got := sha256Hex(raw); got != m.Config.Digest.String() {
		return nil, &DigestMismatchError{What: what, Kind: "digest", Want: m.Config.Digest.String(), Got: got}
	}
	if int64(len(raw)) != m.Config.Size {
		return nil, &DigestMismatchError{What: what, Kind: "size", Want: fmt.Sprint(m.Config.Size), Got: fmt.Sprint(len(raw))}
	}
	return raw, nil
}

// mediaType is the manifest media type from the Content-Type header, or
// from the document's own mediaType field when the header is not a manifest
// type.
func mediaType(header types.MediaType, raw []byte) types.MediaType {
	if header.IsIndex() || header.IsImage() || header.IsSchema1() {
		return header
	}
	var doc struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(raw, &doc) == nil {
		if doc.MediaType != "" {
			return doc.MediaType
		}
		if doc.Manifests != nil {
			return types.OCIImageIndex
		}
	}
	return types.OCIManifestSchema1
}

// pickManifest chooses the image manifest for plat from an index, the best
// match first per containerd's platform ordering (strict: no 386 for amd64,
// no 32-bit arm for arm64).
func pickManifest(raw []byte, indexDigest string, plat specs.Platform) (v1.Hash, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("parse index %s: %w", indexDigest, invalidArgument(err))
	}
	match := platforms.OnlyStrict(plat)
	var (
		best    *v1.Descriptor
		bestP   specs.Platform
		offered []string
	)
	for i := range idx.Manifests {
		d := &idx.Manifests[i]
		if d.Platform == nil {
			continue
		}
		p := specs.Platform{OS: d.Platform.OS, Architecture: d.Platform.Architecture, Variant: d.Platform.Variant, OSVersion: d.Platform.OSVersion, OSFeatures: d.Platform.OSFeatures}
		offered = append(offered, platforms.Format(p))
		if !match.Match(p) || !d.MediaType.IsImage() {
			continue
		}
		if best == nil || match.Less(p, bestP) {
			best, bestP = d, p
		}
	}
	if best == nil {
		return v1.Hash{}, fmt.Errorf("index %s has no image manifest for platform %s (it offers %s): pass the right Request.Platform or push that platform: %w",
			indexDigest, platforms.Format(plat), strings.Join(offered, ", "), errdefs.ErrNotFound)
	}
	return best.Digest, nil
}

// checkPlatform refuses a config whose os/architecture (when set) does not
// match plat.
func checkPlatform(cfg *v1.ConfigFile, plat specs.Platform, manifest string) error {
	if cfg.OS == "" || cfg.Architecture == "" {
		return nil
	}
	p := specs.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	if !platforms.OnlyStrict(plat).Match(p) {
		return fmt.Errorf("image %s is for %s, want %s: pull the index or the manifest for %s: %w",
			manifest, platforms.Format(p), platforms.Format(plat), platforms.Format(plat), errdefs.ErrNotFound)
	}
	return nil
}

// checkLayerDigests refuses a manifest whose layers differ from want (when
// want is given).
func checkLayerDigests(m *v1.Manifest, want []string, manifest string) error {
	if len(want) == 0 {
		return nil
	}
	if len(want) != len(m.Layers) {
		return fmt.Errorf("manifest %s has %d layers, want %d (Request.LayerDigests): refusing an image other than the one the host resolved: %w",
			manifest, len(m.Layers), len(want), errdefs.ErrFailedPrecondition)
	}
	for i, d := range m.Layers {
		if d.Digest.String() != want[i] {
			return fmt.Errorf("manifest %s layer %d is %s, want %s (Request.LayerDigests): refusing an image other than the one the host resolved: %w",
				manifest, i, d.Digest, want[i], errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}

// sha256Hex is "sha256:<hex>" of b.
func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
