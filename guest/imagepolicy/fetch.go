package imagepolicy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Fetcher reads signature manifests and blobs from a registry. Verify
// checks every digest and size itself: a Fetcher need not be trusted.
type Fetcher interface {
	// Manifest returns the raw manifest that repo:tag names. repo is
	// "host[:port]/path" (Docker Hub as "docker.io/…" or
	// "index.docker.io/…"). When the tag does not exist the error matches
	// errdefs.ErrNotFound.
	Manifest(ctx context.Context, repo, tag string) ([]byte, error)
	// Blob returns the blob of repo with digest ("sha256:<hex>"), reading
	// at most maxBytes+1 bytes (so an oversized blob is detected).
	Blob(ctx context.Context, repo, digest string, maxBytes int64) ([]byte, error)
}

// RegistryFetcher is a Fetcher over go-containerregistry. In the guest,
// pass the remote options guest/image builds for the pull (its transport
// applies RegistryConfig: Insecure hosts, Endpoints, CAPEM), so signatures
// are fetched exactly like the image.
type RegistryFetcher struct {
	// NameOptions parse repository names, e.g. name.Insecure for a
	// plain-HTTP registry when the transport does not choose the scheme.
	NameOptions []name.Option
	// RemoteOptions are passed to every remote call (transport, auth);
	// remote.WithContext is added per call.
	RemoteOptions []remote.Option
}

// Manifest implements Fetcher.
func (f RegistryFetcher) Manifest(ctx context.Context, repo, tag string) ([]byte, error) {
	ref, err := name.NewTag(repo+":"+tag, f.NameOptions...)
	if err != nil {
		return nil, fmt.Errorf("parse %s:%s: %w", repo, tag, invalid(err))
	}
	desc, err := remote.Get(ref, f.options(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("fetch manifest %s: %w", ref, classify(err))
	}
	return desc.Manifest, nil
}

// Blob implements Fetcher.
func (f RegistryFetcher) Blob(ctx context.Context, repo, digest string, maxBytes int64) ([]byte, error) {
	ref, err := name.NewDigest(repo+"@"+digest, f.NameOptions...)
	if err != nil {
		return nil, fmt.Errorf("parse %s@%s: %w", repo, digest, invalid(err))
	}
	l, err := remote.Layer(ref, f.options(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("fetch blob %s: %w", ref, classify(err))
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, fmt.Errorf("fetch blob %s: %w", ref, classify(err))
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", ref, classify(err))
	}
	return b, nil
}

func (f RegistryFetcher) options(ctx context.Context) []remote.Option {
	return append(append([]remote.Option(nil), f.RemoteOptions...), remote.WithContext(ctx))
}

// classify adds errdefs.ErrNotFound to a registry 404 so callers can tell
// a missing signature from a failing registry.
func classify(err error) error {
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	}
	return err
}
