package shim

import (
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/initdata"
	"github.com/cofferhq/coffer/vmm"
)

const testInitData = `version = "0.1.0"
algorithm = "sha384"
[data]
"policy.rego" = "package agent_policy"
`

// TestLoadInitDataSources checks where a pod's init-data comes from, in
// order: Coffer's annotation, Kata's (gzipped), the config file, none; and
// that a malformed document fails before any VM boots.
func TestLoadInitDataSources(t *testing.T) {
	file := filepath.Join(t.TempDir(), "initdata.toml")
	require.NoError(t, os.WriteFile(file, []byte(testInitData+"# from file\n"), 0o644))
	cfg := &Config{Attestation: AttestationConfig{InitData: file}}

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(testInitData + "# kata\n"))
	require.NoError(t, zw.Close())

	plain := base64.StdEncoding.EncodeToString([]byte(testInitData))
	kata := base64.StdEncoding.EncodeToString(gz.Bytes())

	d, err := loadInitData(cfg, &specs.Spec{Annotations: map[string]string{initdata.AnnotationCoffer: plain, initdata.AnnotationKata: kata}})
	require.NoError(t, err)
	require.Equal(t, testInitData, string(d.raw))
	sum := sha512.Sum384([]byte(testInitData))
	require.Equal(t, sum[:], d.digest())

	d, err = loadInitData(cfg, &specs.Spec{Annotations: map[string]string{initdata.AnnotationKata: kata}})
	require.NoError(t, err)
	require.Equal(t, testInitData+"# kata\n", string(d.raw))

	d, err = loadInitData(cfg, &specs.Spec{})
	require.NoError(t, err)
	require.Equal(t, testInitData+"# from file\n", string(d.raw))

	d, err = loadInitData(&Config{}, &specs.Spec{})
	require.NoError(t, err)
	require.Nil(t, d.raw)
	require.Nil(t, d.digest())

	_, err = loadInitData(cfg, &specs.Spec{Annotations: map[string]string{initdata.AnnotationCoffer: "!!"}})
	require.ErrorContains(t, err, initdata.AnnotationCoffer)
	require.True(t, errdefs.IsInvalidArgument(err))
	bad := base64.StdEncoding.EncodeToString([]byte("version = \"9\"\n"))
	_, err = loadInitData(cfg, &specs.Spec{Annotations: map[string]string{initdata.AnnotationCoffer: bad}})
	require.True(t, errdefs.IsInvalidArgument(err))
}

// TestTEEConfigBindsInitData checks that the init-data digest lands in the
// TEE field each kind measures, fitted to its size.
func TestTEEConfigBindsInitData(t *testing.T) {
	doc, err := initdata.Parse([]byte(testInitData))
	require.NoError(t, err)
	id := &podInitData{raw: doc.Raw, doc: doc}
	sum := sha512.Sum384([]byte(testInitData))

	cfg := &Config{Hypervisor: HypervisorConfig{TEE: "sim"}, Attestation: AttestationConfig{SimChainDir: "/chain"}}
	tc := teeConfig(cfg, id)
	require.Equal(t, "/chain", tc.Sim.ChainDir)
	require.Equal(t, sum[:32], tc.Sim.HostData)

	cfg.Hypervisor.TEE = "snp"
	require.Equal(t, sum[:32], teeConfig(cfg, id).SNP.HostData)
	cfg.Hypervisor.TEE = "tdx"
	require.Equal(t, sum[:], teeConfig(cfg, id).TDX.MRConfigID)

	cfg.Hypervisor.TEE = "sim"
	tc = teeConfig(cfg, &podInitData{})
	require.Nil(t, tc.Sim.HostData)
	require.Equal(t, vmm.TEESim, tc.Kind)
}
