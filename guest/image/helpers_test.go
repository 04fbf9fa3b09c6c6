package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

// epoch is the mtime given to every test entry.
var epoch = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// entry is one tar member of a test layer.
type entry struct {
	hdr  tar.Header
	body string
}

func dir(name string, mode int64) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: epoch}}
}

func file(name string, mode int64, body string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: epoch}, body: body}
}

func symlink(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: epoch}}
}

func hardlink(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: epoch}}
}

// tarOf writes entries into an uncompressed tar.
func tarOf(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.hdr
		if h.Format == tar.FormatUnknown && len(h.PAXRecords) > 0 {
			h.Format = tar.FormatPAX
		}
		require.NoError(t, tw.WriteHeader(&h))
		_, err := io.WriteString(tw, e.body)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	return b.Bytes()
}

// testLayer is a v1.Layer with explicit bytes, media type and diff_id, so a
// test can build layers the ggcr helpers would refuse (wrong diff_id,
// encrypted media types).
type testLayer struct {
	blob   []byte
	tar    []byte
	diffID v1.Hash
	mt     types.MediaType
}

func (l *testLayer) Digest() (v1.Hash, error) { return hashOf(l.blob), nil }
func (l *testLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *testLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}
func (l *testLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.tar)), nil
}
func (l *testLayer) Size() (int64, error)                { return int64(len(l.blob)), nil }
func (l *testLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

func hashOf(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// newLayer compresses tarball per mt.
func newLayer(t testing.TB, mt types.MediaType, tarball []byte) *testLayer {
	t.Helper()
	var blob []byte
	switch {
	case strings.Contains(string(mt), "zstd"):
		enc, err := zstd.NewWriter(nil)
		require.NoError(t, err)
		blob = enc.EncodeAll(tarball, nil)
	case strings.Contains(string(mt), "gzip"):
		var b bytes.Buffer
		zw, err := gzip.NewWriterLevel(&b, gzip.BestSpeed)
		require.NoError(t, err)
		_, err = zw.Write(tarball)
		require.NoError(t, err)
		require.NoError(t, zw.Close())
		blob = b.Bytes()
	default:
		blob = tarball
	}
	return &testLayer{blob: blob, tar: tarball, diffID: hashOf(tarball), mt: mt}
}

// imageOf builds an OCI image of layers whose config says linux/arch.
func imageOf(t testing.TB, arch string, layers ...*testLayer) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, l := range layers {
		var err error
		img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: l.mt})
		require.NoError(t, err)
	}
	cfg, err := img.ConfigFile()
	require.NoError(t, err)
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	cfg.Config.Cmd = []string{"/bin/sh"}
	img, err = mutate.ConfigFile(img, cfg)
	require.NoError(t, err)
	return img
}

// testRegistry is an in-process go-containerregistry registry.
type testRegistry struct {
	srv        *httptest.Server
	host       string // "127.0.0.1:port"
	blobGets   atomic.Int64
	tamperBlob atomic.Value // tamper: which blob or manifest gets one bit flipped, where
}

// tamper names a blob or manifest digest ("sha256:…") and the byte offset
// to alter in its GET responses.
type tamper struct {
	digest string
	at     int64
}

// startRegistry serves a registry over plain HTTP (or TLS), optionally with
// blobs on disk under blobDir.
func startRegistry(t testing.TB, useTLS bool, blobDir string) *testRegistry {
	t.Helper()
	opts := []registry.Option{registry.Logger(log.New(io.Discard, "", 0))}
	if blobDir != "" {
		opts = append(opts, registry.WithBlobHandler(registry.NewDiskBlobHandler(blobDir)))
	}
	reg := registry.New(opts...)
	tr := &testRegistry{}
	tr.tamperBlob.Store(tamper{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			tr.blobGets.Add(1)
		}
		if tp := tr.tamperBlob.Load().(tamper); r.Method == http.MethodGet && tp.digest != "" && strings.HasSuffix(r.URL.Path, "/"+tp.digest) {
			w = &flipWriter{ResponseWriter: w, at: tp.at}
		}
		reg.ServeHTTP(w, r)
	})
	tr.srv = httptest.NewUnstartedServer(h)
	tr.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	if useTLS {
		tr.srv.StartTLS()
	} else {
		tr.srv.Start()
	}
	t.Cleanup(tr.srv.Close)
	tr.host = tr.srv.Listener.Addr().String()
	return tr
}

// push writes img to ref and returns the manifest digest.
func (r *testRegistry) push(t testing.TB, ref string, img v1.Image) string {
	t.Helper()
	require.NoError(t, remote.Write(mustRef(t, ref), img, r.pushOpts()...))
	d, err := img.Digest()
	require.NoError(t, err)
	return d.String()
}

// pushIndex writes an index of linux/<arch> images and returns its digest.
func (r *testRegistry) pushIndex(t testing.TB, ref string, imgs map[string]v1.Image) string {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"arm64", "amd64", "s390x"} {
		img, ok := imgs[arch]
		if !ok {
			continue
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			MediaType: types.OCIManifestSchema1,
			Platform:  &v1.Platform{OS: "linux", Architecture: arch},
		}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	require.NoError(t, remote.WriteIndex(mustRef(t, ref), idx, r.pushOpts()...))
	d, err := idx.Digest()
	require.NoError(t, err)
	return d.String()
}

func (r *testRegistry) pushOpts() []remote.Option {
	if r.srv.TLS != nil {
		return []remote.Option{remote.WithTransport(r.srv.Client().Transport)}
	}
	return nil
}

func mustRef(t testing.TB, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s)
	require.NoError(t, err)
	return ref
}

// flipWriter flips one bit of the response body at offset at, keeping the
// length: a man in the middle altering a blob.
type flipWriter struct {
	http.ResponseWriter
	at, pos int64
}

func (f *flipWriter) Write(p []byte) (int, error) {
	if f.at >= f.pos && f.at < f.pos+int64(len(p)) {
		q := append([]byte(nil), p...)
		q[f.at-f.pos] ^= 0x01
		p = q
	}
	f.pos += int64(len(p))
	return f.ResponseWriter.Write(p)
}

// closedAddr returns a 127.0.0.1 address nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// requireEmptyDir fails unless dir exists and is empty.
func requireEmptyDir(t testing.TB, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	require.Empty(t, names, "rootfs %s must be empty after a failed pull", dir)
}
