// Package snapshot is cc-snapshotter: a containerd snapshotter
// (core/snapshots.Snapshotter) that keeps every image layer off the host.
//
// Layers: when containerd's unpacker prepares the snapshot of a layer
// (label containerd.io/snapshot.ref = target chain ID), the snapshotter
// records the layer digest, image reference and manifest digest from the
// labels of pkg/snapshotters, commits a metadata-only snapshot under the
// target name and answers errdefs.ErrAlreadyExists, so containerd neither
// fetches nor unpacks the layer (core/unpack/unpacker.go).
//
// Root filesystems: a container's snapshot on top of such a chain gets one
// guest-pull mount (package guestpull) carrying the image reference, the
// manifest digest and the ordered layer digests. The shim hands these to
// the guest, which pulls and verifies them; nothing is ever mounted on the
// host.
//
// Metadata lives in containerd's bbolt MetaStore (core/snapshots/storage)
// in <root>/metadata.db; there are no per-snapshot files or directories.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	bolt "go.etcd.io/bbolt"

	"github.com/cofferhq/coffer/snapshot/guestpull"
)

const (
	// MetadataFile is the name of the bbolt metadata database under the
	// snapshotter root; it is the only file cc-snapshotter creates there.
	MetadataFile = "metadata.db"
	// metadataLockTimeout bounds how long opening the metadata waits for
	// another process's lock on it.
	metadataLockTimeout = 2 * time.Second
)

// Snapshotter is the guest-pull snapshotter. It is safe for concurrent use:
// every method runs in one bbolt transaction.
type Snapshotter struct {
	root string
	ms   *storage.MetaStore
}

var (
	_ snapshots.Snapshotter = (*Snapshotter)(nil)
	_ snapshots.Cleaner     = (*Snapshotter)(nil)
)

// NewSnapshotter opens (creating when needed) the snapshotter whose
// metadata lives in <root>/metadata.db; root is created with mode 0700.
// It fails when root cannot be created or the metadata cannot be opened,
// e.g. because another cc-snapshotter holds its lock for more than 2 s.
func NewSnapshotter(root string) (*Snapshotter, error) {
	if root == "" {
		return nil, fmt.Errorf("open cc-snapshotter: empty root directory: %w", errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("create cc-snapshotter root: %w", err)
	}
	empty := filepath.Join(root, guestpull.EmptyDirName)
	if err := os.Mkdir(empty, 0o555); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create cc-snapshotter empty rootfs directory: %w", err)
	}
	dbPath := filepath.Join(root, MetadataFile)
	ms, err := storage.NewMetaStore(dbPath, func(o *bolt.Options) error {
		o.Timeout = metadataLockTimeout
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open cc-snapshotter metadata %s: %w", dbPath, err)
	}
	// Open the database now rather than on the first request, so a bad
	// root or a second instance on the same root fails at start.
	if err := ms.WithTransaction(context.Background(), false, func(context.Context) error { return nil }); err != nil {
		return nil, fmt.Errorf("open cc-snapshotter metadata %s (is another cc-snapshotter using root %s?): %w", dbPath, root, err)
	}
	return &Snapshotter{root: root, ms: ms}, nil
}

// Root returns the directory holding MetadataFile.
func (s *Snapshotter) Root() string { return s.root }

// emptyDir is the empty, read-only directory guest-pull mounts bind, so
// that a host that mounts a container's rootfs (containerd's client does,
// to read /etc/group) sees nothing from the image.
func (s *Snapshotter) emptyDir() string { return filepath.Join(s.root, guestpull.EmptyDirName) }

// Stat returns the info of the snapshot key (active, view or committed).
// It returns an error wrapping errdefs.ErrNotFound when there is none.
func (s *Snapshotter) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	var info snapshots.Info
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		var err error
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return snapshots.Info{}, fmt.Errorf("stat snapshot %q: %w", key, err)
	}
	return info, nil
}

