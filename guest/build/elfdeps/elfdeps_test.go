package elfdeps

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

const hostRunc = "/usr/sbin/runc"

func requireFile(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s is not installed on this host (%v); install the Debian package that provides it", p, err)
	}
}

func TestClosureOfRunc(t *testing.T) {
	requireFile(t, hostRunc)
	files, err := Closure(hostRunc, DebianLibDirs())
	require.NoError(t, err)

	paths := map[string]string{}
	for _, f := range files {
		paths[f.Path] = f.Source
		st, err := os.Lstat(f.Source)
		require.NoError(t, err)
		require.True(t, st.Mode().IsRegular(), "source %s of %s is not a regular file", f.Source, f.Path)
	}
	for _, want := range []string{
		"/lib64/ld-linux-x86-64.so.2",
		"/lib/x86_64-linux-gnu/libc.so.6",
		"/lib/x86_64-linux-gnu/libseccomp.so.2",
	} {
		require.Contains(t, paths, want)
	}

	interp, err := Interpreter(hostRunc)
	require.NoError(t, err)
	require.Equal(t, "/lib64/ld-linux-x86-64.so.2", interp)
}

// TestClosureRunsInEmptyRoot copies runc and its closure into an empty
// directory and runs it there under chroot: the closure is complete only if
// the loader finds everything.
func TestClosureRunsInEmptyRoot(t *testing.T) {
	requireFile(t, hostRunc)
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root")
	}
	files, err := Closure(hostRunc, DebianLibDirs())
	require.NoError(t, err)
	root := t.TempDir()
	copyFile(t, hostRunc, filepath.Join(root, "usr/bin/runc"))
	for _, f := range files {
		copyFile(t, f.Source, filepath.Join(root, f.Path))
	}
	cmd := exec.Command("/usr/bin/runc", "--version")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "runc in a root holding only its closure: %s", out)
	require.Contains(t, string(out), "runc version")
}

func TestClosureOfStaticBinary(t *testing.T) {
	requireFile(t, "/bin/busybox")
	interp, err := Interpreter("/bin/busybox")
	require.NoError(t, err)
	if interp != "" {
		t.Skipf("/bin/busybox is dynamically linked (%s) here; install busybox-static", interp)
	}
	files, err := Closure("/bin/busybox", DebianLibDirs())
	require.NoError(t, err)
	require.Empty(t, files)
}

func TestClosureMissingLibrary(t *testing.T) {
	requireFile(t, hostRunc)
	_, err := Closure(hostRunc, []string{t.TempDir()})
	require.ErrorContains(t, err, "needed by /usr/sbin/runc: no ELFCLASS64 EM_X86_64 library in")

	_, err = Closure(filepath.Join(t.TempDir(), "nope"), DebianLibDirs())
	require.ErrorContains(t, err, "open ELF")
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}
