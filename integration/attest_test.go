package integration

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/cofferhq/coffer/integration/harness"
	"github.com/cofferhq/coffer/kbs/adminclient"
)

// attestDeadline is the shim's attestation.deadline in these tests.
const attestDeadline = 15 * time.Second

// attestedEnv is an env whose shim boots sim-TEE guests that attest to a
// real cc-kbs on 127.0.0.1 before pulling.
type attestedEnv struct {
	*env
	kbs *harness.KBS
	// measurement is the sim launch measurement of the built guest with
	// its default command line, lower-case hex.
	measurement string
}

// newAttestedEnv starts a cc-kbs, a registry and a containerd whose shim
// config selects the sim TEE with the KBS's chain. extra is appended to
// the shim config (it must not repeat [hypervisor] or [attestation]).
// When trust is true the guest's measurement is a KBS reference value.
func newAttestedEnv(t *testing.T, budget time.Duration, extra string, trust bool) *attestedEnv {
	t.Helper()
	return newAttestedEnvNetwork(t, budget, extra, trust, "")
}

// newAttestedEnvNetwork is newAttestedEnv with network.mode set to mode
// (see newEnvNetwork).
func newAttestedEnvNetwork(t *testing.T, budget time.Duration, extra string, trust bool, mode string) *attestedEnv {
	t.Helper()
	skipOnCloudHypervisor(t, "the sim TEE reaches the guest through QEMU fw_cfg items")
	kbs := harness.StartKBS(t)
	body := simTEEConfig(kbs.SimChainDir(), attestDeadline) + extra
	a := &attestedEnv{env: newEnvNetwork(t, budget, body, mode, []string{kbs.Addr()}), kbs: kbs, measurement: guestMeasurement(t, "")}
	if trust {
		kbs.TrustMeasurement(t, "sim", a.measurement)
	}
	return a
}