// Update changes the labels of snapshot info.Name, as storage.UpdateInfo
// does: fieldpaths "labels" or "labels.<key>", or all labels when none is
// given. The labels LabelLayerDigest, LabelImageRef and LabelManifestDigest
// are kept when all labels are replaced; changing or removing one of them
// explicitly fails with errdefs.ErrInvalidArgument. A missing snapshot
// gives errdefs.ErrNotFound.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	var updated snapshots.Info
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, cur, _, err := storage.GetInfo(ctx, info.Name)
		if err != nil {
			return err
		}
		req, err := keepOwnLabels(cur, info, fieldpaths)
		if err != nil {
			return err
		}
		updated, err = storage.UpdateInfo(ctx, req, fieldpaths...)
		return err
	})
	if err != nil {
		return snapshots.Info{}, fmt.Errorf("update snapshot %q: %w", info.Name, err)
	}
	return updated, nil
}

// keepOwnLabels returns req with cc-snapshotter's labels of cur kept, or an
// error if req would change one of them.
func keepOwnLabels(cur, req snapshots.Info, fieldpaths []string) (snapshots.Info, error) {
	whole := len(fieldpaths) == 0 || slices.Contains(fieldpaths, "labels")
	labels := make(map[string]string, len(req.Labels)+len(ownLabels))
	for k, v := range req.Labels {
		labels[k] = v
	}
	for _, k := range ownLabels {
		if !whole && !slices.Contains(fieldpaths, "labels."+k) {
			continue
		}
		want, given := req.Labels[k]
		have, had := cur.Labels[k]
		if whole && !given {
			if had {
				labels[k] = have
			}
			continue
		}
		if want != have || given != had {
			return snapshots.Info{}, fmt.Errorf("label %q is recorded by cc-snapshotter (%q) and cannot be changed to %q: %w", k, have, want, errdefs.ErrInvalidArgument)
		}
	}
	req.Labels = labels
	return req, nil
}

// Usage returns zero bytes and zero inodes for any existing snapshot: no
// snapshot has host storage beyond its metadata record. A missing snapshot
// gives errdefs.ErrNotFound.
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		_, _, _, err := storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return snapshots.Usage{}, fmt.Errorf("usage of snapshot %q: %w", key, err)
	}
	return snapshots.Usage{}, nil
}

// Mounts returns the guest-pull mount of the active or view snapshot key,
// the same one Prepare or View returned. A committed snapshot gives
// errdefs.ErrFailedPrecondition, a missing one errdefs.ErrNotFound.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	var mounts []mount.Mount
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		if _, err := storage.GetSnapshot(ctx, key); err != nil {
			return err
		}
		_, info, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		mounts, err = rootfsMounts(ctx, info.Parent, s.emptyDir())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mounts of snapshot %q: %w", key, err)
	}
	return mounts, nil
}

// Prepare handles two kinds of request.
//
// With the label containerd.io/snapshot.ref (containerd's unpacker
// extracting a layer; the label holds the target chain ID), it records the
// layer and returns an error wrapping errdefs.ErrAlreadyExists, so
// containerd neither fetches nor unpacks it: it requires the labels
// snapshotters.TargetRefLabel, TargetLayerDigestLabel and
// TargetManifestDigestLabel (errdefs.ErrInvalidArgument naming the missing
// or malformed one otherwise, with nothing created) and a parent, if any,
// that is a guest-pull layer committed by this snapshotter. It then commits
// a metadata-only snapshot named after the target, with the given labels
// plus LabelLayerDigest, LabelImageRef and LabelManifestDigest. A target
// that already exists also gives errdefs.ErrAlreadyExists.
//
// Without it (a container's root filesystem), parent must be the top of a
// guest-pull layer chain; Prepare creates the active snapshot key and
// returns exactly one guestpull mount (guestpull.Payload.Mount) carrying
// the top layer's image reference and manifest digest and the layer
// digests of the chain, base layer first. A parent that is missing or not
// a guest-pull layer gives errdefs.ErrNotFound or ErrFailedPrecondition,
// naming it.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindActive, key, parent, opts)
}

// View is Prepare for a read-only snapshot: a layer request (label
// containerd.io/snapshot.ref) is handled exactly as in Prepare; otherwise
// it creates the view snapshot key and returns its guest-pull mount.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindView, key, parent, opts)
}

