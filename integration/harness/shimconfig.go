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
// shim's default. Under COFFER_VMM=cloud-hypervisor the body is rewritten
// with hypervisor.vmm = "cloud-hypervisor" and, unless it sets one,
// network.mode = "none", so that network.forwards go over the agent's
// hybrid vsock. Once the shim's config type settles, a typed variant
// should marshal that type instead.
func ShimConfig(t testing.TB, body string) string {
	t.Helper()
	var parsed map[string]any
	if err := toml.Unmarshal([]byte(body), &parsed); err != nil {
		t.Fatalf("parse shim config body as TOML: %v\nbody:\n%s", err, body)
	}
	if v := VMM(); v != "qemu" {
		// Run the same test on another VMM: set hypervisor.vmm, keeping
		// everything else the body says. Cloud Hypervisor has no user-mode
		// network, so the default network.mode becomes "none": forwards
		// then reach the host over the agent's hybrid vsock.
		h, _ := parsed["hypervisor"].(map[string]any)
		if h == nil {
			h = map[string]any{}
		}
		h["vmm"] = v
		parsed["hypervisor"] = h
		n, _ := parsed["network"].(map[string]any)
		if n == nil {
			n = map[string]any{}
		}
		if _, set := n["mode"]; !set {
			n["mode"] = "none"
		}
		parsed["network"] = n
		b, err := toml.Marshal(parsed)
		if err != nil {
			t.Fatalf("set hypervisor.vmm = %q in the shim config: %v", v, err)
		}
		body = string(b)
	}
	path := filepath.Join(t.TempDir(), "shim-config.toml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatalf("write shim config: %v", err)
	}
	return path
}

// EnvVMM names the environment variable choosing the VMM the end-to-end
// tests run on: "qemu" (default) or "cloud-hypervisor" (`make
// test-integration VMM=cloud-hypervisor`).
const EnvVMM = "COFFER_VMM"

// VMM is the VMM the end-to-end tests run on ($COFFER_VMM, default
// "qemu").
func VMM() string {
	if v := os.Getenv(EnvVMM); v != "" {
		return v
	}
	return "qemu"
}