// guestMeasurement computes the sim launch measurement of build/guest
// booted with cmdline ("" means the guest build's default), the value a
// KBS reference value must hold.
func guestMeasurement(t *testing.T, cmdline string) string {
	t.Helper()
	dir, err := harness.GuestDir()
	require.NoError(t, err)
	if cmdline == "" {
		cmdline = guestCmdline(t)
	}
	m, err := sim.MeasureFiles(filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img"), cmdline)
	require.NoError(t, err)
	return hex.EncodeToString(m[:])
}

// guestCmdline is the guest build's default kernel command line.
func guestCmdline(t *testing.T) string {
	t.Helper()
	dir, err := harness.GuestDir()
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	require.NoError(t, err)
	var m struct{ Cmdline string }
	require.NoError(t, json.Unmarshal(b, &m))
	require.NotEmpty(t, m.Cmdline)
	return m.Cmdline
}

// initData returns init-data pointing the guest at this env's KBS, with
// the allow-all agent policy unless policy is given.
func (a *attestedEnv) initData(policyURI string) harness.InitData {
	return harness.InitData{
		KBSURL:         a.kbs.URL(),
		KBSCertPEM:     string(a.kbs.CertPEM()),
		ImagePolicyURI: policyURI,
		Policy:         harness.Policy(a.t, "allow-all.rego"),
	}
}

// ccctl runs build/bin/ccctl with args and returns its stdout.
func (a *attestedEnv) ccctl(args ...string) string {
	a.t.Helper()
	out, err := harness.Ccctl(a.ctx, args...)
	require.NoError(a.t, err, "ccctl %s", strings.Join(args, " "))
	return out
}

// attestationPhases returns the phases of the /cc/attestation events the
// watcher collected for container id, in order.
func attestationPhases(w *harness.EventWatcher, id string) []string {
	var phases []string
	for _, ev := range w.Events() {
		if ev.Topic == "/cc/attestation" && ev.Payload.ContainerID == id {
			phases = append(phases, ev.Payload.Phase)
		}
	}
	return phases
}

// TestAttestedEncryptedSignedImage runs the whole confidential path: the
// guest attests (sim TEE) to cc-kbs, fetches the image security policy,
// verifies the cosign signature, decrypts the layers with a key only the
// KBS holds, unseals a sealed environment variable, and the workload reads
// a secret through the in-guest CDH endpoint. The /cc/attestation events
// arrive in order.
func TestAttestedEncryptedSignedImage(t *testing.T) {
	a := newAttestedEnv(t, longTest, "", true)
	dir := t.TempDir()
	plain := a.busybox()
	enc := a.reg.Addr() + "/secure/busybox:enc"

	// Encrypt with a key registered in the KBS, then sign the result.
	a.ccctl("image", "encrypt", "--kbs", a.kbs.URL(), "--kbs-cert", a.kbs.CertFile(), "--admin-key", a.kbs.AdminKeyFile(),
		"--key-id", "kbs:///default/key/busybox", "--insecure-registry", plain, enc)
	signKey := filepath.Join(dir, "cosign.key")
	a.ccctl("image", "sign", "--generate-key", signKey)
	a.ccctl("image", "sign", "--key", signKey, "--insecure-registry", enc)
	pub, err := os.ReadFile(signKey + ".pub")
	require.NoError(t, err)
	a.kbs.SetResource(t, "default/security-policy/test", signedOnlyPolicy(a.reg.Addr()+"/secure/busybox", pub))

	// A sealed secret whose value and verification key live in the KBS.
	sealKey := filepath.Join(dir, "seal.key")
	a.ccctl("secret", "seal", "--generate-key", sealKey, "--kid", "kbs:///default/sealed-key/k1")
	jwk, err := os.ReadFile(sealKey + ".jwk")
	require.NoError(t, err)
	a.kbs.SetResource(t, "default/sealed-key/k1", jwk)
	a.kbs.SetResource(t, "default/sealed-secret/db", []byte("db-password-42"))
	sealedValue := strings.TrimSpace(a.ccctl("secret", "seal", "--resource", "kbs:///default/sealed-secret/db", "--key", sealKey, "--kid", "kbs:///default/sealed-key/k1"))
	a.kbs.SetResource(t, "default/app/token", []byte("workload-token-7"))

	require.NoError(t, harness.ImagePullCC(a.ctx, a.ctd, enc))
	w := a.ctd.WatchEvents(a.ctx, t)
	id := newID("attested")
	out, err := a.run([]string{"--rm", "--annotation", "io.coffer.cc.init-data=" + a.initData("kbs:///default/security-policy/test").Annotation(),
		"--env", "DB_PASSWORD=" + sealedValue}, enc, id,
		"sh", "-c", `echo "env=$DB_PASSWORD"; echo "cdh=$(wget -qO- http://127.0.0.1:8006/cdh/resource/default/app/token)"`)
	require.NoError(t, err)
	require.Contains(t, out, "env=db-password-42")
	require.Contains(t, out, "cdh=workload-token-7")

	_, err = w.WaitFor(a.ctx, eventWait, func(ev harness.Event) bool { return ev.Topic == "/tasks/delete" && ev.Payload.ContainerID == id })
	require.NoError(t, err)
	// `ccctl measure --tee sim --guest` computes, from the guest build's
	// files, exactly what the running sim guest reported.
	guestDir, err := harness.GuestDir()
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(a.ccctl("measure", "--tee", "sim", "--guest", guestDir)), "\n")
	measured := lines[len(lines)-1]

	phases := attestationPhases(w, id)
	require.GreaterOrEqual(t, len(phases), 4, "phases: %v", phases)
	require.Equal(t, []string{"evidence", "verifying", "allowed"}, phases[:3])
	require.Contains(t, phases[3:], "keys-released")
	for _, ev := range w.Events() {
		if ev.Topic == "/cc/attestation" && ev.Payload.Phase == "allowed" {
			require.Equal(t, "sim", ev.Payload.TEE)
			require.Equal(t, a.measurement, ev.Payload.Measurement)
			require.Equal(t, measured, ev.Payload.Measurement, "ccctl measure --tee sim --guest must equal the running guest's report")
			require.Equal(t, a.kbs.URL(), ev.Payload.KBSURL)
		}
	}
}

// signedOnlyPolicy is a containers-policy.json that rejects everything but
// repo, which must carry a cosign signature by the PEM public key pub.
func signedOnlyPolicy(repo string, pub []byte) []byte {
	b, _ := json.Marshal(map[string]any{
		"default": []any{map[string]string{"type": "reject"}},
		"transports": map[string]any{"docker": map[string]any{
			repo: []any{map[string]any{"type": "sigstoreSigned", "keyData": base64.StdEncoding.EncodeToString(pub),
				"signedIdentity": map[string]string{"type": "matchRepository"}}},
		}},
	})
	return b
}

