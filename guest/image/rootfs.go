package image

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
)

// prepareRootfs creates rootfs (mode 0755) when missing and refuses a
// non-empty one: a pull must never mix with, nor on failure delete, content
// it did not write.
func prepareRootfs(rootfs string) error {
	if rootfs == "" || !filepath.IsAbs(rootfs) {
		return fmt.Errorf("prepare rootfs %q: want an absolute directory path: %w", rootfs, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return fmt.Errorf("prepare rootfs: %w", err)
	}
	f, err := os.Open(rootfs)
	if err != nil {
		return fmt.Errorf("prepare rootfs: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("prepare rootfs: read %s: %w", rootfs, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("prepare rootfs: %s is not empty (it holds %q): pull into an empty or missing directory: %w", rootfs, names[0], errdefs.ErrFailedPrecondition)
	}
	return nil
}

// emptyRootfs removes everything inside rootfs, keeping the directory.
// Symlinks are removed, never followed.
func emptyRootfs(rootfs string) error {
	entries, err := os.ReadDir(rootfs)
	if err != nil {
		return fmt.Errorf("empty rootfs %s: %w", rootfs, err)
	}
	var errs []error
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(rootfs, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("empty rootfs %s: %w", rootfs, err)
	}
	return nil
}
