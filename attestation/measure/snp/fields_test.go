package snp

import (
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/attestation/measure/ovmf"
)

// The expected values in this file were computed with Python's hashlib,
// struct and uuid from the byte layouts the cited spec tables give, not with
// this package.

// TestPageInfoLayout: SEV-SNP firmware ABI (56860) §8.17.2, table
// "PAGE_INFO Structure": DIGEST_CUR at 0x00, CONTENTS at 0x30, LENGTH=0x70 at
// 0x60, PAGE_TYPE at 0x62, IMI_PAGE 0x63, VMPL3..1_PERMS 0x64-0x66,
// reserved 0x67, GPA at 0x68, all little-endian.
func TestPageInfoLayout(t *testing.T) {
	var p PageInfo
	for i := range DigestSize {
		p.DigestCur[i] = byte(i)
		p.Contents[i] = byte(DigestSize + i)
	}
	p.Type = PageNormal
	p.GPA = 0xFFFFF000
	b := p.Marshal()
	want := "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f" +
		"303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f" +
		"7000" + "01" + "00" + "000000" + "00" + "00f0ffff00000000"
	if got := hex.EncodeToString(b[:]); got != want {
		t.Errorf("PAGE_INFO\n got %s\nwant %s", got, want)
	}
}

// TestPageTypeDigests: one SNP_LAUNCH_UPDATE of each page type from the
// initial (zero) launch digest, ABI spec §8.17.2 table "Page Types":
// NORMAL and VMSA measure SHA-384 of the page, ZERO, UNMEASURED, SECRETS and
// CPUID measure 48 zero bytes; VMSA pages are measured at GPA
// 0xFFFFFFFFF000.
func TestPageTypeDigests(t *testing.T) {
	bsp, err := VMSA(VMMQEMU, VCPUState{EIP: BSPEIP, Signature: epycV4, GuestFeatures: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		update func(d *LaunchDigest)
		want   string
	}{
		{"NORMAL zero page at 0xfffff000", func(d *LaunchDigest) { _ = d.NormalPages(0xFFFFF000, make([]byte, 4096)) },
			"46c510442a54cc32344cef32e14dc3d6312fc4a010780dd11fd33204df5550590356b069e6c6ca5bbfca71561f370399"},
		{"ZERO at 0x800000", func(d *LaunchDigest) { d.ZeroPages(0x800000, 4096) },
			"4472405c6dbc65e5629805f2be1b3df74eb119841eff12466c24f43e67083c23df5e645b2742b6d9aa0f943e095cebaa"},
		{"UNMEASURED at 0x800000", func(d *LaunchDigest) { d.Update(PageUnmeasured, 0x800000, [DigestSize]byte{}) },
			"8cd64e16495d28db9db5fb176885ec972db5d0b66163a37dabe352d30f8501701c570b7c146bf32d6d26903eb36f9398"},
		{"SECRETS at 0x80d000", func(d *LaunchDigest) { d.Update(PageSecrets, 0x80D000, [DigestSize]byte{}) },
			"e82e99caf82a32c31ec5070eef9e2135866d8f7de60d756814f3bd8c989c1e826622e0a97dad026c6d9d81818780e6a2"},
		{"CPUID at 0x80e000", func(d *LaunchDigest) { d.Update(PageCPUID, 0x80E000, [DigestSize]byte{}) },
			"c9e46442d2b4ddb823fa6b4a907930de7e93901180c5a3126ba234193059a0a51a21ba82f05d2fe0f3136f22b1b1a8e4"},
		{"VMSA BSP EPYC-v4 features 0x1", func(d *LaunchDigest) { d.VMSAPage(bsp) },
			"108432463da76821f35c5daf2f7aecc0ce9ce88652de5f70f638c7a0345c11f2f80025654b80e7be10a9fe0ee1b75f33"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d LaunchDigest
			tc.update(&d)
			if got := d.Sum(); hex.EncodeToString(got[:]) != tc.want {
				t.Errorf("launch digest\n got %x\nwant %s", got, tc.want)
			}
		})
	}
}

// TestZeroPagesPerPage: a multi-page ZERO section is one update per 4 KiB
// page at increasing GPAs (ABI spec §8.17.2: PAGE_INFO describes one page).
func TestZeroPagesPerPage(t *testing.T) {
	var a, b LaunchDigest
	a.ZeroPages(0x800000, 3*4096)
	for i := range uint64(3) {
		b.Update(PageZero, 0x800000+i*4096, [DigestSize]byte{})
	}
	if a.Sum() != b.Sum() {
		t.Error("ZeroPages over 3 pages differs from 3 single-page updates")
	}
	if err := a.NormalPages(0, make([]byte, 100)); err == nil {
		t.Error("NormalPages accepted 100 bytes")
	}
}