// TestAttestationDeniedMeasurement boots a guest whose kernel command line
// differs from the one the KBS trusts: the create fails promptly with the
// KBS's reason naming the measurement, in the error and in a denied event,
// and no layer is pulled.
func TestAttestationDeniedMeasurement(t *testing.T) {
	kbs := harness.StartKBS(t)
	kbs.TrustMeasurement(t, "sim", guestMeasurement(t, ""))
	body := fmt.Sprintf("[hypervisor]\ntee = \"sim\"\nkernel_cmdline = %q\n\n[attestation]\nsim_chain_dir = %q\ndeadline = %q\n",
		guestCmdline(t)+" coffer.test=altered", kbs.SimChainDir(), attestDeadline.String())
	e := newEnvWith(t, shortTest, body, []string{kbs.Addr()})
	a := &attestedEnv{env: e, kbs: kbs}
	ref := e.busybox()
	w := e.ctd.WatchEvents(e.ctx, t)
	id := newID("denied")
	start := time.Now()
	_, err := e.run([]string{"--rm", "--annotation", "io.coffer.cc.init-data=" + a.initData("").Annotation()}, ref, id, "true")
	var ce *harness.CtrError
	require.ErrorAs(t, err, &ce)
	t.Logf("denied: %s", ce.Stderr)
	require.Contains(t, ce.Stderr, "denied")
	require.Contains(t, ce.Stderr, "measurement")
	require.Less(t, time.Since(start), attestDeadline+time.Minute, "a denial must not wait for a generic timeout")
	ev, err := w.WaitFor(e.ctx, eventWait, func(ev harness.Event) bool {
		return ev.Topic == "/cc/attestation" && ev.Payload.Phase == "denied"
	})
	require.NoError(t, err)
	require.Contains(t, ev.Payload.Reason, "measurement")
	require.NotContains(t, attestationPhases(w, id), "keys-released")
}

// TestInitDataTamperedByHost launches the VM with the digest of one
// init-data but hands the guest another, as a malicious host would (a
// QEMU wrapper rewrites the sim HOST_DATA): the guest refuses it.
func TestInitDataTamperedByHost(t *testing.T) {
	kbs := harness.StartKBS(t)
	wrapper := filepath.Join(t.TempDir(), "qemu-tamper")
	script := `#!/bin/sh
# Replace the launch-bound init-data digest (sim HOST_DATA) with another.
n=0
for a in "$@"; do
  case "$a" in
    name=opt/cc/sim-host-data,string=*) a="name=opt/cc/sim-host-data,string=$(printf 'ff%.0s' $(seq 32))" ;;
  esac
  set -- "$@" "$a"; n=$((n+1))
done
shift $n
exec qemu-system-x86_64 "$@"
`
	require.NoError(t, os.WriteFile(wrapper, []byte(script), 0o755))
	body := fmt.Sprintf("[hypervisor]\ntee = \"sim\"\nbinary = %q\n\n[attestation]\nsim_chain_dir = %q\ndeadline = %q\n",
		wrapper, kbs.SimChainDir(), attestDeadline.String())
	e := newEnvWith(t, shortTest, body, []string{kbs.Addr()})
	a := &attestedEnv{env: e, kbs: kbs}
	ref := e.busybox()
	_, err := e.run([]string{"--rm", "--annotation", "io.coffer.cc.init-data=" + a.initData("").Annotation()}, ref, newID("tamper"), "true")
	var ce *harness.CtrError
	require.ErrorAs(t, err, &ce)
	require.Contains(t, ce.Stderr, "init-data")
	t.Logf("tampered: %s", ce.Stderr)
	require.Contains(t, ce.Stderr, "does not match the launch-bound digest")
}

// TestAttestationKBSDown stops the KBS: the guest retries, one failed
// event per attempt, then the create fails at the deadline naming the
// KBS, and nothing is left running.
func TestAttestationKBSDown(t *testing.T) {
	a := newAttestedEnv(t, shortTest, "", true)
	ref := a.busybox()
	a.kbs.Stop()
	vmDirsBefore, err := harness.VMStateDirs()
	require.NoError(t, err)
	w := a.ctd.WatchEvents(a.ctx, t)
	id := newID("kbsdown")
	_, err = a.run([]string{"--rm", "--annotation", "io.coffer.cc.init-data=" + a.initData("").Annotation()}, ref, id, "true")
	var ce *harness.CtrError
	require.ErrorAs(t, err, &ce)
	t.Logf("KBS down: %s", ce.Stderr)
	require.Contains(t, ce.Stderr, "KBS unreachable at "+a.kbs.URL())
	failed := 0
	for _, p := range attestationPhases(w, id) {
		if p == "failed" {
			failed++
		}
	}
	require.GreaterOrEqual(t, failed, 2, "want one failed event per attempt: %v", attestationPhases(w, id))
	requireHostClean(t, a.env, vmDirsBefore)
	require.Eventually(t, func() bool { return len(harness.LiveQEMU(id)) == 0 }, goneWithin, 200*time.Millisecond)
}