// create implements Prepare and View.
func (s *Snapshotter) create(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) ([]mount.Mount, error) {
	var base snapshots.Info
	for _, opt := range opts {
		if err := opt(&base); err != nil {
			return nil, err
		}
	}
	if target, ok := base.Labels[snapshots.LabelSnapshotRef]; ok {
		return nil, s.recordLayer(ctx, key, parent, target, base.Labels)
	}
	if isUnpackKey(key) {
		return nil, fmt.Errorf("prepare snapshot %q: missing labels %q and %q: containerd is extracting a layer on the host through a path that passes no image labels (a client-side unpack: `ctr image pull --local`, or `ctr run`/`ctr container create` of an image pulled with another snapshotter); cc-snapshotter never unpacks a layer on the host; %s: %w",
			key, snapshots.LabelSnapshotRef, snapshotters.TargetRefLabel, fixLabels, errdefs.ErrInvalidArgument)
	}
	if parent == "" {
		return nil, fmt.Errorf("prepare snapshot %q: no parent image: cc-snapshotter only provides the root filesystem of an image pulled with it (`ctr image pull --snapshotter cc REF` / `ccctl image pull REF`): %w", key, errdefs.ErrInvalidArgument)
	}
	var mounts []mount.Mount
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		// Check the chain before creating anything.
		m, err := rootfsMounts(ctx, parent, s.emptyDir())
		if err != nil {
			return err
		}
		if _, err := storage.CreateSnapshot(ctx, kind, key, parent, opts...); err != nil {
			return err
		}
		mounts = m
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prepare %s snapshot %q: %w", strings.ToLower(kind.String()), key, err)
	}
	log.G(ctx).WithField("key", key).WithField("parent", parent).Debug("guest-pull rootfs snapshot created")
	return mounts, nil
}

// isUnpackKey tells whether key is a layer extraction key,
// snapshots.UnpackKeyFormat ("extract-<unique> <chain ID>"), possibly
// behind the "<namespace>/<id>/" prefix containerd's metadata store adds.
func isUnpackKey(key string) bool {
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		key = key[i+1:]
	}
	return strings.HasPrefix(key, snapshots.UnpackKeyPrefix+"-")
}

// recordLayer implements the layer case of Prepare and View.
func (s *Snapshotter) recordLayer(ctx context.Context, key, parent, target string, labels map[string]string) error {
	if target == "" {
		return fmt.Errorf("prepare layer snapshot %q: label %q is empty, want the layer's chain ID: %w", key, snapshots.LabelSnapshotRef, errdefs.ErrInvalidArgument)
	}
	l, err := layerFromUnpackLabels(target, labels)
	if err != nil {
		return err
	}
	existed := false
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, info, _, err := storage.GetInfo(ctx, target)
		if err == nil {
			existed = true
			warnIfRecordedDiffers(ctx, target, info, l)
			return nil
		}
		if !errdefs.IsNotFound(err) {
			return err
		}
		if parent != "" {
			if err := checkLayerParent(ctx, target, parent); err != nil {
				return err
			}
		}
		if _, err := storage.CreateSnapshot(ctx, snapshots.KindActive, key, parent, snapshots.WithLabels(labels)); err != nil {
			return err
		}
		_, err = storage.CommitActive(ctx, key, target, snapshots.Usage{}, snapshots.WithLabels(labels), snapshots.WithLabels(l.labels()))
		return err
	})
	if err != nil {
		return fmt.Errorf("record layer %s of %s as snapshot %s: %w", l.layerDigest, l.imageRef, target, err)
	}
	if existed {
		return fmt.Errorf("layer snapshot %s already recorded: %w", target, errdefs.ErrAlreadyExists)
	}
	log.G(ctx).WithFields(log.Fields{
		"snapshot": target,
		"parent":   parent,
		"layer":    l.layerDigest,
		"image":    l.imageRef,
		"manifest": l.manifestDigest,
	}).Info("recorded guest-pull layer; containerd will neither fetch nor unpack it")
	return fmt.Errorf("layer %s recorded as guest-pull snapshot %s, nothing to fetch or unpack on the host: %w", l.layerDigest, target, errdefs.ErrAlreadyExists)
}

