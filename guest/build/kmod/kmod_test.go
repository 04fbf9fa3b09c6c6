package kmod

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
	"github.com/ulikunitz/xz"
)

// fakeModule returns a minimal ELF64 relocatable object whose .modinfo
// section holds the NUL-separated keys, like a real .ko.
func fakeModule(t *testing.T, keys ...string) []byte {
	t.Helper()
	modinfo := []byte(strings.Join(keys, "\x00") + "\x00")
	shstrtab := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	modinfoOff := uint64(ehsize)
	shstrOff := modinfoOff + uint64(len(modinfo))
	shOff := (shstrOff + uint64(len(shstrtab)) + 7) &^ 7

	var b bytes.Buffer
	hdr := elf.Header64{
		Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Shoff: shOff, Ehsize: ehsize, Shentsize: shentsize, Shnum: 3, Shstrndx: 2,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	require.NoError(t, binary.Write(&b, binary.LittleEndian, hdr))
	b.Write(modinfo)
	b.Write(shstrtab)
	b.Write(make([]byte, int(shOff)-b.Len()))
	sections := []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: modinfoOff, Size: uint64(len(modinfo)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: shstrOff, Size: uint64(len(shstrtab)), Addralign: 1},
	}
	for _, s := range sections {
		require.NoError(t, binary.Write(&b, binary.LittleEndian, s))
	}
	return b.Bytes()
}

func compress(t *testing.T, kind string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch kind {
	case "xz":
		w, err := xz.NewWriter(&b)
		require.NoError(t, err)
		_, err = w.Write(data)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	case "zst":
		w, err := zstd.NewWriter(&b)
		require.NoError(t, err)
		_, err = w.Write(data)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	case "gz":
		w := gzip.NewWriter(&b)
		_, err := w.Write(data)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	default:
		t.Fatalf("unknown compression %q", kind)
	}
	return b.Bytes()
}

type fakeTree struct {
	t   *testing.T
	dir string
}

func newFakeTree(t *testing.T) *fakeTree {
	return &fakeTree{t: t, dir: t.TempDir()}
}

func (f *fakeTree) add(rel string, data []byte) {
	p := filepath.Join(f.dir, rel)
	require.NoError(f.t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(f.t, os.WriteFile(p, data, 0o644))
}

func names(mods []Module) []string {
	var out []string
	for _, m := range mods {
		out = append(out, m.Name)
	}
	return out
}

func TestDependsParsesModinfo(t *testing.T) {
	deps, err := Depends(fakeModule(t, "license=GPL", "depends=virtio_ring,virtio-pci-modern-dev,,virtio", "name=virtio_pci"))
	require.NoError(t, err)
	require.Equal(t, []string{"virtio_ring", "virtio_pci_modern_dev", "virtio"}, deps)

	deps, err = Depends(fakeModule(t, "depends=", "name=overlay"))
	require.NoError(t, err)
	require.Empty(t, deps)

	_, err = Depends([]byte("not an elf"))
	require.ErrorContains(t, err, "parse module ELF")
}

func TestResolveOrdersDependenciesFirst(t *testing.T) {
	ft := newFakeTree(t)
	ft.add("kernel/drivers/net/virtio_net.ko", fakeModule(t, "depends=virtio_ring,virtio,net_failover", "name=virtio_net"))
	ft.add("kernel/drivers/net/net_failover.ko", fakeModule(t, "depends=failover", "name=net_failover"))
	ft.add("kernel/net/core/failover.ko.xz", compress(t, "xz", fakeModule(t, "depends=", "name=failover")))
	ft.add("kernel/drivers/virtio/virtio_ring.ko.zst", compress(t, "zst", fakeModule(t, "depends=virtio", "name=virtio_ring")))
	ft.add("kernel/drivers/virtio/virtio.ko.gz", compress(t, "gz", fakeModule(t, "depends=", "name=virtio")))
	ft.add("kernel/drivers/char/virtio-console.ko", fakeModule(t, "depends=virtio,virtio_ring,crc32c", "name=virtio_console"))
	ft.add("modules.builtin", []byte("kernel/lib/crc32c.ko\nkernel/fs/binfmt_script.ko\n"))

	tree, err := OpenTree(ft.dir)
	require.NoError(t, err)
	mods, builtin, err := tree.Resolve([]string{"virtio_net", "virtio-console", "binfmt_script", "virtio"})
	require.NoError(t, err)
	require.Equal(t, []string{"virtio", "virtio_ring", "failover", "net_failover", "virtio_net", "virtio_console"}, names(mods))
	require.Equal(t, []string{"binfmt_script", "crc32c"}, builtin)

	byName := map[string]Module{}
	for _, m := range mods {
		byName[m.Name] = m
		// Every module comes back as an uncompressed ELF object.
		_, err := Depends(m.Data)
		require.NoError(t, err, m.Name)
	}
	require.Equal(t, "kernel/net/core/failover.ko", byName["failover"].Path)
	require.Equal(t, "kernel/drivers/virtio/virtio_ring.ko", byName["virtio_ring"].Path)
	require.Equal(t, "kernel/drivers/virtio/virtio.ko", byName["virtio"].Path)
	require.Equal(t, "kernel/drivers/char/virtio-console.ko", byName["virtio_console"].Path)
	require.Equal(t, filepath.Join(ft.dir, "kernel/net/core/failover.ko.xz"), byName["failover"].Source)
	require.Equal(t, []string{"virtio_ring", "virtio", "net_failover"}, byName["virtio_net"].Depends)
}

func TestResolveErrors(t *testing.T) {
	ft := newFakeTree(t)
	ft.add("kernel/a.ko", fakeModule(t, "depends=b"))
	ft.add("kernel/b.ko", fakeModule(t, "depends=a"))
	ft.add("kernel/c.ko", fakeModule(t, "depends=nosuch"))
	ft.add("kernel/d.ko", []byte("garbage"))
	tree, err := OpenTree(ft.dir)
	require.NoError(t, err)

	for name, want := range map[string]string{
		"a":       "dependency cycle a -> b -> a",
		"c":       "resolve module nosuch (a dependency of c): no module file",
		"missing": "resolve module missing: no module file",
		"d":       "parse module ELF",
	} {
		_, _, err := tree.Resolve([]string{name})
		require.ErrorContains(t, err, want, name)
	}

	ft.add("kernel/other/a.ko.xz", []byte("dup"))
	_, err = OpenTree(ft.dir)
	require.ErrorContains(t, err, "module a is defined twice")
}
