package harness

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// HostBusybox is the static busybox binary (Debian busybox-static) copied
// into the test images.
const HostBusybox = "/bin/busybox"

// imageTime is the modification time of every file and the image creation
// time, fixed so that building an image twice yields the same digests.
var imageTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// BusyboxImage builds a one-layer OCI image (linux/<GOARCH>) holding a copy
// of the host's static /bin/busybox as /bin/busybox, a symlink
// /bin/<applet> -> busybox for every applet `busybox --list` names (sh,
// echo, cat, sleep, yes, head, find, sort, stty, ...), /tmp (mode 1777)
// and a root-only /etc/passwd and /etc/group. Its config has
// Cmd ["/bin/sh"] and Env ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"].
//
// The image is built in memory and is byte-for-byte reproducible for a
// given host busybox. It returns an error if /bin/busybox is missing or
// dynamically linked (install Debian's busybox-static).
func BusyboxImage() (v1.Image, error) {
	layer, err := busyboxLayer()
	if err != nil {
		return nil, err
	}
	return newImage(layer)
}

// WhiteoutImage builds a three-layer OCI image that exercises OCI layer
// whiteouts (image-spec layer.md, "Whiteouts"):
//
//  1. the BusyboxImage layer;
//  2. /data/a, /data/b and /data/dir/x (regular files);
//  3. a whiteout /data/.wh.a deleting /data/a, and /data/dir made opaque
//     (/data/dir/.wh..wh..opq) holding only a new file y.
//
// A correct unpack therefore shows exactly the regular files /data/b and
// /data/dir/y under /data. Contents are "b\n" and "y\n".
func WhiteoutImage() (v1.Image, error) {
	base, err := busyboxLayer()
	if err != nil {
		return nil, err
	}
	added, err := layerFromEntries([]tarEntry{
		{name: "data/", mode: 0o755, typ: tar.TypeDir},
		{name: "data/a", mode: 0o644, typ: tar.TypeReg, body: []byte("a\n")},
		{name: "data/b", mode: 0o644, typ: tar.TypeReg, body: []byte("b\n")},
		{name: "data/dir/", mode: 0o755, typ: tar.TypeDir},
		{name: "data/dir/x", mode: 0o644, typ: tar.TypeReg, body: []byte("x\n")},
	})
	if err != nil {
		return nil, err
	}
	whiteouts, err := layerFromEntries([]tarEntry{
		{name: "data/", mode: 0o755, typ: tar.TypeDir},
		{name: "data/.wh.a", mode: 0o644, typ: tar.TypeReg},
		{name: "data/dir/", mode: 0o755, typ: tar.TypeDir},
		{name: "data/dir/.wh..wh..opq", mode: 0o644, typ: tar.TypeReg},
		{name: "data/dir/y", mode: 0o644, typ: tar.TypeReg, body: []byte("y\n")},
	})
	if err != nil {
		return nil, err
	}
	return newImage(base, added, whiteouts)
}

// newImage assembles an OCI image (OCI manifest and config media types)
// from layers, with the fixed busybox-style config.
func newImage(layers ...v1.Layer) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, fmt.Errorf("append image layers: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read image config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture = runtime.GOARCH
	cfg.OS = "linux"
	cfg.Created = v1.Time{Time: imageTime}
	cfg.Config.Cmd = []string{"/bin/sh"}
	cfg.Config.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("set image config: %w", err)
	}
	return img, nil
}

// busyboxLayer builds the layer described in BusyboxImage.
func busyboxLayer() (v1.Layer, error) {
	bin, err := os.ReadFile(HostBusybox)
	if err != nil {
		return nil, fmt.Errorf("read host busybox: %w (install Debian's busybox-static)", err)
	}
	if err := checkStatic(HostBusybox); err != nil {
		return nil, err
	}
	applets, err := busyboxApplets()
	if err != nil {
		return nil, err
	}
	entries := []tarEntry{
		{name: "bin/", mode: 0o755, typ: tar.TypeDir},
		{name: "bin/busybox", mode: 0o755, typ: tar.TypeReg, body: bin},
	}
	for _, a := range applets {
		entries = append(entries, tarEntry{name: "bin/" + a, typ: tar.TypeSymlink, link: "busybox", mode: 0o777})
	}
	entries = append(entries,
		tarEntry{name: "etc/", mode: 0o755, typ: tar.TypeDir},
		tarEntry{name: "etc/group", mode: 0o644, typ: tar.TypeReg, body: []byte("root:x:0:\n")},
		tarEntry{name: "etc/passwd", mode: 0o644, typ: tar.TypeReg, body: []byte("root:x:0:0:root:/root:/bin/sh\n")},
		tarEntry{name: "root/", mode: 0o700, typ: tar.TypeDir},
		tarEntry{name: "tmp/", mode: 0o1777, typ: tar.TypeDir},
	)
	return layerFromEntries(entries)
}

// checkStatic returns an error if the ELF file at path requests a dynamic
// loader (has a PT_INTERP program header): it would not run in the image.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("check %s: it is dynamically linked, want a static binary (install Debian's busybox-static)", path)
		}
	}
	return nil
}

// busyboxApplets returns the sorted applet names of the host busybox,
// without "busybox" itself.
func busyboxApplets() ([]string, error) {
	out, err := exec.Command(HostBusybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list applets with `%s --list`: %w", HostBusybox, err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" && !strings.Contains(a, "/") {
			applets = append(applets, a)
		}
	}
	if len(applets) == 0 {
		return nil, fmt.Errorf("list applets with `%s --list`: got no applets", HostBusybox)
	}
	sort.Strings(applets)
	return applets, nil
}

// tarEntry is one file of a test layer.
type tarEntry struct {
	name string
	typ  byte
	mode int64
	body []byte
	link string
}

// layerFromEntries writes entries, in order, into an uncompressed tar and
// returns it as a gzip-compressed OCI layer.
func layerFromEntries(entries []tarEntry) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{
			Typeflag: e.typ,
			Name:     e.name,
			Linkname: e.link,
			Mode:     e.mode,
			Size:     int64(len(e.body)),
			ModTime:  imageTime,
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("write tar header for %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("write tar body for %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close layer tar: %w", err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("build layer: %w", err)
	}
	return layer, nil
}