// warnIfRecordedDiffers logs when an existing layer snapshot records a
// different compressed digest than the one being pulled: both have the
// same uncompressed content (same chain ID), but the guest will be told
// to pull the recorded digest.
func warnIfRecordedDiffers(ctx context.Context, target string, info snapshots.Info, l layerInfo) {
	rec, ok, err := layerFromOwnLabels(target, info.Labels)
	if err != nil || !ok || rec.layerDigest == l.layerDigest {
		return
	}
	log.G(ctx).WithFields(log.Fields{
		"snapshot":       target,
		"recorded_layer": rec.layerDigest,
		"recorded_image": rec.imageRef,
		"pulled_layer":   l.layerDigest,
		"pulled_image":   l.imageRef,
	}).Warn("layer snapshot already recorded with another compressed digest (same content, different compression); containers will pull the recorded digest from the recorded image")
}

// kindName returns "an active", "a view", "a committed" or "an unknown".
func kindName(k snapshots.Kind) string {
	switch k {
	case snapshots.KindActive:
		return "an active"
	case snapshots.KindView:
		return "a view"
	case snapshots.KindCommitted:
		return "a committed"
	}
	return "an unknown"
}

// checkLayerParent checks that parent is a committed guest-pull layer.
func checkLayerParent(ctx context.Context, target, parent string) error {
	_, info, _, err := storage.GetInfo(ctx, parent)
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("parent %q of layer snapshot %s does not exist in cc-snapshotter: %w", parent, target, errdefs.ErrNotFound)
	}
	if err != nil {
		return err
	}
	if info.Kind != snapshots.KindCommitted {
		return fmt.Errorf("parent %q of layer snapshot %s is %s snapshot, want a committed guest-pull layer: %w", parent, target, kindName(info.Kind), errdefs.ErrFailedPrecondition)
	}
	if _, ok, err := layerFromOwnLabels(parent, info.Labels); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("parent %q of layer snapshot %s is not a guest-pull layer (no label %q): %w", parent, target, LabelLayerDigest, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// rootfsMounts returns the guest-pull mount for a root filesystem on top of
// the layer chain ending at top. It needs a context with a transaction.
func rootfsMounts(ctx context.Context, top, emptyDir string) ([]mount.Mount, error) {
	p, err := payloadFor(ctx, top)
	if err != nil {
		return nil, err
	}
	m, err := p.Mount(emptyDir)
	if err != nil {
		return nil, fmt.Errorf("build guest-pull mount for image %s: %w", p.ImageRef, err)
	}
	return []mount.Mount{{Type: m.Type, Source: m.Source, Options: m.Options}}, nil
}

// notPulledHint ends errors about a parent that is not a guest-pull chain.
const notPulledHint = "the image was not pulled with the cc snapshotter; pull it with `ctr image pull --snapshotter cc REF` / `ccctl image pull REF` (an image first pulled with another snapshotter must be pulled again with cc)"

// payloadFor walks the layer chain ending at top and returns the guest-pull
// payload: image reference and manifest digest from top, layer digests base
// first. It needs a context with a transaction.
func payloadFor(ctx context.Context, top string) (guestpull.Payload, error) {
	p := guestpull.Payload{Version: guestpull.Version}
	var layers []string
	for name := top; name != ""; {
		what := fmt.Sprintf("parent %q", name)
		if name != top {
			what = fmt.Sprintf("snapshot %q below parent %q", name, top)
		}
		_, info, _, err := storage.GetInfo(ctx, name)
		if errdefs.IsNotFound(err) {
			return p, fmt.Errorf("%s does not exist in cc-snapshotter: %s: %w", what, notPulledHint, errdefs.ErrNotFound)
		}
		if err != nil {
			return p, err
		}
		if info.Kind != snapshots.KindCommitted {
			return p, fmt.Errorf("%s is %s snapshot, want a committed image layer: %w", what, kindName(info.Kind), errdefs.ErrFailedPrecondition)
		}
		l, ok, err := layerFromOwnLabels(name, info.Labels)
		if err != nil {
			return p, err
		}
		if !ok {
			return p, fmt.Errorf("%s is not a guest-pull layer (no label %q): %s: %w", what, LabelLayerDigest, notPulledHint, errdefs.ErrFailedPrecondition)
		}
		if name == top {
			if l.imageRef == "" || l.manifestDigest == "" {
				return p, fmt.Errorf("%s lacks label %q or %q: remove the image and pull it again: %w", what, LabelImageRef, LabelManifestDigest, errdefs.ErrDataLoss)
			}
			p.ImageRef = l.imageRef
			p.ManifestDigest = l.manifestDigest.String()
		}
		layers = append(layers, l.layerDigest.String())
		name = info.Parent
	}
	slices.Reverse(layers)
	p.Layers = layers
	return p, nil
}

// Commit refuses: the only active snapshots are guest-pull root
// filesystems whose files exist only inside the guest, so there is nothing
// on the host to commit. It returns errdefs.ErrNotImplemented for an active
// snapshot, ErrFailedPrecondition for a view or committed one and
// ErrNotFound for a missing key. (Layers never go through Commit: Prepare
// commits them itself.)
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	var info snapshots.Info
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		var err error
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("commit snapshot %q as %q: %w", key, name, err)
	}
	if info.Kind != snapshots.KindActive {
		return fmt.Errorf("commit snapshot %q as %q: it is %s snapshot, only active snapshots can be committed: %w", key, name, kindName(info.Kind), errdefs.ErrFailedPrecondition)
	}
	return fmt.Errorf("commit snapshot %q as %q: it is a guest-pull root filesystem whose files exist only inside the confidential guest, so the host has nothing to commit (snapshot commit, image commit and checkpoint are not supported with cc-snapshotter): %w", key, name, errdefs.ErrNotImplemented)
}

