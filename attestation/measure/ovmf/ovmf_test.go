package ovmf

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
)

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../snp/testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGUIDByteOrder(t *testing.T) {
	// EFI_GUID: first three fields little-endian (UEFI 2.10 appendix A).
	g := MustGUID("96b582de-1fb2-45f7-baea-a366c55a082d")
	want := []byte{0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d}
	if string(g[:]) != string(want) {
		t.Errorf("GUID bytes = %x, want %x", g[:], want)
	}
	if g.String() != "96b582de-1fb2-45f7-baea-a366c55a082d" {
		t.Errorf("String() = %s", g)
	}
}

// TestParseAmdSevSuffix: the footer table and SEV metadata of the AmdSevX64
// fixture (OvmfSevMetadata.asm layout).
func TestParseAmdSevSuffix(t *testing.T) {
	img, err := Parse(readFixture(t, "ovmf_AmdSev_suffix.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if img.GPA() != 0xFFFFF000 {
		t.Errorf("GPA = %#x, want 0xfffff000 (4 GiB - 4 KiB)", img.GPA())
	}
	eip, err := img.SEVESResetEIP()
	if err != nil || eip != 0x80B004 {
		t.Errorf("SEV-ES reset EIP = %#x, %v; want 0x80b004", eip, err)
	}
	gpa, size, err := img.SEVHashTable()
	if err != nil || gpa != 0x810C00 || size != 0x400 {
		t.Errorf("SEV hash table = %#x+%#x, %v; want 0x810c00+0x400", gpa, size, err)
	}
	secs, err := img.SEVMetadata()
	if err != nil {
		t.Fatal(err)
	}
	want := []SEVSection{
		{0x800000, 0x9000, SectionSNPSecMem}, {0x80A000, 0x3000, SectionSNPSecMem},
		{0x80D000, 0x1000, SectionSNPSecrets}, {0x80E000, 0x1000, SectionCPUID},
		{0x80F000, 0x1000, SectionSVSMCAA}, {0x810000, 0x1000, SectionSNPKernelHashes},
		{0x811000, 0xF000, SectionSNPSecMem},
	}
	if len(secs) != len(want) {
		t.Fatalf("sections = %+v, want %+v", secs, want)
	}
	for i := range want {
		if secs[i] != want[i] {
			t.Errorf("section %d = %+v, want %+v", i, secs[i], want[i])
		}
	}
	if _, err := img.TDXMetadata(); err == nil {
		t.Error("AmdSev build reported TDX metadata")
	}
}

func TestParseNotOVMF(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":          nil,
		"not page sized": make([]byte, 5000),
		"no footer":      make([]byte, 8192),
		"ELF kernel":     append([]byte("\x7fELF"), make([]byte, 4092)...),
	} {
		if _, err := Parse(data); !errors.Is(err, ErrNotOVMF) {
			t.Errorf("%s: Parse err = %v, want ErrNotOVMF", name, err)
		}
	}
	// A footer whose length overruns the image.
	b := make([]byte, 4096)
	copy(b[4096-48:], FooterGUID[:])
	binary.LittleEndian.PutUint16(b[4096-50:], 5000)
	if _, err := Parse(b); err == nil || !strings.Contains(err.Error(), "footer table length 5000") {
		t.Errorf("overlong footer: err = %v", err)
	}
}

// TestDebianOVMFTDXMetadata: Debian's OvmfPkgX64 build (package ovmf,
// /usr/share/ovmf/OVMF.fd) carries TDX metadata (TDVF design guide, "TDVF Metadata"); its sections
// are BFV (extended), CFV, TempMem, TempMem, TD_HOB, TempMem.
func TestDebianOVMFTDXMetadata(t *testing.T) {
	b, err := os.ReadFile("/usr/share/ovmf/OVMF.fd")
	if os.IsNotExist(err) {
		t.Skip("/usr/share/ovmf/OVMF.fd absent: Debian package ovmf is not installed")
	}
	if err != nil {
		t.Fatal(err)
	}
	img, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	secs, err := img.TDXMetadata()
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, s := range secs {
		types = append(types, s.Type.String())
	}
	if got := strings.Join(types, ","); got != "BFV,CFV,TempMem,TempMem,TD_HOB,TempMem" {
		t.Errorf("TDVF sections = %s", got)
	}
	if secs[0].Attributes&TDVFAttrMRExtend == 0 || secs[0].MemoryAddress+secs[0].MemoryDataSize != 1<<32 {
		t.Errorf("BFV = %+v, want MR.EXTEND and ending at 4 GiB", secs[0])
	}
}
