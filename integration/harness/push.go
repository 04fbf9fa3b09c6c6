package harness

import (
	"context"
	"testing"
	"time"

	ggcrname "github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// pushTimeout bounds one Push or DeleteManifest against the local registry.
const pushTimeout = time.Minute

// Push uploads img to reg as repository name (e.g. "busybox" or
// "busybox:1"; the tag defaults to "latest") with go-containerregistry's
// remote.Write over plain HTTP, and returns the full reference
// ("127.0.0.1:<port>/busybox:latest") and the manifest digest
// ("sha256:<64 hex>"). The test fails (t.Fatal) on any error.
func Push(t testing.TB, reg *Registry, name string, img v1.Image) (ref string, digest string) {
	t.Helper()
	tag, err := ggcrname.NewTag(reg.Addr()+"/"+name, ggcrname.Insecure)
	if err != nil {
		t.Fatalf("parse image reference %q: %v", reg.Addr()+"/"+name, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("compute digest of image for %s: %v", tag, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("push %s: %v", tag, err)
	}
	return tag.Name(), d.String()
}

// DeleteManifest deletes the manifest ref@digest from the registry
// (DELETE /v2/<repo>/manifests/<digest>); distribution also drops the tags
// that pointed at it, so later pulls of ref by tag or by digest fail with
// MANIFEST_UNKNOWN while the blobs stay. ref is a reference as returned by
// Push. The test fails (t.Fatal) on any error.
func DeleteManifest(t testing.TB, ref, digest string) {
	t.Helper()
	r, err := ggcrname.ParseReference(ref, ggcrname.Insecure)
	if err != nil {
		t.Fatalf("parse image reference %q: %v", ref, err)
	}
	d, err := ggcrname.NewDigest(r.Context().Name()+"@"+digest, ggcrname.Insecure)
	if err != nil {
		t.Fatalf("build digest reference for %s@%s: %v", r.Context().Name(), digest, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	if err := remote.Delete(d, remote.WithContext(ctx)); err != nil {
		t.Fatalf("delete manifest %s: %v", d, err)
	}
}
