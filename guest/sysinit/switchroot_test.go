package sysinit

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(p, &st))
	return st
}

// TestTreeMover moves a small tree holding every kind of entry and a mount
// point, as SwitchRoot does with the initramfs, and checks what arrived and
// what stayed.
func TestTreeMover(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown, mknod and mount tmpfs")
	}
	src, dst := t.TempDir(), t.TempDir()
	w := func(p string, mode os.FileMode, body string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		require.NoError(t, unix.Chmod(p, uint32(mode)))
	}
	require.NoError(t, os.Mkdir(filepath.Join(src, "tmp"), 0o700))
	require.NoError(t, unix.Chmod(filepath.Join(src, "tmp"), 0o1777))
	w(filepath.Join(src, "usr/bin/tool"), 0o755, "tool")
	require.NoError(t, unix.Chown(filepath.Join(src, "usr/bin/tool"), 1234, 5678))
	require.NoError(t, unix.Chmod(filepath.Join(src, "usr/bin/tool"), 0o4755)) // setuid survives chown
	w(filepath.Join(src, "empty"), 0o644, "")
	require.NoError(t, os.Symlink("usr/bin/tool", filepath.Join(src, "link")))
	require.NoError(t, unix.Lchown(filepath.Join(src, "link"), 1234, 5678))
	require.NoError(t, unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	require.NoError(t, unix.Chmod(filepath.Join(src, "null"), 0o666)) // undo the umask
	require.NoError(t, unix.Mkfifo(filepath.Join(src, "fifo"), 0o640))
	require.NoError(t, unix.Chmod(filepath.Join(src, "fifo"), 0o640))
	w(filepath.Join(src, "keep/untouched"), 0o644, "stays")

	mnt := filepath.Join(src, "mnt")
	require.NoError(t, os.Mkdir(mnt, 0o711))
	require.NoError(t, unix.Mount("tmpfs", mnt, "tmpfs", 0, "mode=0711"))
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	w(filepath.Join(mnt, "inside"), 0o644, "mounted")

	mv := treeMover{rootDev: lstat(t, src).Dev, skip: filepath.Join(src, "keep")}
	require.NoError(t, mv.move(src, dst))

	require.Equal(t, []string{mnt}, mv.mounts)
	require.Equal(t, int64(len("tool")), mv.bytes)

	b, err := os.ReadFile(filepath.Join(dst, "usr/bin/tool"))
	require.NoError(t, err)
	require.Equal(t, "tool", string(b))
	st := lstat(t, filepath.Join(dst, "usr/bin/tool"))
	require.Equal(t, uint32(unix.S_IFREG|0o4755), st.Mode)
	require.Equal(t, [2]uint32{1234, 5678}, [2]uint32{st.Uid, st.Gid})
	require.Equal(t, uint32(unix.S_IFDIR|0o1777), lstat(t, filepath.Join(dst, "tmp")).Mode)
	require.Equal(t, uint32(unix.S_IFREG|0o644), lstat(t, filepath.Join(dst, "empty")).Mode)

	target, err := os.Readlink(filepath.Join(dst, "link"))
	require.NoError(t, err)
	require.Equal(t, "usr/bin/tool", target)
	st = lstat(t, filepath.Join(dst, "link"))
	require.Equal(t, [2]uint32{1234, 5678}, [2]uint32{st.Uid, st.Gid})

	st = lstat(t, filepath.Join(dst, "null"))
	require.Equal(t, uint32(unix.S_IFCHR|0o666), st.Mode)
	require.Equal(t, unix.Mkdev(1, 3), st.Rdev)
	require.Equal(t, uint32(unix.S_IFIFO|0o640), lstat(t, filepath.Join(dst, "fifo")).Mode)

	// The mount point is recreated empty with its mode; the mount stays.
	require.Equal(t, uint32(unix.S_IFDIR|0o711), lstat(t, filepath.Join(dst, "mnt")).Mode)
	entries, err := os.ReadDir(filepath.Join(dst, "mnt"))
	require.NoError(t, err)
	require.Empty(t, entries)
	_, err = os.Stat(filepath.Join(mnt, "inside"))
	require.NoError(t, err)

	// Everything else left the source.
	left, err := os.ReadDir(src)
	require.NoError(t, err)
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	require.Equal(t, []string{"keep", "mnt"}, names)
	_, err = os.Stat(filepath.Join(dst, "keep"))
	require.True(t, os.IsNotExist(err), "skipped path was copied")
}

func TestReadModuleList(t *testing.T) {
	p := filepath.Join(t.TempDir(), ModuleListName)
	require.NoError(t, os.WriteFile(p, []byte("# header\nkernel/a.ko\n\n  kernel/b/c.ko  \n#kernel/x.ko\n"), 0o644))
	got, err := readModuleList(p)
	require.NoError(t, err)
	require.Equal(t, []string{"kernel/a.ko", "kernel/b/c.ko"}, got)
}

func TestSwitchRootRefusesNonInitramfsRoot(t *testing.T) {
	var sfs unix.Statfs_t
	require.NoError(t, unix.Statfs("/", &sfs))
	if sfs.Type == unix.RAMFS_MAGIC || sfs.Type == unix.TMPFS_MAGIC {
		t.Skip("this test host's / is ramfs or tmpfs, so SwitchRoot would proceed")
	}
	err := SwitchRoot(t.Context())
	require.ErrorContains(t, err, "want the initramfs")

	t.Setenv(RootSwitchedEnv, "1")
	require.True(t, RootSwitched())
	require.ErrorContains(t, SwitchRoot(t.Context()), "already switched")
}
