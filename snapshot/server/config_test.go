package server_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/snapshot/server"
)

func TestShippedConfigIsTheDefault(t *testing.T) {
	cfg, err := server.LoadConfig(filepath.Join(repoRoot(t), "configs", "snapshotter", "cc-snapshotter.toml"))
	require.NoError(t, err)
	assert.Equal(t, server.DefaultConfig(), cfg)
	assert.Equal(t, server.Config{RootPath: "/var/lib/coffer/snapshotter", Address: "/run/coffer/snapshotter.sock", LogLevel: "info"}, cfg)
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "c.toml")
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}

	cfg, err := server.LoadConfig(write(`root_path = "/srv/cc"` + "\n"))
	require.NoError(t, err)
	assert.Equal(t, "/srv/cc", cfg.RootPath)
	assert.Equal(t, server.DefaultAddress, cfg.Address, "unset keys keep their defaults")
	assert.Equal(t, server.DefaultLogLevel, cfg.LogLevel)

	_, err = server.LoadConfig(filepath.Join(dir, "missing.toml"))
	assert.True(t, errors.Is(err, fs.ErrNotExist), "got %v", err)

	for _, tc := range []struct{ body, want string }{
		{"root = \"/x\"\n", "unknown key(s) root"},
		{"[snapshotter]\naddress = \"/x\"\n", "unknown key(s) snapshotter"},
		{"root_path = \"relative\"\n", `root_path "relative" is not an absolute path`},
		{"address = \"sock\"\n", `address "sock" is not an absolute socket path`},
		{"address = \"/" + strings.Repeat("a", 120) + "\"\n", "a unix socket path can have at most 107"},
		{"log_level = \"loud\"\n", `log_level "loud"`},
		{"root_path = 3\n", "parse cc-snapshotter config"},
	} {
		_, err := server.LoadConfig(write(tc.body))
		require.Error(t, err, tc.body)
		assert.Contains(t, err.Error(), tc.want)
	}
}
