// Package initramfs writes reproducible Linux initramfs archives: the "newc"
// (SVR4, magic 070701, no checksum) cpio format compressed with gzip, as the
// kernel's initramfs unpacker expects (Documentation/driver-api/early-userspace/
// buffer-format.rst).
//
// The same entries always produce the same bytes: entries are sorted by path,
// every entry is owned by uid/gid 0, carries one fixed mtime, gets an inode
// number from its position in the sorted archive, and the gzip header carries
// no name and no timestamp.
//
// The package writes the newc format itself rather than using
// github.com/cavaliergopher/cpio: that writer (v1.0.1) never writes the
// rdevmajor/rdevminor header fields, so it cannot produce device nodes such as
// /dev/console (c 5 1), and it mutates a package-level magic slice when a
// checksum is set.
package initramfs

import (
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// Type is the kind of an archive entry.
type Type int

const (
	// TypeFile is a regular file whose content comes from Entry.Source (a host
	// path) or Entry.Data.
	TypeFile Type = iota + 1
	// TypeDir is a directory.
	TypeDir
	// TypeSymlink is a symbolic link pointing at Entry.Target.
	TypeSymlink
	// TypeCharDevice is a character device node with Entry.Major and
	// Entry.Minor.
	TypeCharDevice
)

// String returns the lower-case name of t.
func (t Type) String() string {
	switch t {
	case TypeFile:
		return "file"
	case TypeDir:
		return "dir"
	case TypeSymlink:
		return "symlink"
	case TypeCharDevice:
		return "char device"
	default:
		return fmt.Sprintf("type(%d)", int(t))
	}
}

// Entry is one file system object in the archive. Build entries with File,
// FileBytes, Dir, Symlink and CharDevice.
type Entry struct {
	// Path is the absolute path inside the guest, such as "/usr/bin/runc".
	// It is cleaned; "/" itself is not a valid entry (the kernel provides the
	// root directory).
	Path string
	// Type is the kind of object.
	Type Type
	// Mode holds the permission bits (0o777) plus setuid, setgid and sticky,
	// given either as Unix bits (0o4000, 0o2000, 0o1000, as in 0o1777) or as
	// fs.ModeSetuid, fs.ModeSetgid and fs.ModeSticky. Type bits are not
	// allowed: the type is Type. Symlinks always get 0777.
	Mode fs.FileMode
	// Source is the host path a TypeFile's content is read from when the
	// archive is written. Symlinks in Source are followed.
	Source string
	// Data is a TypeFile's content when Source is empty.
	Data []byte
	// Target is a TypeSymlink's target.
	Target string
	// Major and Minor are a TypeCharDevice's device numbers.
	Major, Minor uint32
}

// File returns a regular-file entry at guestPath whose content is read from the
// host file hostPath when the archive is written.
func File(guestPath string, mode fs.FileMode, hostPath string) Entry {
	return Entry{Path: guestPath, Type: TypeFile, Mode: mode, Source: hostPath}
}

// FileBytes returns a regular-file entry at guestPath holding data.
func FileBytes(guestPath string, mode fs.FileMode, data []byte) Entry {
	return Entry{Path: guestPath, Type: TypeFile, Mode: mode, Data: data}
}

// Dir returns a directory entry at guestPath.
func Dir(guestPath string, mode fs.FileMode) Entry {
	return Entry{Path: guestPath, Type: TypeDir, Mode: mode}
}

// Symlink returns a symbolic link at guestPath pointing at target.
func Symlink(guestPath, target string) Entry {
	return Entry{Path: guestPath, Type: TypeSymlink, Mode: 0o777, Target: target}
}

// CharDevice returns a character device node at guestPath with the given
// device numbers, for example CharDevice("/dev/console", 0o600, 5, 1).
func CharDevice(guestPath string, mode fs.FileMode, major, minor uint32) Entry {
	return Entry{Path: guestPath, Type: TypeCharDevice, Mode: mode, Major: major, Minor: minor}
}

const permMask = 0o7777 | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// archivePath turns a guest path into the name stored in the archive: cleaned,
// relative to the root ("usr/bin/runc").
func archivePath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("entry path %q is relative: want an absolute guest path such as /usr/bin/runc", p)
	}
	c := path.Clean(p)
	if c == "/" {
		return "", fmt.Errorf("entry path %q names the root directory, which the kernel provides: remove the entry", p)
	}
	return strings.TrimPrefix(c, "/"), nil
}

// validate checks the fields that apply to e's type.
func (e *Entry) validate() error {
	if e.Mode&^permMask != 0 {
		return fmt.Errorf("entry %s: mode %v has bits besides permission, setuid, setgid and sticky: pass the type in Entry.Type", e.Path, e.Mode)
	}
	switch e.Type {
	case TypeFile:
		if e.Source != "" && e.Data != nil {
			return fmt.Errorf("entry %s: both Source %q and Data are set: set one", e.Path, e.Source)
		}
	case TypeDir, TypeCharDevice:
	case TypeSymlink:
		if e.Target == "" {
			return fmt.Errorf("entry %s: symlink has an empty target", e.Path)
		}
	default:
		return fmt.Errorf("entry %s: unknown entry type %v", e.Path, e.Type)
	}
	return nil
}
