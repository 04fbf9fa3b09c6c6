package harness

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// InitData describes a CoCo init-data document (version 0.1.0,
// sha384) for a test pod.
type InitData struct {
	// KBSURL and KBSCertPEM fill aa.toml [token_configs.kbs] and cdh.toml
	// [kbc]; empty KBSURL writes neither.
	KBSURL     string
	KBSCertPEM string
	// ImagePolicyURI is cdh.toml [image] image_security_policy_uri.
	ImagePolicyURI string
	// Policy is the agent policy (data["policy.rego"]); "" omits it.
	Policy string
}

// TOML renders the document. go-toml writes the embedded files as
// strings, so the digest is over exactly these bytes.
func (d InitData) TOML() []byte {
	data := map[string]string{}
	if d.KBSURL != "" {
		aa, _ := toml.Marshal(map[string]any{"token_configs": map[string]any{"kbs": map[string]string{"url": d.KBSURL, "cert": d.KBSCertPEM}}})
		data["aa.toml"] = string(aa)
		cdh := map[string]any{"kbc": map[string]string{"name": "cc_kbc", "url": d.KBSURL, "kbs_cert": d.KBSCertPEM}}
		if d.ImagePolicyURI != "" {
			cdh["image"] = map[string]string{"image_security_policy_uri": d.ImagePolicyURI}
		}
		b, _ := toml.Marshal(cdh)
		data["cdh.toml"] = string(b)
	}
	if d.Policy != "" {
		data["policy.rego"] = d.Policy
	}
	b, err := toml.Marshal(map[string]any{"version": "0.1.0", "algorithm": "sha384", "data": data})
	if err != nil {
		panic(fmt.Sprintf("marshal init-data: %v", err))
	}
	return b
}

// Annotation returns the io.coffer.cc.init-data annotation value
// (standard base64 of the TOML).
func (d InitData) Annotation() string { return base64.StdEncoding.EncodeToString(d.TOML()) }

// WriteInitData writes d to a fresh file in t.TempDir() for the shim's
// attestation.init_data and returns its path.
func WriteInitData(t testing.TB, d InitData) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "initdata.toml")
	if err := os.WriteFile(p, d.TOML(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Policy reads configs/policy/<name> (e.g. "allow-all.rego") from the
// repository, failing the test if it cannot.
func Policy(t testing.TB, name string) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "configs", "policy", name))
	if err != nil {
		t.Fatalf("read agent policy: %v", err)
	}
	return strings.TrimSpace(string(b)) + "\n"
}
