package sysinit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

const (
	// RootSwitchedEnv is the environment variable SwitchRoot sets (to "1")
	// when it re-executes init on the new root. It stays in init's
	// environment and so in its children's.
	RootSwitchedEnv = "COFFER_ROOT_SWITCHED"
	// NewRootDir is where SwitchRoot mounts the tmpfs that becomes "/".
	NewRootDir = "/newroot"
)

// RootSwitched reports whether this process is init re-executed by
// SwitchRoot, that is whether RootSwitchedEnv is "1".
func RootSwitched() bool { return os.Getenv(RootSwitchedEnv) == "1" }

// SwitchRoot moves init off the initramfs root file system, which runc cannot
// use (pivot_root(2) fails with EINVAL on rootfs), onto a tmpfs, the way
// busybox switch_root does, and then re-executes init as PID 1:
//
//  1. mounts devtmpfs on /dev, proc on /proc and sysfs on /sys (already
//     mounted is fine);
//  2. mounts a tmpfs (mode 0755, the default size limit of half the RAM) on
//     /newroot;
//  3. copies every file, directory, symlink and device node of "/" into it,
//     keeping mode and owner (not timestamps; hard links become copies),
//     removing each original right after copying it, so RAM holds at most one
//     extra file at a time;
//  4. moves every mount found below "/" (/dev, /proc, /sys with their
//     submounts) to the same place under /newroot with MS_MOVE;
//  5. moves /newroot onto "/", chroots into it and changes to "/";
//  6. execs os.Args[0] (if absolute, else /init) with os.Args and the
//     environment plus RootSwitchedEnv=1.
//
// It returns only on error. It must run as PID 1 (or another process allowed
// to mount and chroot) while "/" is the initramfs; otherwise it returns an
// error wrapping errdefs.ErrFailedPrecondition naming the root's file system
// magic. A failure after step 3 has begun leaves the initramfs partly moved:
// the caller should report the error and power off.
func SwitchRoot(ctx context.Context) error {
	if RootSwitched() {
		return fmt.Errorf("switch root: %s=1 is set, so the root was already switched: %w", RootSwitchedEnv, errdefs.ErrFailedPrecondition)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs("/", &sfs); err != nil {
		return fmt.Errorf("switch root: statfs /: %w", err)
	}
	if sfs.Type != unix.RAMFS_MAGIC && sfs.Type != unix.TMPFS_MAGIC {
		return fmt.Errorf("switch root: / has file system magic %#x, want the initramfs (ramfs %#x or tmpfs %#x): %w",
			sfs.Type, unix.RAMFS_MAGIC, unix.TMPFS_MAGIC, errdefs.ErrFailedPrecondition)
	}
	if err := mountEarly(); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	if err := os.MkdirAll(NewRootDir, 0o755); err != nil {
		return fmt.Errorf("switch root: create %s: %w", NewRootDir, err)
	}
	if err := unix.Mount("tmpfs", NewRootDir, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("switch root: mount tmpfs on %s: %w", NewRootDir, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat("/", &st); err != nil {
		return fmt.Errorf("switch root: stat /: %w", err)
	}
	start := time.Now()
	mv := treeMover{rootDev: st.Dev, skip: NewRootDir}
	if err := mv.move("/", NewRootDir); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	log.G(ctx).WithField("files", mv.files).WithField("bytes", mv.bytes).WithField("elapsed", time.Since(start)).Debug("initramfs moved to tmpfs")
	for _, mp := range mv.mounts {
		if err := unix.Mount(mp, filepath.Join(NewRootDir, mp), "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("switch root: move mount %s into %s: %w", mp, NewRootDir, err)
		}
		_ = os.Remove(mp) // now an empty directory of the old root
	}
	if err := os.Chdir(NewRootDir); err != nil {
		return fmt.Errorf("switch root: chdir %s: %w", NewRootDir, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switch root: move %s onto /: %w", NewRootDir, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switch root: chroot: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("switch root: chdir /: %w", err)
	}
	init := "/init"
	if len(os.Args) > 0 && filepath.IsAbs(os.Args[0]) {
		init = os.Args[0]
	}
	log.G(ctx).WithField("moved_mounts", mv.mounts).Debug("root switched, re-executing init")
	env := append(os.Environ(), RootSwitchedEnv+"=1")
	if err := syscall.Exec(init, os.Args, env); err != nil {
		return fmt.Errorf("switch root: exec %s on the new root: %w", init, err)
	}
	return nil
}

// treeMover moves a directory tree to another file system file by file.
type treeMover struct {
	rootDev uint64   // device of the tree being moved; other devices are mounts
	skip    string   // a path not to touch (the destination's mount point)
	mounts  []string // mount points found, in walk order
	files   int      // entries moved
	bytes   int64    // regular-file bytes copied
}

// move moves the contents of the directory src into the existing directory
// dst. Directories on another device than rootDev are mount points: they
// are recreated empty in dst, recorded in mounts and left in place.
func (m *treeMover) move(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("read directory %s: %w", src, err)
	}
	for _, e := range entries {
		s, d := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		if s == m.skip {
			continue
		}
		if err := m.moveOne(s, d); err != nil {
			return err
		}
	}
	return nil
}

func (m *treeMover) moveOne(src, dst string) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return fmt.Errorf("stat %s: %w", src, err)
	}
	perm := os.FileMode(st.Mode & 0o7777)
	m.files++
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := unix.Mkdir(dst, 0o700); err != nil {
			return fmt.Errorf("create directory %s: %w", dst, err)
		}
		if st.Dev != m.rootDev {
			m.mounts = append(m.mounts, src)
		} else {
			if err := m.move(src, dst); err != nil {
				return err
			}
			if err := unix.Rmdir(src); err != nil {
				return fmt.Errorf("remove moved directory %s: %w", src, err)
			}
		}
		return setOwnerMode(dst, st, true)
	case unix.S_IFREG:
		if err := copyFile(src, dst); err != nil {
			return err
		}
		m.bytes += st.Size
		if err := setOwnerMode(dst, st, true); err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			return fmt.Errorf("read symlink %s: %w", src, err)
		}
		if err := os.Symlink(target, dst); err != nil {
			return fmt.Errorf("create symlink %s: %w", dst, err)
		}
		if err := setOwnerMode(dst, st, false); err != nil {
			return err
		}
	default: // device nodes, FIFOs, sockets
		if err := unix.Mknod(dst, st.Mode&unix.S_IFMT|uint32(perm), int(st.Rdev)); err != nil {
			return fmt.Errorf("create node %s: %w", dst, err)
		}
		if err := setOwnerMode(dst, st, true); err != nil {
			return err
		}
	}
	if err := unix.Unlink(src); err != nil {
		return fmt.Errorf("remove moved file %s: %w", src, err)
	}
	return nil
}

// setOwnerMode gives p the owner of st and, when chmod is set, its mode
// (after chown, which clears setuid and setgid).
func setOwnerMode(p string, st unix.Stat_t, chmod bool) error {
	if err := unix.Lchown(p, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", p, err)
	}
	if chmod {
		if err := unix.Chmod(p, st.Mode&0o7777); err != nil {
			return fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	return nil
}

// copyFile copies the regular file src to the new file dst with sendfile(2),
// which copies inside the kernel (one memcpy instead of two through a user
// buffer), falling back to io.Copy where sendfile is refused.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	if err := sendfileAll(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}

func sendfileAll(out, in *os.File) error {
	const chunk = 1 << 30
	for {
		n, err := unix.Sendfile(int(out.Fd()), int(in.Fd()), nil, chunk)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			_, err = io.Copy(out, in)
			return err
		}
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}
