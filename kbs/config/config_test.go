package config

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	kbsconfig "github.com/cofferhq/coffer/configs/kbs"
)

func write(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "cc-kbs.toml")
	require.NoError(t, os.WriteFile(p, []byte(s), 0o600))
	return p
}

// TestExampleIsDefault: the shipped example documents exactly the defaults.
func TestExampleIsDefault(t *testing.T) {
	c, err := Load(write(t, kbsconfig.ExampleConfig))
	require.NoError(t, err)
	require.Equal(t, Default(), c)
	d, err := Load("")
	require.NoError(t, err)
	require.Equal(t, Default(), d)
}

func TestLoadOverrides(t *testing.T) {
	c, err := Load(write(t, `
listen = "127.0.0.1:9443"
data_dir = "/srv/kbs"
[session]
ttl = "90s"
[tee.snp]
min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }
product = "Genoa"
revocation = "required"
[tee.tdx]
min_tee_tcb_svn = "0300000000000000000000000000000A"
[tee.sim]
root_pem = "/etc/cc-kbs/sim-root.pem"
[runtime]
gc_percent = 200
memory_limit_mib = 512
`))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:9443", c.Listen)
	require.Equal(t, 90*time.Second, time.Duration(c.Session.TTL))
	require.Equal(t, TCB{Bootloader: 3, SNP: 8, Microcode: 115}, c.TEE.SNP.MinTCB)
	require.Equal(t, RevocationRequired, c.TEE.SNP.Revocation)
	require.Equal(t, "0300000000000000000000000000000a", c.TEE.TDX.MinTeeTCBSVN)
	require.Equal(t, Runtime{GCPercent: 200, MemoryLimitMiB: 512}, c.Runtime)
	require.Equal(t, "/srv/kbs/kbs.db", c.DBPath())
	cert, key, gen := c.TLSPaths()
	require.True(t, gen)
	require.Equal(t, "/srv/kbs/tls.crt", cert)
	require.Equal(t, "/srv/kbs/tls.key", key)
}

func TestLoadRejects(t *testing.T) {
	for name, s := range map[string]string{
		"unknown key":    "listne = \"x\"\n",
		"unknown table":  "[tee.sgx]\nenabled = true\n",
		"bad listen":     "listen = \"8080\"\n",
		"relative dir":   "data_dir = \"kbs\"\n",
		"bad duration":   "[session]\nttl = \"5 minutes\"\n",
		"tiny body":      "max_body_bytes = 10\n",
		"half tls":       "[tls]\ncert = \"/x.crt\"\n",
		"bad svn":        "[tee.tdx]\nmin_tee_tcb_svn = \"zz\"\n",
		"bad product":    "[tee.snp]\nproduct = \"Naples\"\n",
		"bad revocation": "[tee.snp]\nrevocation = \"sometimes\"\n",
		"no tee":         "[tee.snp]\nenabled = false\n[tee.tdx]\nenabled = false\n",
		"tcb range":      "[tee.snp]\nmin_tcb = { bootloader = 300 }\n",
		"insecure knob":  "insecure_http = true\n",
		"gc off":         "[runtime]\ngc_percent = -1\n",
		"gc huge":        "[runtime]\ngc_percent = 100000\n",
		"negative limit": "[runtime]\nmemory_limit_mib = -1\n",
	} {
		_, err := Load(write(t, s))
		require.Error(t, err, name)
	}
	_, err := Load(write(t, "[tee.snp]\nrevocation = \"sometimes\"\n"))
	require.ErrorContains(t, err, `: tee.snp.revocation "sometimes": want "if-available", "required" or "off"`)
	_, err = Load(filepath.Join(t.TempDir(), "missing.toml"))
	require.Error(t, err)
}

// TestRuntimeApply: Apply sets the collector target and the soft memory
// limit, and leaves each alone when its environment variable is set.
func TestRuntimeApply(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))

	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	Runtime{GCPercent: 250, MemoryLimitMiB: 64}.Apply()
	require.Equal(t, 250, debug.SetGCPercent(100))
	require.Equal(t, int64(64<<20), debug.SetMemoryLimit(math.MaxInt64))

	t.Setenv("GOGC", "100")
	t.Setenv("GOMEMLIMIT", "1GiB")
	Runtime{GCPercent: 250, MemoryLimitMiB: 64}.Apply()
	require.Equal(t, 100, debug.SetGCPercent(100))
	require.Equal(t, int64(math.MaxInt64), debug.SetMemoryLimit(-1))
}
