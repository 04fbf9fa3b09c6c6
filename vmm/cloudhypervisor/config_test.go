package cloudhypervisor

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite testdata/*.json from the current VMConfig output")

// TestVMConfigGolden compares each vm.create body with testdata/<name>.json,
// with the per-test state directory replaced by STATEDIR.
func TestVMConfigGolden(t *testing.T) {
	for name, cfg := range teeConfigs(t) {
		t.Run(name, func(t *testing.T) {
			b, err := json.MarshalIndent(cfg.VMConfig(), "", "  ")
			require.NoError(t, err)
			got := append(bytes.ReplaceAll(b, []byte(cfg.StateDir), []byte("STATEDIR")), '\n')
			golden := filepath.Join("testdata", name+".json")
			if *update {
				require.NoError(t, os.WriteFile(golden, got, 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test -update to create it")
			require.Equal(t, string(want), string(got))
			require.False(t, strings.Contains(string(got), "qemu"), "no QEMU settings leak into the request")
		})
	}
}
