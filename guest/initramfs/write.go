package initramfs

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"sort"
	"strings"
)

// Options controls the fields that are not taken from the entries.
type Options struct {
	// ModTime is the modification time of every entry in seconds since the
	// Unix epoch, typically SOURCE_DATE_EPOCH (https://reproducible-builds.org/specs/source-date-epoch/).
	// 0 (the default) gives 1970-01-01. It must fit the newc mtime field:
	// 0 to 4294967295.
	ModTime int64
}

// newc file type bits (the S_IF* values of <sys/stat.h>).
const (
	modeDir     = 0o040000
	modeChar    = 0o020000
	modeRegular = 0o100000
	modeSymlink = 0o120000
)

const (
	newcMagic    = "070701"
	newcTrailer  = "TRAILER!!!"
	maxNameBytes = 4096 // PATH_MAX in the kernel's unpacker, NUL included
)

// Write writes entries as a gzip-compressed newc cpio archive to w, ready to
// be passed to the kernel as an initrd. gzip uses compress/gzip at
// BestCompression with an empty header name and a zero header time, so the
// output depends only on entries, opts and the Go version.
//
// Missing parent directories are added with mode 0755. Write returns an error
// naming the entry when two entries share a path, an entry lies below a
// non-directory, a field does not fit the newc format, or a Source file
// cannot be read or changes size while it is read.
func Write(w io.Writer, entries []Entry, opts Options) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return fmt.Errorf("create gzip writer: %w", err)
	}
	if err := WriteCPIO(zw, entries, opts); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("finish gzip stream: %w", err)
	}
	return nil
}

// WriteCPIO writes entries as an uncompressed newc cpio archive to w: entries
// sorted by path (parents before children), uid and gid 0, mtime
// opts.ModTime, inode numbers 1, 2, 3… in archive order, nlink 2 for
// directories and 1 otherwise, device numbers 0 except the rdev of character
// devices, and the TRAILER!!! record. Errors are those of Write.
func WriteCPIO(w io.Writer, entries []Entry, opts Options) error {
	if opts.ModTime < 0 || opts.ModTime > math.MaxUint32 {
		return fmt.Errorf("write initramfs: mtime %d is outside the newc range 0..%d: pass a SOURCE_DATE_EPOCH in that range", opts.ModTime, uint32(math.MaxUint32))
	}
	sorted, err := prepare(entries)
	if err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	cw := &countingWriter{w: w}
	for i, e := range sorted {
		if err := writeEntry(cw, uint32(i+1), uint32(opts.ModTime), e); err != nil {
			return fmt.Errorf("write initramfs entry /%s: %w", e.name, err)
		}
	}
	trailer := header{nlink: 1, name: newcTrailer}
	if err := trailer.write(cw); err != nil {
		return fmt.Errorf("write initramfs trailer: %w", err)
	}
	return nil
}

// named is an entry with its archive name.
type named struct {
	Entry
	name string
}

// prepare validates entries, adds missing parent directories and sorts them.
func prepare(entries []Entry) ([]named, error) {
	byName := make(map[string]named, len(entries))
	for _, e := range entries {
		if err := e.validate(); err != nil {
			return nil, err
		}
		name, err := archivePath(e.Path)
		if err != nil {
			return nil, err
		}
		if len(name)+1 > maxNameBytes {
			return nil, fmt.Errorf("entry %s: path is %d bytes, the newc limit is %d", e.Path, len(name), maxNameBytes-1)
		}
		if prev, ok := byName[name]; ok {
			return nil, fmt.Errorf("entry %s appears twice (as %v and as %v): keep one", e.Path, prev.Type, e.Type)
		}
		byName[name] = named{Entry: e, name: name}
	}
	for name := range byName {
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			parent, ok := byName[dir]
			if !ok {
				byName[dir] = named{Entry: Dir("/"+dir, 0o755), name: dir}
				continue
			}
			if parent.Type != TypeDir {
				return nil, fmt.Errorf("entry /%s lies below /%s, which is a %v, not a dir", name, dir, parent.Type)
			}
		}
	}
	out := make([]named, 0, len(byName))
	for _, e := range byName {
		out = append(out, e)
	}
	// A parent's name is a prefix of its children's names, so byte order puts
	// parents first.
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// writeEntry writes the header and body of one entry.
func writeEntry(w *countingWriter, ino, mtime uint32, e named) error {
	h := header{ino: ino, mtime: mtime, nlink: 1, name: e.name, mode: uint32(e.Mode & 0o7777)}
	if e.Mode&os.ModeSetuid != 0 {
		h.mode |= 0o4000
	}
	if e.Mode&os.ModeSetgid != 0 {
		h.mode |= 0o2000
	}
	if e.Mode&os.ModeSticky != 0 {
		h.mode |= 0o1000
	}
	switch e.Type {
	case TypeDir:
		h.mode |= modeDir
		h.nlink = 2
		return h.write(w)
	case TypeCharDevice:
		h.mode |= modeChar
		h.rdevMajor, h.rdevMinor = e.Major, e.Minor
		return h.write(w)
	case TypeSymlink:
		h.mode = modeSymlink | 0o777
		return writeBody(w, h, strings.NewReader(e.Target), int64(len(e.Target)))
	case TypeFile:
		h.mode |= modeRegular
		if e.Source == "" {
			return writeBody(w, h, bytes.NewReader(e.Data), int64(len(e.Data)))
		}
		return writeSource(w, h, e.Source)
	}
	return fmt.Errorf("unknown entry type %v", e.Type)
}

// writeSource writes a regular file whose content comes from the host file src.
func writeSource(w *countingWriter, h header, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open source: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat source: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("source %s is a %v, not a regular file", src, st.Mode().Type())
	}
	if err := writeBody(w, h, f, st.Size()); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if n, _ := f.Read(make([]byte, 1)); n != 0 {
		return fmt.Errorf("source %s grew beyond %d bytes while being archived", src, st.Size())
	}
	return nil
}

// writeBody writes h with filesize n, then n bytes from r and the padding.
func writeBody(w *countingWriter, h header, r io.Reader, n int64) error {
	if n > math.MaxUint32 {
		return fmt.Errorf("content is %d bytes, the newc limit is %d", n, uint32(math.MaxUint32))
	}
	h.size = uint32(n)
	if err := h.write(w); err != nil {
		return err
	}
	copied, err := io.CopyN(w, r, n)
	if err != nil {
		return fmt.Errorf("content ended after %d of %d bytes: %w", copied, n, err)
	}
	return w.pad4()
}

// header is a newc header; fields not listed here are zero.
type header struct {
	ino, mode, nlink, mtime, size uint32
	rdevMajor, rdevMinor          uint32
	name                          string
}

// write writes the 110-byte header, the NUL-terminated name and padding to a
// multiple of 4 bytes.
func (h header) write(w *countingWriter) error {
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
	// rdevmajor, rdevminor, namesize, check
	s := fmt.Sprintf("%s%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\x00",
		newcMagic, h.ino, h.mode, 0, 0, h.nlink, h.mtime, h.size, 0, 0,
		h.rdevMajor, h.rdevMinor, len(h.name)+1, 0, h.name)
	if _, err := io.WriteString(w, s); err != nil {
		return err
	}
	return w.pad4()
}

// countingWriter tracks the archive offset so entries can be padded to
// 4-byte boundaries.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) pad4() error {
	if r := c.n % 4; r != 0 {
		_, err := c.Write(make([]byte, 4-r))
		return err
	}
	return nil
}
