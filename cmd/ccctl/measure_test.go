package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/cofferhq/coffer/guest/build"
	"github.com/cofferhq/coffer/kbs/refvalues"
)

const (
	measureAmdSev  = "../../attestation/measure/snp/testdata/ovmf_AmdSev_suffix.bin"
	measureOvmfX64 = "../../attestation/measure/snp/testdata/ovmf_OvmfX64_suffix.bin"
	// First row of the sev-snp-measure README vectors.
	measureRow1 = "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa"
)

// runMeasure runs `ccctl measure args...` and returns stdout, stderr and
// the error.
func runMeasure(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	return runMeasureB(t, args...)
}

func runMeasureB(t testing.TB, args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	app := &cli.App{Name: "ccctl", Writer: &out, ErrWriter: &errOut, Commands: []*cli.Command{measureCommand()}}
	err := app.Run(append([]string{"ccctl", "measure"}, args...))
	return out.String(), errOut.String(), err
}

func measureLastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestMeasureSNPVectors(t *testing.T) {
	base := []string{"--tee", "snp", "--ovmf", measureAmdSev, "--vcpus", "1", "--vcpu-type", "EPYC-v4"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"row 1", []string{"--kernel", "/dev/null", "--initrd", "/dev/null", "--append", "console=ttyS0 loglevel=7"}, measureRow1},
		{"row 2", []string{"--kernel", "/dev/null", "--initrd", "/dev/null", "--append", "console=ttyS0 loglevel=7", "--guest-features", "0x21"},
			"803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"},
		{"row 3", nil, "19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d"},
		{"row 1 via --vcpu-sig and --ovmf-hash", []string{"--kernel", "/dev/null", "--initrd", "/dev/null", "--append", "console=ttyS0 loglevel=7",
			"--ovmf-hash", "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74"}, measureRow1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{}, base...), tc.args...)
			if strings.Contains(tc.name, "vcpu-sig") {
				args[len(base)-2], args[len(base)-1] = "--vcpu-sig", "0x800f12"
			}
			out, _, err := runMeasure(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			if got := measureLastLine(out); got != tc.want {
				t.Errorf("last line %q, want %q", got, tc.want)
			}
		})
	}
	out, _, err := runMeasure(t, "--tee", "snp", "--ovmf", measureOvmfX64, "--vcpus", "1", "--vcpu-type", "EPYC-v4")
	if err != nil || measureLastLine(out) != "da0296de8193586a5512078dcd719eccecbd87e2b825ad4148c44f665dc87df21e5b49e21523a9ad993afdb6a30b4005" {
		t.Errorf("row 4: %q, %v", out, err)
	}
}

