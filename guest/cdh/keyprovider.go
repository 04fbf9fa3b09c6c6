package cdh

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cofferhq/coffer/kbs/client"
)

// wrongKeyError marks a key that does not open a wrapped layer key.
type wrongKeyError struct{ error }

// Unwrap returns the cause.
func (w wrongKeyError) Unwrap() error { return w.error }

// KeyErrorKind says why a layer key could not be unwrapped.
type KeyErrorKind string

// Kinds of KeyError.
const (
	// KeyNotReleased: the KBS refused the key (HTTP 401/403, its resource
	// policy, or this guest's attestation).
	KeyNotReleased KeyErrorKind = "not released"
	// KeyNotFound: the KBS has no resource at kid (HTTP 404).
	KeyNotFound KeyErrorKind = "not found"
	// KeyWrong: the key was released but does not open wrapped_data
	// (AES-256-GCM authentication failed, or it is not 32 bytes).
	KeyWrong KeyErrorKind = "wrong"
	// KeyUnavailable: fetching the key failed for another reason (KBS
	// unreachable, attestation failed); Err says which.
	KeyUnavailable KeyErrorKind = "unavailable"
)

// KeyError reports a layer key that could not be unwrapped. It matches,
// with errors.Is, errdefs.ErrPermissionDenied (KeyNotReleased),
// errdefs.ErrNotFound (KeyNotFound), errdefs.ErrFailedPrecondition
// (KeyWrong), and whatever Err matches.
type KeyError struct {
	// Layer is the encrypted layer's digest, "sha256:<hex>", or "" when
	// unknown (calls through ocicrypt's KeyWrapper interface).
	Layer string
	// Kid is the key's resource URI, "kbs:///repo/type/tag".
	Kid string
	// Kind says what went wrong.
	Kind KeyErrorKind
	// Err is the cause: the ResourceGetter's error, or the GCM failure.
	Err error
}

// Error implements error, naming the layer, the kid and the fix.
func (e *KeyError) Error() string {
	layer := "layer " + e.Layer
	if e.Layer == "" {
		layer = "a layer" // ocicrypt's KeyWrapper interface does not name it
	}
	switch e.Kind {
	case KeyWrong:
		return fmt.Sprintf("wrong key for %s (kid %s): %v: the KBS resource %s is not the key this layer was encrypted with; register the right key there or re-encrypt the image", layer, e.Kid, e.Err, e.Kid)
	case KeyNotReleased:
		return fmt.Sprintf("key %s for %s was not released by the KBS: %v: check the KBS resource policy and this guest's attestation (reference values)", e.Kid, layer, e.Err)
	case KeyNotFound:
		return fmt.Sprintf("key %s for %s was not found in the KBS: %v: register it (ccctl image encrypt --kbs …, or ccctl kbs resource set)", e.Kid, layer, e.Err)
	default:
		return fmt.Sprintf("fetch key %s for %s: %v", e.Kid, layer, e.Err)
	}
}

// Unwrap returns the errdefs class of Kind (if any) and Err.
func (e *KeyError) Unwrap() []error {
	switch e.Kind {
	case KeyWrong:
		return []error{errdefs.ErrFailedPrecondition, e.Err}
	case KeyNotReleased:
		return []error{errdefs.ErrPermissionDenied, e.Err}
	case KeyNotFound:
		return []error{errdefs.ErrNotFound, e.Err}
	default:
		return []error{e.Err}
	}
}

// KeyProvider is the in-process ocicrypt key provider "attestation-agent":
// it unwraps the layer keys of images encrypted with CoCo's tooling (or
// `ccctl image encrypt`) by fetching each key-encryption key from the KBS
// through a ResourceGetter. It keeps no key material between calls and is
// safe for concurrent use if its ResourceGetter is.
type KeyProvider struct {
	getter ResourceGetter
}

// NewKeyProvider returns a KeyProvider fetching keys through g (the
// attestation agent, guest/aa).
func NewKeyProvider(g ResourceGetter) *KeyProvider {
	return &KeyProvider{getter: g}
}

// UnwrapLayerKey returns the ocicrypt PrivateLayerBlockCipherOptions JSON
// (ocicrypt's "optsData": symmetric key, nonce, plaintext digest) of the
// encrypted layer desc, from its AnnotationKeyProvider annotation. With
// several packets (recipients) in the annotation, the first one that opens
// wins. Errors: a *KeyError per KeyErrorKind; errdefs.ErrInvalidArgument
// for a missing or malformed annotation; errdefs.ErrNotImplemented for
// packets of other providers.
func (p *KeyProvider) UnwrapLayerKey(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	opts, err := p.UnwrapLayerKeys(ctx, []ocispec.Descriptor{desc})
	if err != nil {
		return nil, err
	}
	return opts[0], nil
}

