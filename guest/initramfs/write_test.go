package initramfs

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
	"github.com/stretchr/testify/require"
)

func sampleEntries(t *testing.T) []Entry {
	t.Helper()
	src := filepath.Join(t.TempDir(), "agent")
	require.NoError(t, os.WriteFile(src, []byte("#!/bin/agent\n"), 0o600))
	return []Entry{
		File("/init", 0o755, src),
		CharDevice("/dev/console", 0o600, 5, 1),
		Dir("/tmp", 0o1777),
		FileBytes("/etc/hosts", 0o644, []byte("127.0.0.1 localhost\n")),
		Symlink("/usr/bin/sh", "busybox"),
		FileBytes("/usr/bin/busybox", 0o755|os.ModeSetuid, []byte("abc")),
		Dir("/usr", 0o700),
	}
}

func writeGzip(t *testing.T, entries []Entry, opts Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, entries, opts))
	return buf.Bytes()
}

func TestWriteIsDeterministic(t *testing.T) {
	entries := sampleEntries(t)
	a := writeGzip(t, entries, Options{})

	reversed := make([]Entry, len(entries))
	for i, e := range entries {
		reversed[len(entries)-1-i] = e
	}
	b := writeGzip(t, reversed, Options{})
	require.Equal(t, a, b, "input order changed the archive bytes")
	require.Equal(t, a, writeGzip(t, entries, Options{}), "second write differs")

	// The gzip header has no name and a zero MTIME (RFC 1952 bytes 4..7).
	zr, err := gzip.NewReader(bytes.NewReader(a))
	require.NoError(t, err)
	require.Empty(t, zr.Name)
	require.True(t, zr.ModTime.IsZero(), "gzip ModTime %v", zr.ModTime)
	require.Equal(t, []byte{0, 0, 0, 0}, a[4:8])

	c := writeGzip(t, entries, Options{ModTime: 1700000000})
	require.NotEqual(t, a, c, "ModTime had no effect")
}

// readArchive lists an uncompressed archive with an independent reader.
func readArchive(t *testing.T, raw []byte) ([]*cpio.Header, map[string][]byte) {
	t.Helper()
	r := cpio.NewReader(bytes.NewReader(raw))
	var hdrs []*cpio.Header
	bodies := map[string][]byte{}
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		body, err := io.ReadAll(r)
		require.NoError(t, err)
		hdrs = append(hdrs, h)
		bodies[h.Name] = body
	}
	return hdrs, bodies
}

func TestWriteCPIOFields(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, WriteCPIO(&buf, sampleEntries(t), Options{ModTime: 1234567}))
	raw := buf.Bytes()
	require.Zero(t, len(raw)%4, "archive length %d is not 4-byte aligned", len(raw))

	hdrs, bodies := readArchive(t, raw)
	var names []string
	modes := map[string]cpio.FileMode{}
	for i, h := range hdrs {
		names = append(names, h.Name)
		modes[h.Name] = h.Mode
		require.Equal(t, int64(i+1), h.Inode, h.Name)
		require.Zero(t, h.Uid, h.Name)
		require.Zero(t, h.Guid, h.Name)
		require.Equal(t, int64(1234567), h.ModTime.Unix(), h.Name)
	}
	require.Equal(t, []string{"dev", "dev/console", "etc", "etc/hosts", "init", "tmp", "usr", "usr/bin", "usr/bin/busybox", "usr/bin/sh"}, names)

	require.Equal(t, cpio.FileMode(0o040755), modes["dev"], "implicit parent")
	require.Equal(t, cpio.FileMode(0o040700), modes["usr"], "explicit dir keeps its mode")
	require.Equal(t, cpio.FileMode(0o041777), modes["tmp"])
	require.Equal(t, cpio.FileMode(0o020600), modes["dev/console"])
	require.Equal(t, cpio.FileMode(0o104755), modes["usr/bin/busybox"])
	require.Equal(t, cpio.FileMode(0o100755), modes["init"])
	require.Equal(t, cpio.FileMode(0o120777), modes["usr/bin/sh"])
	require.Equal(t, "#!/bin/agent\n", string(bodies["init"]))
	require.Equal(t, "abc", string(bodies["usr/bin/busybox"]))
	for _, h := range hdrs {
		if h.Name == "usr/bin/sh" {
			require.Equal(t, "busybox", h.Linkname)
		}
	}

	// The reader ignores device numbers: check the console's rdevmajor and
	// rdevminor fields (header offsets 78 and 86) in the raw bytes.
	i := bytes.Index(raw, []byte("dev/console\x00"))
	require.Positive(t, i)
	hdr := string(raw[i-110 : i])
	require.Equal(t, "070701", hdr[:6])
	for _, f := range []struct {
		off  int
		want uint64
	}{{62, 0}, {70, 0}, {78, 5}, {86, 1}, {102, 0}} {
		v, err := strconv.ParseUint(hdr[f.off:f.off+8], 16, 32)
		require.NoError(t, err)
		require.Equal(t, f.want, v, "header field at offset %d", f.off)
	}
	// 110-byte header + "TRAILER!!!\x00" (11 bytes) + 3 bytes of padding.
	require.True(t, bytes.HasSuffix(raw, []byte("TRAILER!!!\x00\x00\x00\x00")), "archive does not end with the padded trailer")
}

func TestWriteCPIOWithGNUCpio(t *testing.T) {
	bin, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("GNU cpio is not installed; the cavaliergopher reader test covers the format")
	}
	var buf bytes.Buffer
	require.NoError(t, WriteCPIO(&buf, sampleEntries(t), Options{}))
	cmd := exec.Command(bin, "-t", "-v", "--quiet")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	s := string(out)
	require.Contains(t, s, "crw-------")
	require.Contains(t, s, "5,")
	require.Contains(t, s, "usr/bin/sh -> busybox")
	require.Contains(t, s, "-rwsr-xr-x")
}

func TestWriteErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	cases := []struct {
		name    string
		entries []Entry
		opts    Options
		want    string
	}{
		{"duplicate", []Entry{Dir("/a", 0o755), FileBytes("/a/", 0o644, nil)}, Options{}, "appears twice"},
		{"below file", []Entry{FileBytes("/a", 0o644, nil), FileBytes("/a/b", 0o644, nil)}, Options{}, "lies below /a, which is a file"},
		{"relative", []Entry{Dir("a", 0o755)}, Options{}, "is relative"},
		{"root", []Entry{Dir("/", 0o755)}, Options{}, "root directory"},
		{"type bits in mode", []Entry{FileBytes("/a", os.ModeDir|0o755, nil)}, Options{}, "has bits besides"},
		{"empty symlink", []Entry{Symlink("/a", "")}, Options{}, "empty target"},
		{"source and data", []Entry{{Path: "/a", Type: TypeFile, Source: "/x", Data: []byte{1}}}, Options{}, "both Source"},
		{"missing source", []Entry{File("/a", 0o644, missing)}, Options{}, "open source"},
		{"source is dir", []Entry{File("/a", 0o644, t.TempDir())}, Options{}, "not a regular file"},
		{"negative mtime", nil, Options{ModTime: -1}, "outside the newc range"},
		{"huge mtime", nil, Options{ModTime: 1 << 33}, "outside the newc range"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := WriteCPIO(io.Discard, tc.entries, tc.opts)
			require.Error(t, err)
			require.True(t, strings.Contains(err.Error(), tc.want), "error %q does not contain %q", err, tc.want)
		})
	}
}