// TestMeasureJSON: --json prints what `ccctl kbs reference-values add
// --from-json` parses and refvalues accepts.
func TestMeasureJSON(t *testing.T) {
	out, _, err := runMeasure(t, "--tee", "snp", "--ovmf", measureAmdSev, "--vcpus", "1", "--vcpu-type", "EPYC-v4",
		"--kernel", "/dev/null", "--initrd", "/dev/null", "--append", "console=ttyS0 loglevel=7", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var e refvalues.Entry
	d := json.NewDecoder(strings.NewReader(out))
	d.DisallowUnknownFields()
	if err := d.Decode(&e); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	if e.TEE != "snp" || e.Measurement != measureRow1 {
		t.Errorf("entry = %+v", e)
	}
	v := refvalues.Values{}
	if added, err := v.Add(e); err != nil || !added {
		t.Errorf("refvalues Add = %v, %v", added, err)
	}
}

// TestMeasureBadInputs: each error names the problem and stdout stays empty.
func TestMeasureBadInputs(t *testing.T) {
	notOVMF := filepath.Join(t.TempDir(), "kernel.bin")
	if err := os.WriteFile(notOVMF, bytes.Repeat([]byte{0x4d, 0x5a}, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	snp := func(extra ...string) []string {
		return append([]string{"--tee", "snp", "--ovmf", measureAmdSev, "--vcpus", "1", "--vcpu-type", "EPYC-v4"}, extra...)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"not an OVMF image", []string{"--tee", "snp", "--ovmf", notOVMF, "--vcpus", "1", "--vcpu-type", "EPYC"}, "not an OVMF image"},
		{"no SNP_KERNEL_HASHES", []string{"--tee", "snp", "--ovmf", measureOvmfX64, "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--kernel", "/dev/null"}, "SNP_KERNEL_HASHES"},
		{"unknown CPU type", []string{"--tee", "snp", "--ovmf", measureAmdSev, "--vcpus", "1", "--vcpu-type", "Pentium"}, `unknown vCPU type "Pentium"`},
		{"zero vCPUs", []string{"--tee", "snp", "--ovmf", measureAmdSev, "--vcpus", "0", "--vcpu-type", "EPYC"}, "--vcpus 0"},
		{"no vCPU type", []string{"--tee", "snp", "--ovmf", measureAmdSev, "--vcpus", "1"}, "--vcpu-type"},
		{"both vCPU type and sig", snp("--vcpu-sig", "0x800f12"), "not both"},
		{"bad ovmf hash", snp("--ovmf-hash", "abcd"), "--ovmf-hash"},
		{"bad guest features", snp("--guest-features", "zz"), "--guest-features"},
		{"ec2", snp("--vmm", "ec2"), `--vmm "ec2"`},
		{"append without kernel", snp("--append", "quiet"), "need --kernel"},
		{"missing kernel", snp("--kernel", "/nonexistent/vmlinuz"), "/nonexistent/vmlinuz"},
		{"no ovmf", []string{"--tee", "snp", "--vcpus", "1", "--vcpu-type", "EPYC"}, "--ovmf FILE is required"},
		{"tdx not a TDVF", []string{"--tee", "tdx", "--tdvf", measureAmdSev}, "TDX metadata"},
		{"bad tee", []string{"--tee", "sgx"}, `"sgx"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runMeasure(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
			if out != "" {
				t.Errorf("stdout = %q, want nothing", out)
			}
		})
	}
}

// TestMeasureGuestSim: --guest reads the manifest's kernel, initrd and
// cmdline; --append overrides the cmdline; a file that changed since the
// build is refused.
func TestMeasureGuestSim(t *testing.T) {
	dir := t.TempDir()
	writeGuest(t, dir, "kernel bytes", "initrd bytes", "console=ttyS0 quiet")
	want, err := sim.MeasureFiles(filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img"), "console=ttyS0 quiet")
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := runMeasure(t, "--tee", "sim", "--guest", dir)
	if err != nil || measureLastLine(out) != hex.EncodeToString(want[:]) {
		t.Errorf("measure --guest: %q, %v; want %x", out, err, want)
	}
	override, _ := sim.MeasureFiles(filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img"), "console=hvc0")
	out, _, err = runMeasure(t, "--tee", "sim", "--guest", dir, "--append", "console=hvc0")
	if err != nil || measureLastLine(out) != hex.EncodeToString(override[:]) {
		t.Errorf("measure --guest --append: %q, %v; want %x", out, err, override)
	}
	if err := os.WriteFile(filepath.Join(dir, "initrd.img"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err = runMeasure(t, "--tee", "sim", "--guest", dir)
	if err == nil || !strings.Contains(err.Error(), "initrd") || out != "" {
		t.Errorf("tampered initrd: %q, %v; want an error naming the initrd", out, err)
	}
}

// TestMeasureGuestSNP: --guest with --ovmf equals giving the files by hand.
func TestMeasureGuestSNP(t *testing.T) {
	dir := t.TempDir()
	writeGuest(t, dir, "", "", "console=ttyS0 loglevel=7")
	out, _, err := runMeasure(t, "--tee", "snp", "--guest", dir, "--ovmf", measureAmdSev, "--vcpus", "1", "--vcpu-type", "EPYC-v4")
	if err != nil || measureLastLine(out) != measureRow1 {
		t.Errorf("measure --guest (empty kernel and initrd): %q, %v; want row 1 %s", out, err, measureRow1)
	}
}

// writeGuest writes vmlinuz, initrd.img and manifest.json into dir.
func writeGuest(t *testing.T, dir, kernel, initrd, cmdline string) {
	t.Helper()
	writeGuestBytes(t, dir, []byte(kernel), []byte(initrd), cmdline)
}

func writeGuestBytes(t testing.TB, dir string, kernel, initrd []byte, cmdline string) {
	t.Helper()
	m := build.Manifest{Cmdline: cmdline}
	for _, f := range []struct {
		name string
		body []byte
		art  *build.Artifact
	}{{"vmlinuz", kernel, &m.Kernel}, {"initrd.img", initrd, &m.Initrd}} {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, f.body, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(f.body)
		*f.art = build.Artifact{Path: f.name, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(f.body))}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, build.ManifestFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}