// TestHashesTable: QEMU target/i386/sev.c SevHashTable/PaddedSevHashTable:
// header GUID 9438d606-…, uint16 length 168, entries cmdline, initrd,
// kernel (GUID, uint16 50, SHA-256), zero-padded to 176 bytes. Inputs:
// kernel and initrd empty (/dev/null), cmdline "console=ttyS0 loglevel=7"
// hashed with its NUL terminator.
func TestHashesTable(t *testing.T) {
	h, err := HashKernelFiles("/dev/null", "/dev/null", "console=ttyS0 loglevel=7")
	if err != nil {
		t.Fatal(err)
	}
	tbl := h.Table()
	want := "06d63894224fc94cb479a793d411fd21a800" +
		"d82dd09720bd944caa78e7714d36ab2a3200321c8eec6a77bad179511397f913a083067ad8cb737bb260aacbfe8df70fc50a" +
		"31f7ba442f3ad74b9af141e29169781d3200e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" +
		"3794e74dd2ab7f42b835d5b172d2045b3200e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" +
		"0000000000000000"
	if got := hex.EncodeToString(tbl[:]); got != want {
		t.Errorf("hashes table\n got %s\nwant %s", got, want)
	}
	// In the SNP_KERNEL_HASHES page at the AmdSev fixture's table GPA
	// 0x810c00 (page 0x810000, offset 0xc00), measured as a NORMAL page.
	page, err := h.Page(0xc00)
	if err != nil {
		t.Fatal(err)
	}
	var d LaunchDigest
	_ = d.NormalPages(0x810000, page[:])
	if got := d.Sum(); hex.EncodeToString(got[:]) != "4bcdb8790d37cf82600d49516abfdaf79c867af1efc8e36add47108ae0a2df6cc3a1d48c293f6334ebdd76d3159ada55" {
		t.Errorf("hashes page update = %x", got)
	}
	if _, err := h.Page(4096 - 100); err == nil {
		t.Error("Page accepted an offset the table does not fit at")
	}
	// An empty command line is SHA-256 of one NUL byte, as QEMU hashes it.
	if CmdlineSHA256("") != [32]byte(mustHex(t, "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")) {
		t.Error("empty cmdline hash is not SHA-256(\"\\x00\")")
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVMSAFields: APM vol. 2 table B-4 offsets of the fields QEMU/KVM set,
// for the BSP (EIP 0xFFFFFFF0) and an AP at the AmdSev fixture's SEV-ES
// reset EIP 0x80B004 (CS.base = EIP & 0xFFFF0000, RIP = EIP & 0xFFFF).
func TestVMSAFields(t *testing.T) {
	le := binary.LittleEndian
	for _, tc := range []struct {
		name           string
		eip            uint32
		csBase, rip    uint64
		wantPageSHA384 string
	}{
		{"BSP", BSPEIP, 0xFFFF0000, 0xFFF0, "77920c4c629ff47e90c0e174fc1ad0eb6fa664f88cd4739488058a8c6cb1a77b3856f55378e9518d0da99452d51c553a"},
		{"AP", 0x80B004, 0x800000, 0xB004, "8413b852790765a310d95867a8b00bfca3a802b5a80830044b45e253fe96222657e11e53fcf63eb0e0afd722385bf7b4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := VMSA(VMMQEMU, VCPUState{EIP: tc.eip, Signature: epycV4, GuestFeatures: 0x1})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []struct {
				name      string
				off, size int
				want      uint64
			}{
				{"CS.selector", 0x10, 2, 0xF000}, {"CS.attrib", 0x12, 2, 0x9B}, {"CS.limit", 0x14, 4, 0xFFFF}, {"CS.base", 0x18, 8, tc.csBase},
				{"ES.attrib", 0x02, 2, 0x93}, {"SS.attrib", 0x22, 2, 0x93}, {"LDTR.attrib", 0x72, 2, 0x82}, {"TR.attrib", 0x92, 2, 0x8B},
				{"GDTR.limit", 0x64, 4, 0xFFFF}, {"IDTR.limit", 0x84, 4, 0xFFFF},
				{"EFER", 0xD0, 8, 0x1000}, {"CR4", 0x148, 8, 0x40}, {"CR0", 0x158, 8, 0x10}, {"DR7", 0x160, 8, 0x400},
				{"DR6", 0x168, 8, 0xFFFF0FF0}, {"RFLAGS", 0x170, 8, 0x2}, {"RIP", 0x178, 8, tc.rip},
				{"G_PAT", 0x268, 8, 0x0007040600070406}, {"RDX", 0x310, 8, epycV4}, {"SEV_FEATURES", 0x3B0, 8, 0x1},
				{"XCR0", 0x3E8, 8, 0x1}, {"MXCSR", 0x408, 4, 0x1F80}, {"X87_FCW", 0x410, 2, 0x37F},
			} {
				var got uint64
				switch f.size {
				case 2:
					got = uint64(le.Uint16(p[f.off:]))
				case 4:
					got = uint64(le.Uint32(p[f.off:]))
				case 8:
					got = le.Uint64(p[f.off:])
				}
				if got != f.want {
					t.Errorf("%s at %#x = %#x, want %#x", f.name, f.off, got, f.want)
				}
			}
			if got := sha512.Sum384(p[:]); hex.EncodeToString(got[:]) != tc.wantPageSHA384 {
				t.Errorf("VMSA page SHA-384 = %x, want %s", got, tc.wantPageSHA384)
			}
		})
	}
	if _, err := VMSA("ec2", VCPUState{}); err == nil || !strings.Contains(err.Error(), "ec2") {
		t.Errorf("VMSA(ec2) err = %v, want a refusal naming ec2", err)
	}
}

