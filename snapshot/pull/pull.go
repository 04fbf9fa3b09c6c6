// Package pull pulls an image through containerd into cc-snapshotter with
// the labels it needs (pkg/snapshotters.AppendInfoHandlerWrapper), so the
// host fetches only the index, manifest and config and never a layer. It is
// what `ccctl image pull` runs, and the recipe for Go programs that use the
// containerd client library.
package pull

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultSnapshotter is the name containerd's [proxy_plugins] entry for
// cc-snapshotter has in configs/snapshotter/containerd.toml.
const DefaultSnapshotter = "cc"

// Options tune Pull. The zero value pulls the host's default platform into
// DefaultSnapshotter over HTTPS with containerd's default registry hosts.
type Options struct {
	// Snapshotter is the name of cc-snapshotter's [proxy_plugins] entry;
	// empty means DefaultSnapshotter.
	Snapshotter string
	// Platform is the image platform, e.g. "linux/amd64"; empty means the
	// host's (platforms.DefaultString()).
	Platform string
	// PlainHTTP talks plain HTTP to the registry.
	PlainHTTP bool
	// HostsDir is a registry hosts.toml directory in containerd's certs.d
	// layout (e.g. "/etc/containerd/certs.d"); empty uses none.
	HostsDir string
}

// Result describes a finished pull.
type Result struct {
	// Ref is the normalized reference pulled
	// ("docker.io/library/busybox:latest" for "busybox").
	Ref string
	// Snapshotter is the snapshotter the image was unpacked into.
	Snapshotter string
	// Platform is the platform pulled, e.g. "linux/amd64".
	Platform string
	// Target is the digest of what Ref names (an index or a manifest).
	Target digest.Digest
	// Manifest is the digest of the platform manifest.
	Manifest digest.Digest
	// Layers are the manifest's layer digests, base first.
	Layers []digest.Digest
	// OnHost are those of Layers whose blobs are in containerd's content
	// store; empty after a guest pull (see Result.String).
	OnHost []digest.Digest
}

// RemoteOpts returns the containerd client options that make
// containerd.Client.Pull unpack ref into snapshotter with the image labels
// cc-snapshotter needs: WithPullUnpack, WithPullSnapshotter(snapshotter)
// and WithImageHandlerWrapper(snapshotters.AppendInfoHandlerWrapper(ref)).
// ref must be the normalized reference passed to Pull. Add a resolver and a
// platform as needed.
func RemoteOpts(ref, snapshotter string) []containerd.RemoteOpt {
	return []containerd.RemoteOpt{
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(snapshotter),
		containerd.WithImageHandlerWrapper(snapshotters.AppendInfoHandlerWrapper(ref)),
	}
}

// Pull normalizes ref (docker rules), pulls it through client (whose
// context namespace applies) with RemoteOpts, and reports which layer
// blobs are in the content store afterwards. It returns the parse errors
// of ref and o.Platform, and containerd's pull error, which names the
// missing label or parent when cc-snapshotter refused a layer.
func Pull(ctx context.Context, client *containerd.Client, ref string, o Options) (*Result, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return nil, fmt.Errorf("pull: parse image reference %q: %w", ref, err)
	}
	ref = named.String()
	if o.Snapshotter == "" {
		o.Snapshotter = DefaultSnapshotter
	}
	if o.Platform == "" {
		o.Platform = platforms.DefaultString()
	}
	platform, err := platforms.Parse(o.Platform)
	if err != nil {
		return nil, fmt.Errorf("pull %s: platform %q: %w", ref, o.Platform, err)
	}
	hosts := config.HostOptions{}
	if o.HostsDir != "" {
		hosts.HostDir = config.HostDirFromRoot(o.HostsDir)
	}
	if o.PlainHTTP {
		hosts.DefaultScheme = "http"
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: config.ConfigureHosts(ctx, hosts)})
	opts := append([]containerd.RemoteOpt{
		containerd.WithResolver(resolver),
		containerd.WithPlatform(platforms.Format(platform)),
	}, RemoteOpts(ref, o.Snapshotter)...)
	img, err := client.Pull(ctx, ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("pull %s into snapshotter %s: %w", ref, o.Snapshotter, err)
	}

	cs := client.ContentStore()
	match := platforms.Only(platform)
	res := &Result{Ref: ref, Snapshotter: o.Snapshotter, Platform: platforms.Format(platform), Target: img.Target().Digest}
	if res.Manifest, err = PlatformManifest(ctx, cs, img.Target(), match); err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	manifest, err := images.Manifest(ctx, cs, img.Target(), match)
	if err != nil {
		return nil, fmt.Errorf("pull %s: read %s manifest: %w", ref, res.Platform, err)
	}
	for _, l := range manifest.Layers {
		res.Layers = append(res.Layers, l.Digest)
		if _, err := cs.Info(ctx, l.Digest); err == nil {
			res.OnHost = append(res.OnHost, l.Digest)
		} else if !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("pull %s: look up layer %s in the content store: %w", ref, l.Digest, err)
		}
	}
	return res, nil
}

// PlatformManifest returns the digest of the manifest that target (an
// index or a manifest) resolves to for the platforms m matches, taking the
// best match first as containerd's images.Manifest does. It returns an
// error wrapping errdefs.ErrNotFound when no manifest matches.
func PlatformManifest(ctx context.Context, cs content.Provider, target ocispec.Descriptor, m platforms.MatchComparer) (digest.Digest, error) {
	if images.IsManifestType(target.MediaType) {
		return target.Digest, nil
	}
	if !images.IsIndexType(target.MediaType) {
		return "", fmt.Errorf("find platform manifest: %s has media type %s, want an index or a manifest", target.Digest, target.MediaType)
	}
	b, err := content.ReadBlob(ctx, cs, target)
	if err != nil {
		return "", fmt.Errorf("find platform manifest: read index %s: %w", target.Digest, err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return "", fmt.Errorf("find platform manifest: parse index %s: %w", target.Digest, err)
	}
	var candidates []ocispec.Descriptor
	for _, d := range idx.Manifests {
		if d.Platform == nil || m.Match(*d.Platform) {
			candidates = append(candidates, d)
		}
	}
	sort.SliceStable(candidates, func(i, j int) bool {
		pi, pj := candidates[i].Platform, candidates[j].Platform
		if pi == nil || pj == nil {
			return pi != nil && pj == nil
		}
		return m.Less(*pi, *pj)
	})
	for _, d := range candidates {
		if dg, err := PlatformManifest(ctx, cs, d, m); err == nil {
			return dg, nil
		}
	}
	return "", fmt.Errorf("find platform manifest: index %s has no manifest for the requested platform: %w", target.Digest, errdefs.ErrNotFound)
}

// String summarizes r in a few human-readable lines.
func (r *Result) String() string {
	s := fmt.Sprintf("pulled %s (%s) for %s into snapshotter %s\n  manifest  %s\n", r.Ref, r.Target, r.Platform, r.Snapshotter, r.Manifest)
	if len(r.OnHost) == 0 {
		return s + fmt.Sprintf("  layers    %d, none fetched or unpacked on the host: the guest pulls them by digest\n", len(r.Layers))
	}
	s += fmt.Sprintf("  layers    %d, of which %d are in containerd's content store on the host:\n", len(r.Layers), len(r.OnHost))
	for _, d := range r.OnHost {
		s += fmt.Sprintf("            %s\n", d)
	}
	return s + "  (left by an earlier pull with another snapshotter, or the snapshotter is not cc-snapshotter;\n" +
		"   `ctr image rm` the image and pull it again to drop them)\n"
}
