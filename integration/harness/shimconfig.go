package harness

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// ShimConfig writes body to a fresh file <t.TempDir()>/shim-config.toml and
// returns its path, to pass as `ctr run --runtime-config-path <path>` (ctr
// sends it to the shim as runtimeoptions.Options.ConfigPath) or as
// ContainerdOptions.ShimConfigPath (CRI runtime "cc").
//
// The shim's config format is not final, so this takes the raw TOML body
// rather than a typed struct; the only check is that body parses as TOML
// (the test fails otherwise), so a typo fails here and not as a confusing
// shim error. An empty body is valid and leaves every setting at the
// shim's default. Once the shim's config type settles, a typed variant
// should marshal that type instead.
func ShimConfig(t testing.TB, body string) string {
	t.Helper()
	var parsed map[string]any
	if err := toml.Unmarshal([]byte(body), &parsed); err != nil {
		t.Fatalf("parse shim config body as TOML: %v\nbody:\n%s", err, body)
	}
	path := filepath.Join(t.TempDir(), "shim-config.toml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatalf("write shim config: %v", err)
	}
	return path
}
