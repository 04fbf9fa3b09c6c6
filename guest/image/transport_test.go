package image

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/containerd/log/logtest"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestListed(t *testing.T) {
	list := []string{"reg.local:5000", "plain.local"}
	for host, want := range map[string]bool{
		"reg.local:5000":   true,
		"reg.local:5001":   false, // the port is part of the entry
		"reg.local":        false,
		"plain.local":      true,
		"plain.local:8080": true, // an entry without a port matches any port
		"other:5000":       false,
	} {
		assert.Equal(t, want, listed(list, host), host)
	}
}

func TestEndpoint(t *testing.T) {
	tr, err := newRegistryTransport(RegistryConfig{Endpoints: map[string]string{
		"reg.local:5000": "10.0.2.100:5000",
		"any.local":      "10.0.2.101:443",
	}})
	require.NoError(t, err)
	for addr, want := range map[string]string{
		"reg.local:5000": "10.0.2.100:5000",
		"reg.local:443":  "reg.local:443", // not listed: dialed as is
		"any.local:443":  "10.0.2.101:443",
		"any.local:80":   "10.0.2.101:443",
	} {
		assert.Equal(t, want, tr.endpoint(addr), addr)
	}
}

func TestPullCancelled(t *testing.T) {
	reg := startRegistry(t, false, "")
	ref := reg.host + "/test/cancel:latest"
	reg.push(t, ref, imageOf(t, "amd64", newLayer(t, types.OCILayer, tarOf(t, file("f", 0o644, "x")))))
	ctx, cancel := context.WithCancel(logtest.WithT(context.Background(), t))
	cancel()
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	_, err := Pull(ctx, Request{Reference: ref, Registry: RegistryConfig{Insecure: []string{reg.host}}}, rootfs)
	require.ErrorIs(t, err, context.Canceled)
	requireEmptyDir(t, rootfs)
}
