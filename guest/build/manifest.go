package build

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"

	"github.com/cofferhq/coffer/guest/build/aptpkg"
)

// ManifestFile is the name of the manifest Build writes into Options.OutDir.
const ManifestFile = "manifest.json"

// Manifest describes one built guest: the boot artifacts and what went into
// them. It is stored as JSON in OutDir/manifest.json; the shim boots from it
// and `ccctl measure` derives launch measurements from it.
type Manifest struct {
	// Kernel is the bzImage passed to QEMU -kernel.
	Kernel Artifact `json:"kernel"`
	// Initrd is the gzip-compressed newc initramfs passed to QEMU -initrd.
	Initrd Artifact `json:"initrd"`
	// Cmdline is the kernel command line the guest was built for (without
	// the cc.transport=… parameter the shim appends).
	Cmdline string `json:"cmdline"`
	// KernelVersion is the kernel release, as `uname -r` prints it in the
	// guest and as named by lib/modules/<release> ("6.1.0-57-cloud-amd64").
	KernelVersion string `json:"kernel_version"`
	// KernelPackage is the Debian package the kernel came from
	// ("linux-image-6.1.0-57-cloud-amd64").
	KernelPackage string `json:"kernel_package"`
	// KernelPackageVersion is that package's Debian version ("6.1.192-3").
	KernelPackageVersion string `json:"kernel_package_version"`
	// KernelPackageSHA256 is the lower-case hex SHA-256 of the .deb, equal to
	// the value in apt's signed index.
	KernelPackageSHA256 string `json:"kernel_package_sha256"`
	// RuncVersion is the first line of `runc --version` after "runc version "
	// ("1.1.5+ds1").
	RuncVersion string `json:"runc_version"`
	// AgentSHA256 is the lower-case hex SHA-256 of the agent binary, which is
	// /init in the initramfs.
	AgentSHA256 string `json:"agent_sha256"`
	// Modules lists the kernel modules in the initramfs by name, in load
	// order (dependencies first), as in /lib/modules/<release>/coffer.load.
	Modules []string `json:"modules"`

	// Dir is the directory the manifest was read from; artifact paths are
	// relative to it. It is not stored.
	Dir string `json:"-"`
}

// Artifact is one output file.
type Artifact struct {
	// Path is the file's path relative to the manifest's directory.
	Path string `json:"path"`
	// SHA256 is the lower-case hex SHA-256 of the file (64 characters).
	SHA256 string `json:"sha256"`
	// Size is the file's size in bytes.
	Size int64 `json:"size"`
}

// ReadManifest reads the manifest at path (a manifest.json file, or a
// directory holding one) and sets its Dir. It returns an error wrapping
// errdefs.ErrNotFound when the file is missing (run `ccctl guest build`), and
// errdefs.ErrInvalidArgument when it is not valid JSON or lacks the kernel or
// initrd path.
func ReadManifest(path string) (*Manifest, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, ManifestFile)
	}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("read guest manifest %s: %w: build the guest with `ccctl guest build`", path, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read guest manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse guest manifest %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	if m.Kernel.Path == "" || m.Initrd.Path == "" {
		return nil, fmt.Errorf("guest manifest %s has no kernel or initrd path: %w", path, errdefs.ErrInvalidArgument)
	}
	m.Dir = filepath.Dir(path)
	return &m, nil
}

// KernelPath returns the kernel's path: Kernel.Path resolved against Dir.
func (m *Manifest) KernelPath() string { return m.resolve(m.Kernel.Path) }

// InitrdPath returns the initrd's path: Initrd.Path resolved against Dir.
func (m *Manifest) InitrdPath() string { return m.resolve(m.Initrd.Path) }

func (m *Manifest) resolve(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(m.Dir, p)
}

// Verify hashes the kernel and initrd files and compares them with the
// manifest. It returns an error wrapping errdefs.ErrDataLoss naming the file
// and both hashes on a mismatch (rebuild the guest), or the read error.
func (m *Manifest) Verify() error {
	for _, a := range []struct {
		name string
		art  Artifact
		path string
	}{{"kernel", m.Kernel, m.KernelPath()}, {"initrd", m.Initrd, m.InitrdPath()}} {
		got, err := aptpkg.FileSHA256(a.path)
		if err != nil {
			return fmt.Errorf("verify guest %s: %w", a.name, err)
		}
		if got != a.art.SHA256 {
			return fmt.Errorf("verify guest %s %s: SHA-256 is %s, manifest says %s: %w: rebuild the guest with `ccctl guest build`",
				a.name, a.path, got, a.art.SHA256, errdefs.ErrDataLoss)
		}
	}
	return nil
}
