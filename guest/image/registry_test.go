package image

import (
	"context"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log/logtest"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/transport/forward"
)

// serverCAPEM is the PEM of an httptest TLS server's self-signed
// certificate (SANs: example.com, 127.0.0.1, ::1).
func serverCAPEM(reg *testRegistry) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: reg.srv.Certificate().Raw})
}

// pushSmall pushes a one-file image to reg under repo:latest.
func pushSmall(t *testing.T, reg *testRegistry, repo string) {
	t.Helper()
	reg.push(t, reg.host+"/"+repo+":latest", imageOf(t, "amd64", newLayer(t, types.OCILayer, tarOf(t, file("hello", 0o644, "world")))))
}

func requireHello(t *testing.T, rootfs string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rootfs, "hello"))
	require.NoError(t, err)
	assert.Equal(t, "world", string(b))
}

func TestPullManifestNotFound(t *testing.T) {
	reg := startRegistry(t, false, "")
	ref := reg.host + "/test/missing:nope"
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, Registry: RegistryConfig{Insecure: []string{reg.host}}}, rootfs)
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
	assert.ErrorContains(t, err, "pull "+ref+": fetch manifest: NAME_UNKNOWN: Unknown name")
	requireEmptyDir(t, rootfs)

	pushSmall(t, reg, "test/missing")
	_, err = Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, Registry: RegistryConfig{Insecure: []string{reg.host}}}, rootfs)
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
	assert.ErrorContains(t, err, "pull "+ref+": fetch manifest: MANIFEST_UNKNOWN: Unknown manifest")
}

func TestPullUnreachable(t *testing.T) {
	addr := closedAddr(t)
	for _, tc := range []struct {
		name, ref string
		cfg       RegistryConfig
		want      string
	}{
		{"direct", addr + "/x:y", RegistryConfig{Insecure: []string{addr}},
			"pull " + addr + "/x:y: fetch manifest: registry " + addr + " unreachable: connection refused"},
		{"via endpoint", "registry.internal:5000/x:y", RegistryConfig{Insecure: []string{"registry.internal:5000"}, Endpoints: map[string]string{"registry.internal:5000": addr}},
			"pull registry.internal:5000/x:y: fetch manifest: registry registry.internal:5000 (dialed " + addr + ") unreachable: connection refused"},
		{"tls via endpoint", "registry.internal:5000/x:y", RegistryConfig{Endpoints: map[string]string{"registry.internal:5000": addr}},
			"pull registry.internal:5000/x:y: fetch manifest: registry registry.internal:5000 (dialed " + addr + ") unreachable: connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rootfs := filepath.Join(t.TempDir(), "rootfs")
			start := time.Now()
			_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: tc.ref, Registry: tc.cfg}, rootfs)
			require.Error(t, err)
			t.Logf("error: %v", err)
			assert.Equal(t, tc.want, err.Error())
			assert.True(t, errdefs.IsUnavailable(err), "%v", err)
			var ue *UnreachableError
			assert.ErrorAs(t, err, &ue)
			assert.Less(t, time.Since(start), 5*time.Second, "a refused connection is not retried with backoff")
		})
	}
}

func TestPullInsecureHostNotListedTriesTLS(t *testing.T) {
	reg := startRegistry(t, false, "") // plain HTTP
	pushSmall(t, reg, "test/plain")
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	ref := reg.host + "/test/plain:latest"

	_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref}, rootfs)
	require.Error(t, err)
	t.Logf("error: %v", err)
	var te *TLSError
	require.ErrorAs(t, err, &te, "%v", err)
	assert.Equal(t, reg.host, te.Registry)
	assert.True(t, errdefs.IsUnavailable(err))
	assert.ErrorContains(t, err, "registry "+reg.host+": TLS handshake failed")
	assert.ErrorContains(t, err, `the server did not answer with TLS: if the registry serves plain HTTP, list "`+reg.host+`" in RegistryConfig.Insecure`)
	requireEmptyDir(t, rootfs)

	// Listed: plain HTTP works.
	_, err = Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, Registry: RegistryConfig{Insecure: []string{reg.host}}}, rootfs)
	require.NoError(t, err)
	requireHello(t, rootfs)
}

