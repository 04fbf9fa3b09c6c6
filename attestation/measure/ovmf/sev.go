package ovmf

import (
	"encoding/binary"
	"fmt"
)

// SEVSectionType is an OVMF SEV metadata section type (QEMU sev.c
// SEV_DESC_TYPE_*, edk2 OvmfSevMetadata.asm OVMF_SECTION_TYPE_*).
type SEVSectionType uint32

// SEV metadata section types.
const (
	// SectionSNPSecMem is memory OVMF expects pre-validated: measured as
	// ZERO pages.
	SectionSNPSecMem SEVSectionType = 1
	// SectionSNPSecrets is the SNP secrets page.
	SectionSNPSecrets SEVSectionType = 2
	// SectionCPUID is the SNP CPUID page.
	SectionCPUID SEVSectionType = 3
	// SectionSVSMCAA is the SVSM calling area: measured as ZERO pages.
	SectionSVSMCAA SEVSectionType = 4
	// SectionSNPKernelHashes is the page holding QEMU's SEV hashes table
	// (kernel, initrd, cmdline) for a measured direct kernel boot.
	SectionSNPKernelHashes SEVSectionType = 0x10
)

// String names t as OVMF does.
func (t SEVSectionType) String() string {
	switch t {
	case SectionSNPSecMem:
		return "SNP_SEC_MEM"
	case SectionSNPSecrets:
		return "SNP_SECRETS"
	case SectionCPUID:
		return "CPUID"
	case SectionSVSMCAA:
		return "SVSM_CAA"
	case SectionSNPKernelHashes:
		return "SNP_KERNEL_HASHES"
	}
	return fmt.Sprintf("unknown(%#x)", uint32(t))
}

// SEVSection is one OvmfSevMetadataDesc: a GPA range, in bytes, and its type.
type SEVSection struct {
	GPA  uint32
	Size uint32
	Type SEVSectionType
}

// SEVMetadata returns the SEV metadata sections in image order: the
// "ASEV" header (signature, uint32 length, uint32 version, uint32 count)
// followed by count 12-byte descriptors {gpa, size, type}. An image
// without the SEV metadata entry returns (nil, nil): such a firmware has
// no SNP pre-validated sections. Unknown section types, sizes that are
// not whole pages and a truncated table are errors.
func (im *Image) SEVMetadata() ([]SEVSection, error) {
	if _, ok := im.table[SEVMetadataGUID]; !ok {
		return nil, nil
	}
	b, err := im.metadataAt(SEVMetadataGUID, "SEV metadata", "ASEV")
	if err != nil {
		return nil, err
	}
	if len(b) < 16 {
		return nil, fmt.Errorf("SEV metadata header is truncated: %d bytes, want 16", len(b))
	}
	n := int(binary.LittleEndian.Uint32(b[12:16]))
	if 16+12*n > len(b) {
		return nil, fmt.Errorf("SEV metadata lists %d sections, more than the image holds", n)
	}
	out := make([]SEVSection, 0, n)
	for i := range n {
		d := b[16+12*i:]
		s := SEVSection{
			GPA:  binary.LittleEndian.Uint32(d[0:4]),
			Size: binary.LittleEndian.Uint32(d[4:8]),
			Type: SEVSectionType(binary.LittleEndian.Uint32(d[8:12])),
		}
		switch s.Type {
		case SectionSNPSecMem, SectionSNPSecrets, SectionCPUID, SectionSVSMCAA, SectionSNPKernelHashes:
		default:
			return nil, fmt.Errorf("SEV metadata section %d has type %s, want one of 1-4 or 0x10: firmware newer than this tool", i, s.Type)
		}
		if s.GPA%PageSize != 0 || s.Size%PageSize != 0 || s.Size == 0 {
			return nil, fmt.Errorf("SEV metadata section %d (%s) at GPA %#x, %d bytes: want whole 4 KiB pages", i, s.Type, s.GPA, s.Size)
		}
		out = append(out, s)
	}
	return out, nil
}