// TestEncryptedImageKeyProblems runs an encrypted image whose key the KBS
// no longer releases, and one whose stored key is wrong: each fails with
// a clear decrypt error.
func TestEncryptedImageKeyProblems(t *testing.T) {
	a := newAttestedEnv(t, longTest, "", true)
	plain := a.busybox()
	enc := a.reg.Addr() + "/secure/busybox:enc"
	a.ccctl("image", "encrypt", "--kbs", a.kbs.URL(), "--kbs-cert", a.kbs.CertFile(), "--admin-key", a.kbs.AdminKeyFile(),
		"--key-id", "kbs:///default/key/k2", "--insecure-registry", plain, enc)
	require.NoError(t, harness.ImagePullCC(a.ctx, a.ctd, enc))
	ann := "io.coffer.cc.init-data=" + a.initData("").Annotation()

	// The resource policy withholds the key: "not released".
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	defer cancel()
	_, err := a.kbs.Admin().SetPolicy(ctx, adminclient.KindResourcePolicy, []byte(`package policy
import rego.v1
default allow := false
allow if {
	input.request.plugin == "resource"
	input.claims.submods.cpu0["ear.status"] == "affirming"
	input.request.type != "key"
}
reasons contains "keys are withheld by this test's resource policy" if input.request.type == "key"
`))
	require.NoError(t, err)
	_, err = a.run([]string{"--rm", "--annotation", ann}, enc, newID("withheld"), "true")
	var ce *harness.CtrError
	require.ErrorAs(t, err, &ce)
	t.Logf("key withheld: %s", ce.Stderr)
	require.Contains(t, ce.Stderr, "kbs:///default/key/k2")
	require.Contains(t, ce.Stderr, "denied")

	// The KBS releases a key, but not the one the layers were wrapped with.
	_, err = a.kbs.Admin().SetPolicy(ctx, adminclient.KindResourcePolicy, harness.DefaultResourcePolicy(t))
	require.NoError(t, err)
	a.kbs.SetResource(t, "default/key/k2", []byte(strings.Repeat("k", 32)))
	_, err = a.run([]string{"--rm", "--annotation", ann}, enc, newID("wrongkey"), "true")
	require.ErrorAs(t, err, &ce)
	t.Logf("wrong key: %s", ce.Stderr)
	require.Contains(t, ce.Stderr, "wrong key for layer")
}

// TestImageSignaturePolicy checks the sigstoreSigned policy: an unsigned
// image and an image signed by another key are both refused.
func TestImageSignaturePolicy(t *testing.T) {
	a := newAttestedEnv(t, longTest, "", true)
	dir := t.TempDir()
	plain := a.busybox()
	trusted, other := filepath.Join(dir, "trusted.key"), filepath.Join(dir, "other.key")
	a.ccctl("image", "sign", "--generate-key", trusted)
	a.ccctl("image", "sign", "--generate-key", other)
	pub, err := os.ReadFile(trusted + ".pub")
	require.NoError(t, err)
	repo := a.reg.Addr() + "/busybox"
	a.kbs.SetResource(t, "default/security-policy/test", signedOnlyPolicy(repo, pub))
	ann := "io.coffer.cc.init-data=" + a.initData("kbs:///default/security-policy/test").Annotation()

	_, err = a.run([]string{"--rm", "--annotation", ann}, plain, newID("unsigned"), "true")
	var ce *harness.CtrError
	require.ErrorAs(t, err, &ce)
	require.Contains(t, ce.Stderr, "no signature for")

	a.ccctl("image", "sign", "--key", other, "--insecure-registry", plain)
	_, err = a.run([]string{"--rm", "--annotation", ann}, plain, newID("otherkey"), "true")
	require.ErrorAs(t, err, &ce)
	require.Contains(t, ce.Stderr, "not by any trusted key")
}

// TestConfidentialGuestNeedsKBSBeforePull runs a sim-TEE guest whose
// init-data names no KBS: the confidential runtime's default is to attest
// before any pull, so the create fails before anything is fetched.
func TestConfidentialGuestNeedsKBSBeforePull(t *testing.T) {
	a := newAttestedEnv(t, shortTest, "", true)
	ref := a.busybox()
	noKBS := harness.InitData{Policy: harness.Policy(t, "allow-all.rego")}
	_, err := a.run([]string{"--rm", "--annotation", "io.coffer.cc.init-data=" + noKBS.Annotation()}, ref, newID("nokbs"), "true")
	var ce *harness.CtrError
	require.ErrorAs(t, err, &ce)
	t.Logf("no KBS: %s", ce.Stderr)
	require.Contains(t, ce.Stderr, "attestation is required but the init-data names no KBS")
}
