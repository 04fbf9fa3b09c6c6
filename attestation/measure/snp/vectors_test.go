package snp

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/attestation/measure/ovmf"
)

// epycV4 is the README's common vCPU type: family 23, model 1, stepping 2.
const epycV4 = 0x800f12

func loadImage(t testing.TB, name string) *ovmf.Image {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	img, err := ovmf.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func hexDigest(t testing.TB, s string) [DigestSize]byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != DigestSize {
		t.Fatalf("bad digest %q", s)
	}
	return [DigestSize]byte(b)
}

// emptyFileHashes are the hashes of kernel=/dev/null, initrd=/dev/null and
// the given append string, computed from real files as the CLI does.
func emptyFileHashes(t *testing.T, cmdline string) *KernelHashes {
	t.Helper()
	h, err := HashKernelFiles("/dev/null", "/dev/null", cmdline)
	if err != nil {
		t.Fatal(err)
	}
	return &h
}

// TestReadmeVectors reproduces every row of
// /work/shared/testdata/sev-snp-measure/README.md exactly.
func TestReadmeVectors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		firmware string
		kernel   bool
		features uint64
		want     string
	}{
		{"AmdSev/devnull/append/0x1", "ovmf_AmdSev_suffix.bin", true, 0x1,
			"6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa"},
		{"AmdSev/devnull/append/0x21", "ovmf_AmdSev_suffix.bin", true, 0x21,
			"803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"},
		{"AmdSev/none/0x1", "ovmf_AmdSev_suffix.bin", false, 0x1,
			"19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d"},
		{"OvmfX64/none/0x1", "ovmf_OvmfX64_suffix.bin", false, 0x1,
			"da0296de8193586a5512078dcd719eccecbd87e2b825ad4148c44f665dc87df21e5b49e21523a9ad993afdb6a30b4005"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := loadImage(t, tc.firmware)
			sig, err := LookupCPU("EPYC-v4")
			if err != nil {
				t.Fatal(err)
			}
			opts := Options{VCPUs: 1, Signature: sig, GuestFeatures: tc.features, VMM: VMMQEMU}
			if tc.kernel {
				opts.Kernel = emptyFileHashes(t, "console=ttyS0 loglevel=7")
			}
			got, err := Measure(img, opts)
			if err != nil {
				t.Fatal(err)
			}
			if h := hex.EncodeToString(got[:]); h != tc.want {
				t.Errorf("launch digest\n got %s\nwant %s", h, tc.want)
			}
			// The same digest from the precomputed OVMF hash.
			oh := OVMFHash(img)
			opts.OVMFHash = &oh
			if got2, err := Measure(img, opts); err != nil || got2 != got {
				t.Errorf("with --ovmf-hash: got %x, %v; want %x", got2, err, got)
			}
		})
	}
}

// TestReadmeOVMFHash: the README's OVMF hash of the AmdSev suffix.
func TestReadmeOVMFHash(t *testing.T) {
	got := OVMFHash(loadImage(t, "ovmf_AmdSev_suffix.bin"))
	want := "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74"
	if h := hex.EncodeToString(got[:]); h != want {
		t.Errorf("OVMF hash\n got %s\nwant %s", h, want)
	}
	// Seeding with it reproduces the first README row without the image's
	// pages being hashed (the --ovmf-hash path).
	opts := Options{VCPUs: 1, Signature: epycV4, GuestFeatures: 1, Kernel: emptyFileHashes(t, "console=ttyS0 loglevel=7"), OVMFHash: &got}
	ld, err := Measure(loadImage(t, "ovmf_AmdSev_suffix.bin"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if ld != hexDigest(t, "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa") {
		t.Errorf("digest from OVMF hash = %x", ld)
	}
}

// TestReadmeOvmfX64KernelFails: the README's last rule.
func TestReadmeOvmfX64KernelFails(t *testing.T) {
	got, err := Measure(loadImage(t, "ovmf_OvmfX64_suffix.bin"), Options{
		VCPUs: 1, Signature: epycV4, GuestFeatures: 1, Kernel: emptyFileHashes(t, ""),
	})
	if err == nil || !strings.Contains(err.Error(), "SNP_KERNEL_HASHES") {
		t.Fatalf("Measure = %x, %v; want an error naming SNP_KERNEL_HASHES", got, err)
	}
	if got != ([DigestSize]byte{}) {
		t.Errorf("a digest was returned with the error: %x", got)
	}
}
