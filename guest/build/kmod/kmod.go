// Package kmod resolves Linux kernel modules and their dependencies from an
// extracted module tree (lib/modules/<release>) without modinfo or depmod.
//
// Dependencies come from the "depends=" key of each module's .modinfo ELF
// section (the key modpost writes; depmod reads the same key). Soft
// dependencies ("softdep=") are not followed. Modules may be stored as .ko,
// .ko.xz, .ko.zst or .ko.gz (CONFIG_MODULE_COMPRESS_*); they are returned
// uncompressed, which is what finit_module(2) accepts without
// MODULE_INIT_COMPRESSED_FILE.
package kmod

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Module is one loadable module, ready to be copied into a guest.
type Module struct {
	// Name is the module name with '-' replaced by '_', as the kernel and
	// the depends= key spell it ("virtio_pci").
	Name string
	// Path is the module's path relative to the tree, with any compression
	// suffix removed ("kernel/drivers/virtio/virtio_pci.ko").
	Path string
	// Source is the host file the module was read from, possibly compressed.
	Source string
	// Depends lists the module names from the depends= key, in their order
	// there; built-in ones included.
	Depends []string
	// Data is the uncompressed ELF object.
	Data []byte
}

// Tree indexes an extracted module tree.
type Tree struct {
	dir     string
	files   map[string]string // module name → path relative to dir
	builtin map[string]bool   // module names listed in modules.builtin
}

// compression suffixes recognised after ".ko".
var suffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

// OpenTree indexes the module tree dir (for example
// /tmp/x/lib/modules/6.1.0-57-cloud-amd64): every module file under it and
// the names in dir/modules.builtin. A missing modules.builtin counts as
// empty. It returns an error when dir cannot be walked or two files define
// the same module name.
func OpenTree(dir string) (*Tree, error) {
	t := &Tree{dir: dir, files: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		name, ok := moduleName(d.Name())
		if !ok {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if prev, dup := t.files[name]; dup {
			return fmt.Errorf("module %s is defined twice, by %s and %s", name, prev, rel)
		}
		t.files[name] = rel
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index module tree %s: %w", dir, err)
	}
	f, err := os.Open(filepath.Join(dir, "modules.builtin"))
	if errors.Is(err, fs.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read modules.builtin: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if name, ok := moduleName(filepath.Base(strings.TrimSpace(s.Text()))); ok {
			t.builtin[name] = true
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read modules.builtin: %w", err)
	}
	return t, nil
}

// moduleName returns the normalised module name of a file name such as
// "virtio-pci.ko.xz", and whether the name is a module file at all.
func moduleName(file string) (string, bool) {
	for _, s := range suffixes {
		if base, ok := strings.CutSuffix(file, s); ok && base != "" {
			return normalize(base), true
		}
	}
	return "", false
}

func normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

// Resolve returns the modules needed to load names, dependencies first, each
// once, in a stable order (depth-first in the order of names and of each
// depends= list). Names that are built into the kernel need no file: they are
// returned in builtin, sorted, and not loaded. Resolve returns an error naming
// the module when a name (or a dependency, with the module that needs it) is
// neither a file nor built in, a module cannot be read or decompressed, its
// .modinfo cannot be parsed, or dependencies form a cycle.
func (t *Tree) Resolve(names []string) (mods []Module, builtin []string, err error) {
	r := resolver{tree: t, state: map[string]int{}, builtin: map[string]bool{}}
	for _, n := range names {
		if err := r.visit(normalize(n), ""); err != nil {
			return nil, nil, err
		}
	}
	for n := range r.builtin {
		builtin = append(builtin, n)
	}
	sort.Strings(builtin)
	return r.order, builtin, nil
}

const (
	visiting = 1
	done     = 2
)

type resolver struct {
	tree    *Tree
	state   map[string]int
	order   []Module
	builtin map[string]bool
	stack   []string
}

func (r *resolver) visit(name, neededBy string) error {
	switch r.state[name] {
	case done:
		return nil
	case visiting:
		return fmt.Errorf("resolve module %s: dependency cycle %s -> %s", name, strings.Join(r.stack, " -> "), name)
	}
	rel, ok := r.tree.files[name]
	if !ok {
		if r.tree.builtin[name] {
			r.builtin[name] = true
			r.state[name] = done
			return nil
		}
		if neededBy != "" {
			return fmt.Errorf("resolve module %s (a dependency of %s): no module file in %s and not in modules.builtin", name, neededBy, r.tree.dir)
		}
		return fmt.Errorf("resolve module %s: no module file in %s and not in modules.builtin: check the name against the kernel package", name, r.tree.dir)
	}
	r.state[name] = visiting
	r.stack = append(r.stack, name)
	src := filepath.Join(r.tree.dir, rel)
	data, err := ReadFile(src)
	if err != nil {
		return fmt.Errorf("resolve module %s: %w", name, err)
	}
	deps, err := Depends(data)
	if err != nil {
		return fmt.Errorf("resolve module %s: %s: %w", name, src, err)
	}
	for _, d := range deps {
		if err := r.visit(d, name); err != nil {
			return err
		}
	}
	r.stack = r.stack[:len(r.stack)-1]
	r.state[name] = done
	r.order = append(r.order, Module{
		Name:    name,
		Path:    uncompressedPath(rel),
		Source:  src,
		Depends: deps,
		Data:    data,
	})
	return nil
}

func uncompressedPath(rel string) string {
	for _, s := range []string{".xz", ".zst", ".gz"} {
		if p, ok := strings.CutSuffix(rel, s); ok {
			return p
		}
	}
	return rel
}

// ReadFile reads the module file path and returns the uncompressed ELF
// object, choosing the decompressor by suffix: .ko as is, .ko.xz (xz),
// .ko.zst (zstd), .ko.gz (gzip).
func ReadFile(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read module: %w", err)
	}
	var r io.Reader
	switch {
	case strings.HasSuffix(path, ".ko"):
		return raw, nil
	case strings.HasSuffix(path, ".xz"):
		xr, err := xz.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("decompress xz module %s: %w", path, err)
		}
		r = xr
	case strings.HasSuffix(path, ".zst"):
		zr, err := zstd.NewReader(bytes.NewReader(raw), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("decompress zstd module %s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(path, ".gz"):
		gr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("decompress gzip module %s: %w", path, err)
		}
		r = gr
	default:
		return nil, fmt.Errorf("read module %s: unknown suffix, want .ko, .ko.xz, .ko.zst or .ko.gz", path)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("decompress module %s: %w", path, err)
	}
	return data, nil
}

// Depends returns the module names in the "depends=" key of the .modinfo
// section of the ELF object data (normalised, empty entries dropped; nil when
// the key is empty or absent). It returns an error when data is not ELF or
// has no .modinfo section.
func Depends(data []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("parse module ELF: %w", err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("module has no .modinfo section: is it a kernel module?")
	}
	info, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read .modinfo section: %w", err)
	}
	var deps []string
	for _, kv := range bytes.Split(info, []byte{0}) {
		v, ok := bytes.CutPrefix(kv, []byte("depends="))
		if !ok {
			continue
		}
		for _, d := range strings.Split(string(v), ",") {
			if d = strings.TrimSpace(d); d != "" {
				deps = append(deps, normalize(d))
			}
		}
	}
	return deps, nil
}