// Remove deletes the metadata record of snapshot key; nothing else exists
// on the host. It returns errdefs.ErrNotFound for a missing key and
// errdefs.ErrFailedPrecondition for a snapshot that still has children.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, _, err := storage.Remove(ctx, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove snapshot %q: %w", key, err)
	}
	return nil
}

// Walk calls fn for every snapshot matching all filters (containerd filter
// syntax over name, parent, kind and labels), in one read transaction. It
// returns fn's first error, or an error for a bad filter.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	fnFailed := false
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
			err := fn(ctx, info)
			fnFailed = fnFailed || err != nil
			return err
		}, filters...)
	})
	// storage.WalkInfo reports a database in which no snapshot was ever
	// created as ErrNotFound ("bucket does not exist"): that is an empty
	// walk.
	if err != nil && !fnFailed && errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

// Cleanup reclaims nothing: snapshots have no host storage besides their
// metadata records, which Remove deletes. It checks that the root holds
// only MetadataFile and logs a warning naming anything else (which
// cc-snapshotter did not write); it returns an error only when the root
// cannot be read.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	stray, err := s.StrayEntries()
	if err != nil {
		return err
	}
	for _, e := range stray {
		log.G(ctx).WithField("path", filepath.Join(s.root, e)).Warn("cc-snapshotter root holds a file it did not write; it keeps no layer or snapshot files, check what created this")
	}
	return nil
}

// StrayEntries returns the names of entries in the root other than
// MetadataFile, sorted; nil when there are none.
func (s *Snapshotter) StrayEntries() ([]string, error) {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("read cc-snapshotter root: %w", err)
	}
	var stray []string
	for _, e := range entries {
		switch e.Name() {
		case MetadataFile:
		case guestpull.EmptyDirName:
			inside, err := os.ReadDir(s.emptyDir())
			if err != nil || len(inside) > 0 {
				stray = append(stray, e.Name()+" (must be an empty directory)")
			}
		default:
			stray = append(stray, e.Name())
		}
	}
	return stray, nil
}

// Close closes the metadata database. Other methods must not be called
// afterwards.
func (s *Snapshotter) Close() error {
	if err := s.ms.Close(); err != nil && !errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return fmt.Errorf("close cc-snapshotter metadata: %w", err)
	}
	return nil
}