func TestPullTLS(t *testing.T) {
	reg := startRegistry(t, true, "")
	pushSmall(t, reg, "test/tls")
	ref := reg.host + "/test/tls:latest"

	t.Run("with CAPEM", func(t *testing.T) {
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, Registry: RegistryConfig{CAPEM: [][]byte{serverCAPEM(reg)}}}, rootfs)
		require.NoError(t, err)
		requireHello(t, rootfs)
	})
	t.Run("unknown CA", func(t *testing.T) {
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref}, rootfs)
		require.Error(t, err)
		t.Logf("error: %v", err)
		var te *TLSError
		require.ErrorAs(t, err, &te, "%v", err)
		assert.ErrorContains(t, err, "certificate signed by unknown authority")
		assert.ErrorContains(t, err, "the certificate chain is not trusted: if its certificate is from a private CA, pass that CA in RegistryConfig.CAPEM")
	})
	t.Run("bad CAPEM", func(t *testing.T) {
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		_, err := Pull(logtest.WithT(context.Background(), t), Request{Reference: ref, Registry: RegistryConfig{CAPEM: [][]byte{[]byte("not pem")}}}, rootfs)
		require.Error(t, err)
		t.Logf("error: %v", err)
		assert.True(t, errdefs.IsInvalidArgument(err), "%v", err)
		assert.ErrorContains(t, err, "load RegistryConfig.CAPEM[0]: no PEM CERTIFICATE block found")
	})
}

func TestPullEndpoints(t *testing.T) {
	t.Run("plain HTTP", func(t *testing.T) {
		reg := startRegistry(t, false, "")
		pushSmall(t, reg, "test/ep")
		named := closedAddr(t) // the reference names an address nothing listens on
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		_, err := Pull(logtest.WithT(context.Background(), t), Request{
			Reference: named + "/test/ep:latest",
			Registry:  RegistryConfig{Insecure: []string{named}, Endpoints: map[string]string{named: reg.host}},
		}, rootfs)
		require.NoError(t, err)
		requireHello(t, rootfs)
	})
	t.Run("TLS keeps the server name", func(t *testing.T) {
		reg := startRegistry(t, true, "")
		pushSmall(t, reg, "test/ep")
		rootfs := filepath.Join(t.TempDir(), "rootfs")
		// example.com is in the test certificate's SANs and is never
		// resolved: only the dial is redirected, verification uses the name.
		_, err := Pull(logtest.WithT(context.Background(), t), Request{
			Reference: "example.com:5443/test/ep:latest",
			Registry: RegistryConfig{
				CAPEM:     [][]byte{serverCAPEM(reg)},
				Endpoints: map[string]string{"example.com:5443": reg.host},
			},
		}, rootfs)
		require.NoError(t, err)
		requireHello(t, rootfs)

		// A name outside the certificate fails verification even though
		// the same server is dialed.
		rootfs2 := filepath.Join(t.TempDir(), "rootfs")
		_, err = Pull(logtest.WithT(context.Background(), t), Request{
			Reference: "registry.other:5443/test/ep:latest",
			Registry: RegistryConfig{
				CAPEM:     [][]byte{serverCAPEM(reg)},
				Endpoints: map[string]string{"registry.other:5443": reg.host},
			},
		}, rootfs2)
		require.Error(t, err)
		t.Logf("error: %v", err)
		assert.ErrorContains(t, err, "registry registry.other:5443 (dialed "+reg.host+"): TLS handshake failed")
		assert.ErrorContains(t, err, "not registry.other: the certificate does not name the registry host")
	})
}

// TestPullThroughAgentForward pulls over an agent-channel forward: the
// dial-rewrite table maps the registry to forward.Address(0), Dial is the
// guest's forward.Dialer, and a forward.Server on a unix socket (standing
// in for the agent transport) dials the registry.
func TestPullThroughAgentForward(t *testing.T) {
	reg := startRegistry(t, false, "")
	pushSmall(t, reg, "test/fwd")
	sock := filepath.Join(t.TempDir(), "fwd.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(logtest.WithT(context.Background(), t))
	defer cancel()
	srv := &forward.Server{Endpoints: []string{reg.host}}
	go srv.Serve(ctx, l)
	var opened atomic.Int32
	d := &forward.Dialer{Open: func(ctx context.Context) (net.Conn, error) {
		opened.Add(1)
		var nd net.Dialer
		return nd.DialContext(ctx, "unix", sock)
	}}

	rootfs := filepath.Join(t.TempDir(), "rootfs")
	_, err = Pull(ctx, Request{
		Reference: reg.host + "/test/fwd:latest",
		Registry: RegistryConfig{
			Insecure:  []string{reg.host},
			Endpoints: map[string]string{reg.host: forward.Address(0)},
			Dial:      d.DialContext,
		},
	}, rootfs)
	require.NoError(t, err)
	requireHello(t, rootfs)
	require.NotZero(t, opened.Load(), "the registry was reached over the forward")

	// A forward the host does not have fails with the host's reason.
	_, err = Pull(ctx, Request{
		Reference: reg.host + "/test/fwd:latest",
		Registry: RegistryConfig{
			Insecure:  []string{reg.host},
			Endpoints: map[string]string{reg.host: forward.Address(5)},
			Dial:      d.DialContext,
		},
	}, filepath.Join(t.TempDir(), "rootfs"))
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.ErrorContains(t, err, "(dialed agent-forward/5) unreachable")
	assert.ErrorContains(t, err, "forward 5 is not configured")
}
