// Package guestpull is the contract between cc-snapshotter and the shim:
// the rootfs mount that tells the shim "pull this image inside the guest",
// carrying the image reference and the digests containerd resolved, as a
// typed, versioned payload in a mount option. The shim never mounts it.
package guestpull

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containerd/containerd/api/types"
	"github.com/opencontainers/go-digest"
)

const (
	// MountType is the type of a guest-pull rootfs mount: a read-only bind
	// mount of an empty directory. containerd's client reads the rootfs
	// (oci.WithImageConfig looks up /etc/group) and mounts types it cannot
	// read directly on the host, so the mount must be a harmless one that
	// mounts: it shows an empty tree, never a file from the image.
	MountType = "bind"
	// EmptyDirName is the empty directory under the snapshotter root that
	// guest-pull mounts bind.
	EmptyDirName = "empty"
	// OptionPrefix starts the mount option holding the payload: the rest
	// of the option is the base64 (standard, padded) JSON of Payload. The
	// kernel ignores the data of a bind mount, so the option is inert on
	// the host; it is what marks the mount as guest-pull.
	OptionPrefix = "io.coffer.guest-pull.v1="
	// Version is the payload version this package writes and accepts.
	Version = 1
)

// Payload is what the guest must pull for a container's rootfs.
type Payload struct {
	// Version is 1.
	Version int `json:"version"`
	// ImageRef is the image reference containerd pulled, e.g.
	// "registry.example/app:1.2".
	ImageRef string `json:"image_ref"`
	// ManifestDigest is the digest of the platform manifest containerd
	// resolved ("sha256:<64 hex>").
	ManifestDigest string `json:"manifest_digest"`
	// Layers are the compressed layer digests of that manifest, base layer
	// first.
	Layers []string `json:"layers"`
}

// Validate checks the version, that the reference is present, and that
// every digest is a well-formed digest.
func (p *Payload) Validate() error {
	if p.Version != Version {
		return fmt.Errorf("guest-pull payload version %d is not supported: want %d (shim and cc-snapshotter versions differ?)", p.Version, Version)
	}
	if p.ImageRef == "" {
		return fmt.Errorf("guest-pull payload has no image_ref")
	}
	if _, err := digest.Parse(p.ManifestDigest); err != nil {
		return fmt.Errorf("guest-pull payload manifest_digest %q: %w", p.ManifestDigest, err)
	}
	if len(p.Layers) == 0 {
		return fmt.Errorf("guest-pull payload for %s has no layers", p.ImageRef)
	}
	for i, l := range p.Layers {
		if _, err := digest.Parse(l); err != nil {
			return fmt.Errorf("guest-pull payload layer %d %q: %w", i, l, err)
		}
	}
	return nil
}

// Mount returns the guest-pull mount carrying p: a read-only bind of
// emptyDir (an absolute path to an empty directory). It returns Validate's
// error for a bad payload.
func (p Payload) Mount(emptyDir string) (*types.Mount, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return &types.Mount{
		Type:    MountType,
		Source:  emptyDir,
		Options: []string{"ro", "rbind", OptionPrefix + base64.StdEncoding.EncodeToString(b)},
	}, nil
}

// FromMount decodes the payload of a guest-pull mount, recognised by its
// OptionPrefix option whatever its type. ok is false (and err nil) when
// the options hold no payload; err names what is wrong with a payload
// that is malformed or invalid.
func FromMount(options []string) (p *Payload, ok bool, err error) {
	for _, o := range options {
		enc, found := strings.CutPrefix(o, OptionPrefix)
		if !found {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return nil, true, fmt.Errorf("guest-pull mount option: bad base64: %w", err)
		}
		var pl Payload
		if err := json.Unmarshal(b, &pl); err != nil {
			return nil, true, fmt.Errorf("guest-pull mount option: bad JSON: %w", err)
		}
		if err := pl.Validate(); err != nil {
			return nil, true, err
		}
		return &pl, true, nil
	}
	return nil, false, nil
}
