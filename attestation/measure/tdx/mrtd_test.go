package tdx

import (
	"encoding/binary"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/attestation/measure/ovmf"
)

// TestBlocks: TDX module base spec, MRTD update buffers: "MEM.PAGE.ADD" /
// "MR.EXTEND" at byte 0, the GPA little-endian at byte 16, 128 bytes.
func TestBlocks(t *testing.T) {
	a := PageAddBlock(0xFFE20000)
	if got := hex.EncodeToString(a[:24]); got != "4d454d2e504147452e414444000000000000e2ff00000000" {
		t.Errorf("PAGE.ADD block head = %s", got)
	}
	e := ExtendBlock(0xFFE20100)
	if got := hex.EncodeToString(e[:24]); got != "4d522e455854454e44000000000000000001e2ff00000000" {
		t.Errorf("MR.EXTEND block head = %s", got)
	}
	for i := 24; i < BlockSize; i++ {
		if a[i] != 0 || e[i] != 0 {
			t.Fatalf("byte %d not zero", i)
		}
	}
}

// TestDebianOVMFMRTD: MRTD of Debian bookworm's OVMF.fd (ovmf
// 2022.11-6+deb12u2, SHA-256 7b456907…d773), in both page orders. The
// expected values come from a separate Python implementation written from
// the same specs; they are NOT an independent vector from real TDX
// hardware (none is available here).
func TestDebianOVMFMRTD(t *testing.T) {
	b, err := os.ReadFile("/usr/share/ovmf/OVMF.fd")
	if os.IsNotExist(err) {
		t.Skip("/usr/share/ovmf/OVMF.fd absent: Debian package ovmf is not installed")
	}
	if err != nil {
		t.Fatal(err)
	}
	img, err := ovmf.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	for order, want := range map[PageOrder]string{
		SinglePass: "4c7206f0f483c524f12c366c711e9049030a8d47c471ee5aa9c4999a08de4057fb887fed0744d5631a212967fb231c47",
		TwoPass:    "acccbcc870a381adab0d3919d90a7f268ac3b0364771f202ed4bb4e892d045b33db3b32e6924cba830a724eed443f7e1",
	} {
		got, err := MRTD(img, order)
		if err != nil {
			t.Fatal(err)
		}
		if h := hex.EncodeToString(got[:]); h != want {
			t.Errorf("MRTD(order %d) = %s, want %s", order, h, want)
		}
	}
}

// tdvfImage builds a 2-page image: page 0 is a BFV section's data, page 1
// holds the footer table and TDX metadata with the given sections.
func tdvfImage(sections []ovmf.TDVFSection) []byte {
	img := make([]byte, 2*ovmf.PageSize)
	for i := range ovmf.PageSize {
		img[i] = byte(i)
	}
	meta := img[ovmf.PageSize:]
	copy(meta, "TDVF")
	binary.LittleEndian.PutUint32(meta[8:], 1)
	binary.LittleEndian.PutUint32(meta[12:], uint32(len(sections)))
	for i, s := range sections {
		d := meta[16+32*i:]
		binary.LittleEndian.PutUint32(d[0:], s.DataOffset)
		binary.LittleEndian.PutUint32(d[4:], s.RawDataSize)
		binary.LittleEndian.PutUint64(d[8:], s.MemoryAddress)
		binary.LittleEndian.PutUint64(d[16:], s.MemoryDataSize)
		binary.LittleEndian.PutUint32(d[24:], uint32(s.Type))
		binary.LittleEndian.PutUint32(d[28:], s.Attributes)
	}
	// Footer table: one entry (uint32 offset of the metadata from the end,
	// uint16 length 22, GUID), then the footer (uint16 total, GUID).
	end := len(img) - 32
	binary.LittleEndian.PutUint16(img[end-18:], 18+22)
	copy(img[end-16:], ovmf.FooterGUID[:])
	e := end - 18
	copy(img[e-16:], ovmf.TDXMetadataGUID[:])
	binary.LittleEndian.PutUint16(img[e-18:], 22)
	binary.LittleEndian.PutUint32(img[e-22:], ovmf.PageSize)
	return img
}

// TestMRTDSemantics: one extended page and one added-only page, checked
// against the sequence of updates the TDX module makes; PAGE.AUG pages add
// nothing.
func TestMRTDSemantics(t *testing.T) {
	bfv := ovmf.TDVFSection{DataOffset: 0, RawDataSize: ovmf.PageSize, MemoryAddress: 0xFFFFE000, MemoryDataSize: ovmf.PageSize, Type: ovmf.TDVFBFV, Attributes: ovmf.TDVFAttrMRExtend}
	hob := ovmf.TDVFSection{MemoryAddress: 0x809000, MemoryDataSize: ovmf.PageSize, Type: ovmf.TDVFTDHOB}
	aug := ovmf.TDVFSection{MemoryAddress: 0x900000, MemoryDataSize: 4 * ovmf.PageSize, Type: ovmf.TDVFPermMem, Attributes: ovmf.TDVFAttrPageAug}
	img, err := ovmf.Parse(tdvfImage([]ovmf.TDVFSection{bfv, hob, aug}))
	if err != nil {
		t.Fatal(err)
	}
	got, err := MRTD(img, SinglePass)
	if err != nil {
		t.Fatal(err)
	}
	// Expected, from Python: sha384(PAGE.ADD(0xffffe000) ‖ for c in 0..15
	// {MR.EXTEND(0xffffe000+256c) ‖ bytes(i & 0xff for i in 256c..256c+255)}
	// ‖ PAGE.ADD(0x809000)).
	want := "af73f484303f0333858fca8bbeee9e14f92b96bf198453eaaeca01c26c30bd3034844cb5afd6918911494229cfa44917"
	if h := hex.EncodeToString(got[:]); h != want {
		t.Errorf("MRTD = %s, want %s", h, want)
	}
	two, err := MRTD(img, TwoPass)
	if err != nil {
		t.Fatal(err)
	}
	if got != two {
		t.Error("single- and two-pass differ for one-page sections, where they are the same sequence")
	}
}

// TestMRTDNotTDVF: an OVMF image without the TDX metadata entry, and one
// whose metadata points outside the file (the 4 KiB AmdSev suffix: its
// BFV lies in the part that was cut off), give errors and no MRTD.
func TestMRTDNotTDVF(t *testing.T) {
	bare := make([]byte, ovmf.PageSize)
	copy(bare[ovmf.PageSize-48:], ovmf.FooterGUID[:])
	binary.LittleEndian.PutUint16(bare[ovmf.PageSize-50:], 18)
	suffix, err := os.ReadFile("../snp/testdata/ovmf_AmdSev_suffix.bin")
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"no entry":  {bare, "no TDX metadata entry"},
		"truncated": {suffix, "lies outside the 4096-byte image"},
	} {
		img, err := ovmf.Parse(tc.data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := MRTD(img, SinglePass)
		if err == nil || !strings.Contains(err.Error(), tc.want) || got != ([DigestSize]byte{}) {
			t.Errorf("%s: MRTD = %x, %v; want an error containing %q", name, got, err, tc.want)
		}
	}
}