// TestCPUSignatures: AMD CPUID spec 25481, Fn0000_0001_EAX encoding of
// QEMU's family/model/stepping for each EPYC generation.
func TestCPUSignatures(t *testing.T) {
	for name, want := range map[string]uint32{
		"EPYC": 0x800f12, "EPYC-v4": 0x800f12, "epyc-ibpb": 0x800f12,
		"EPYC-Rome": 0x830f10, "EPYC-Milan": 0xa00f11, "EPYC-Milan-v2": 0xa00f11,
		"EPYC-Genoa": 0xa10f10, "EPYC-Turin": 0xb00f00,
	} {
		got, err := LookupCPU(name)
		if err != nil || got != want {
			t.Errorf("LookupCPU(%q) = %#x, %v; want %#x", name, got, err, want)
		}
	}
	if _, err := LookupCPU("Skylake-Server"); err == nil || !strings.Contains(err.Error(), `"Skylake-Server"`) || !strings.Contains(err.Error(), "--vcpu-sig") {
		t.Errorf("LookupCPU(Skylake-Server) err = %v, want unknown vCPU type naming it and --vcpu-sig", err)
	}
}

// TestMeasureInputErrors: bad inputs give an error naming the problem and a
// zero digest.
func TestMeasureInputErrors(t *testing.T) {
	amd := loadImage(t, "ovmf_AmdSev_suffix.bin")
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no vCPUs", Options{VCPUs: 0, Signature: epycV4}, "0 vCPUs"},
		{"ec2", Options{VCPUs: 1, Signature: epycV4, VMM: "ec2"}, `"ec2" is not supported`},
	} {
		got, err := Measure(amd, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) || got != ([DigestSize]byte{}) {
			t.Errorf("%s: Measure = %x, %v; want error containing %q", tc.name, got, err, tc.want)
		}
	}
	// A firmware with a footer table but no SEV metadata.
	noMeta := make([]byte, 4096)
	copy(noMeta[4096-48:], ovmf.FooterGUID[:])
	binary.LittleEndian.PutUint16(noMeta[4096-50:], 18)
	img, err := ovmf.Parse(noMeta)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Measure(img, Options{VCPUs: 1}); err == nil || !strings.Contains(err.Error(), "no SEV metadata") {
		t.Errorf("Measure(no metadata) err = %v", err)
	}
}

// TestMeasureMoreVCPUs: each extra vCPU adds one AP VMSA update (at the
// SEV-ES reset EIP), so 2 vCPUs = 1 vCPU's digest extended with the AP page.
func TestMeasureMoreVCPUs(t *testing.T) {
	img := loadImage(t, "ovmf_AmdSev_suffix.bin")
	one, err := Measure(img, Options{VCPUs: 1, Signature: epycV4, GuestFeatures: 1})
	if err != nil {
		t.Fatal(err)
	}
	two, err := Measure(img, Options{VCPUs: 2, Signature: epycV4, GuestFeatures: 1})
	if err != nil {
		t.Fatal(err)
	}
	ap, _ := VMSA(VMMQEMU, VCPUState{EIP: 0x80B004, Signature: epycV4, GuestFeatures: 1})
	d := NewLaunchDigest(one)
	d.VMSAPage(ap)
	if d.Sum() != two {
		t.Errorf("2-vCPU digest %x != 1-vCPU digest extended with the AP VMSA %x", two, d.Sum())
	}
}
