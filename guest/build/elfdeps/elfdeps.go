// Package elfdeps finds the files a dynamically linked ELF program needs at
// run time: its ELF interpreter (PT_INTERP) and the transitive closure of its
// DT_NEEDED shared libraries, searched the way glibc's ld.so searches when it
// has no ld.so.cache (the object's DT_RPATH/DT_RUNPATH, then the system
// directories), so that copying them into an empty root makes the program
// runnable there.
package elfdeps

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// File is one run-time dependency.
type File struct {
	// Path is the absolute path at which the loader looks for the file, and
	// so where it must exist in the target root
	// ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2").
	Path string
	// Source is the host file holding the content, with every symlink in
	// Path resolved ("/usr/lib/x86_64-linux-gnu/libc.so.6").
	Source string
}

// DebianLibDirs returns the library directories glibc's ld.so searches on
// Debian amd64 without an ld.so.cache, in its order.
func DebianLibDirs() []string {
	return []string{
		"/lib/x86_64-linux-gnu",
		"/usr/lib/x86_64-linux-gnu",
		"/lib64",
		"/usr/lib64",
		"/lib",
		"/usr/lib",
	}
}

// Closure returns the interpreter and shared libraries binary needs, sorted
// by Path, each once. A static binary (no PT_INTERP, no DT_NEEDED) yields an
// empty list. Libraries are searched in the needing object's absolute
// DT_RPATH/DT_RUNPATH entries, then in libDirs, skipping files of another
// ELF class or machine. It returns an error naming the library and the object
// needing it when a library is not found, when an RPATH/RUNPATH uses $ORIGIN
// or another dynamic string token (not supported), or when a file is not
// valid ELF.
func Closure(binary string, libDirs []string) ([]File, error) {
	top, err := elf.Open(binary)
	if err != nil {
		return nil, fmt.Errorf("open ELF %s: %w", binary, err)
	}
	defer top.Close()
	c := closure{class: top.Class, machine: top.Machine, libDirs: libDirs, files: map[string]File{}}

	interp, err := interpreter(top)
	if err != nil {
		return nil, fmt.Errorf("read interpreter of %s: %w", binary, err)
	}
	if interp != "" {
		src, err := filepath.EvalSymlinks(interp)
		if err != nil {
			return nil, fmt.Errorf("resolve interpreter %s of %s: %w", interp, binary, err)
		}
		c.files[interp] = File{Path: interp, Source: src}
	}
	if err := c.walk(binary, top); err != nil {
		return nil, err
	}
	out := make([]File, 0, len(c.files))
	for _, f := range c.files {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

type closure struct {
	class   elf.Class
	machine elf.Machine
	libDirs []string
	files   map[string]File // by Path
	seen    map[string]bool // library names already resolved
}

// walk adds the libraries obj (named name) needs, recursively.
func (c *closure) walk(name string, obj *elf.File) error {
	needed, err := obj.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("read DT_NEEDED of %s: %w", name, err)
	}
	dirs, err := searchPath(obj)
	if err != nil {
		return fmt.Errorf("read search path of %s: %w", name, err)
	}
	dirs = append(dirs, c.libDirs...)
	if c.seen == nil {
		c.seen = map[string]bool{}
	}
	for _, lib := range needed {
		if c.seen[lib] {
			continue
		}
		c.seen[lib] = true
		p, libObj, err := c.find(lib, dirs)
		if err != nil {
			return fmt.Errorf("resolve %s needed by %s: %w", lib, name, err)
		}
		src, err := filepath.EvalSymlinks(p)
		if err != nil {
			libObj.Close()
			return fmt.Errorf("resolve %s needed by %s: %w", p, name, err)
		}
		c.files[p] = File{Path: p, Source: src}
		err = c.walk(p, libObj)
		libObj.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// find returns the first file named lib in dirs that matches the program's
// class and machine, opened.
func (c *closure) find(lib string, dirs []string) (string, *elf.File, error) {
	if strings.Contains(lib, "/") {
		dirs = []string{""}
	}
	var skipped []string
	for _, d := range dirs {
		p := lib
		if d != "" {
			p = path.Join(d, lib)
		}
		f, err := elf.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s (%v)", p, err))
			continue
		}
		if f.Class != c.class || f.Machine != c.machine {
			skipped = append(skipped, fmt.Sprintf("%s (%v %v)", p, f.Class, f.Machine))
			f.Close()
			continue
		}
		return p, f, nil
	}
	msg := fmt.Sprintf("no %v %v library in %s", c.class, c.machine, strings.Join(dirs, ":"))
	if len(skipped) > 0 {
		msg += "; skipped " + strings.Join(skipped, ", ")
	}
	return "", nil, errors.New(msg + ": install the package that provides it")
}

// interpreter returns the PT_INTERP path of f, or "" for a static program.
func interpreter(f *elf.File) (string, error) {
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return "", err
		}
		return strings.TrimRight(string(b), "\x00"), nil
	}
	return "", nil
}

// Interpreter returns the ELF interpreter (PT_INTERP) of the program at
// binary, or "" if it is statically linked. It returns an error when binary
// cannot be read as ELF.
func Interpreter(binary string) (string, error) {
	f, err := elf.Open(binary)
	if err != nil {
		return "", fmt.Errorf("open ELF %s: %w", binary, err)
	}
	defer f.Close()
	interp, err := interpreter(f)
	if err != nil {
		return "", fmt.Errorf("read interpreter of %s: %w", binary, err)
	}
	return interp, nil
}

// searchPath returns the absolute directories of f's DT_RPATH and
// DT_RUNPATH.
func searchPath(f *elf.File) ([]string, error) {
	var dirs []string
	for _, tag := range []elf.DynTag{elf.DT_RPATH, elf.DT_RUNPATH} {
		vals, err := f.DynString(tag)
		if err != nil {
			return nil, err
		}
		for _, v := range vals {
			for _, d := range strings.Split(v, ":") {
				if d == "" {
					continue
				}
				if strings.Contains(d, "$") || !strings.HasPrefix(d, "/") {
					return nil, fmt.Errorf("%v entry %q is not a plain absolute directory ($ORIGIN and relative entries are not supported)", tag, d)
				}
				dirs = append(dirs, d)
			}
		}
	}
	return dirs, nil
}