// UnwrapLayerKeys is UnwrapLayerKey for every layer of an image, in order,
// fetching each distinct kid once. It fails on the first layer that cannot
// be unwrapped, so a caller can refuse an image before fetching any layer.
func (p *KeyProvider) UnwrapLayerKeys(ctx context.Context, descs []ocispec.Descriptor) ([][]byte, error) {
	u := unwrapper{ctx: ctx, get: p.getter, keks: map[string][]byte{}}
	defer u.forget()
	out := make([][]byte, 0, len(descs))
	for _, d := range descs {
		layer := d.Digest.String()
		value, ok := d.Annotations[AnnotationKeyProvider]
		if !ok || value == "" {
			return nil, fmt.Errorf("unwrap key of layer %s: %w", layer, missingAnnotation(d.Annotations))
		}
		packets, err := parsePackets(value)
		if err != nil {
			return nil, fmt.Errorf("unwrap key of layer %s: %w", layer, err)
		}
		opts, err := u.unwrap(layer, packets)
		if err != nil {
			return nil, err
		}
		out = append(out, opts)
	}
	return out, nil
}

// missingAnnotation explains a layer without our annotation, naming the
// key wrappers it is encrypted for instead.
func missingAnnotation(annotations map[string]string) error {
	var others []string
	for k := range annotations {
		if s, ok := strings.CutPrefix(k, "org.opencontainers.image.enc.keys."); ok && k != AnnotationKeyProvider {
			others = append(others, s)
		}
	}
	sort.Strings(others)
	if len(others) == 0 {
		return fmt.Errorf("no %s annotation: the layer is not encrypted with ocicrypt key wrapping, or its annotations were stripped: %w", AnnotationKeyProvider, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("no %s annotation: the layer is encrypted for key wrappers %s only, not for the KBS: re-encrypt it with provider %s (ccctl image encrypt): %w",
		AnnotationKeyProvider, strings.Join(others, ", "), ProviderName, errdefs.ErrInvalidArgument)
}

// unwrapper unwraps packets with KEKs fetched once per kid.
type unwrapper struct {
	ctx  context.Context
	get  ResourceGetter
	keks map[string][]byte // kid → KEK
}

// unwrap opens the first packet whose KEK can be fetched and opens it.
func (u *unwrapper) unwrap(layer string, packets []AnnotationPacket) ([]byte, error) {
	var errs []error
	for _, pk := range packets {
		kek, err := u.kek(layer, pk.Kid)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		opts, err := pk.open(kek)
		var wrong wrongKeyError
		if errors.As(err, &wrong) {
			errs = append(errs, &KeyError{Layer: layer, Kid: pk.Kid, Kind: KeyWrong, Err: err})
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("unwrap key of layer %s (kid %s): %w", layer, pk.Kid, err))
			continue
		}
		log.G(u.ctx).WithField("layer", layer).WithField("kid", pk.Kid).Debug("layer key unwrapped")
		return opts, nil
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, errors.Join(errs...)
}

// kek fetches (once) the key named kid.
func (u *unwrapper) kek(layer, kid string) ([]byte, error) {
	if k, ok := u.keks[kid]; ok {
		return k, nil
	}
	k, err := u.get.Resource(u.ctx, kid)
	if err != nil {
		return nil, &KeyError{Layer: layer, Kid: kid, Kind: fetchErrorKind(err), Err: err}
	}
	u.keks[kid] = k
	return k, nil
}

// forget zeroes the fetched keys.
func (u *unwrapper) forget() {
	for _, k := range u.keks {
		clear(k)
	}
}

// fetchErrorKind classes a ResourceGetter error by errdefs class or, for
// the KBS protocol client's *client.ResponseError, by HTTP status.
func fetchErrorKind(err error) KeyErrorKind {
	var re *client.ResponseError
	if errors.As(err, &re) {
		switch re.Status {
		case http.StatusNotFound:
			return KeyNotFound
		case http.StatusUnauthorized, http.StatusForbidden:
			return KeyNotReleased
		}
	}
	switch {
	case errdefs.IsNotFound(err):
		return KeyNotFound
	case errdefs.IsPermissionDenied(err), errdefs.IsUnauthorized(err):
		return KeyNotReleased
	}
	return KeyUnavailable
}
