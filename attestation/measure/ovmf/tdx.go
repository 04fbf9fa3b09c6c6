package ovmf

import (
	"encoding/binary"
	"fmt"
)

// TDVFSectionType is a TDVF metadata section type (TDVF design guide,
// "TDVF_SECTION" Type field).
type TDVFSectionType uint32

// TDVF section types.
const (
	// TDVFBFV is the boot firmware volume (code), measured into MRTD.
	TDVFBFV TDVFSectionType = 0
	// TDVFCFV is the configuration firmware volume (variables), measured
	// into MRTD.
	TDVFCFV TDVFSectionType = 1
	// TDVFTDHOB is the TD HOB page the VMM fills; added, not extended.
	TDVFTDHOB TDVFSectionType = 2
	// TDVFTempMem is temporary memory; added, not extended.
	TDVFTempMem TDVFSectionType = 3
	// TDVFPermMem is permanent memory, usually accepted with PAGE.AUG.
	TDVFPermMem TDVFSectionType = 4
	// TDVFPayload is a payload (e.g. kernel) image.
	TDVFPayload TDVFSectionType = 5
	// TDVFPayloadParam is the payload's parameter page.
	TDVFPayloadParam TDVFSectionType = 6
)

// String names t as the TDVF design guide does.
func (t TDVFSectionType) String() string {
	switch t {
	case TDVFBFV:
		return "BFV"
	case TDVFCFV:
		return "CFV"
	case TDVFTDHOB:
		return "TD_HOB"
	case TDVFTempMem:
		return "TempMem"
	case TDVFPermMem:
		return "PermMem"
	case TDVFPayload:
		return "Payload"
	case TDVFPayloadParam:
		return "PayloadParam"
	}
	return fmt.Sprintf("unknown(%d)", uint32(t))
}

// TDVF section attribute bits (TDVF design guide, "TDVF_SECTION" Attributes).
const (
	// TDVFAttrMRExtend: the VMM measures the section with TDH.MR.EXTEND.
	TDVFAttrMRExtend uint32 = 1 << 0
	// TDVFAttrPageAug: the section is added with TDH.MEM.PAGE.AUG (not
	// measured) instead of TDH.MEM.PAGE.ADD.
	TDVFAttrPageAug uint32 = 1 << 1
)

// TDVFSection is one 32-byte TDVF_SECTION descriptor: where the raw data
// sits in the image (offset and size in bytes), where it goes in guest
// memory (GPA and size in bytes), its type and attributes.
type TDVFSection struct {
	DataOffset     uint32
	RawDataSize    uint32
	MemoryAddress  uint64
	MemoryDataSize uint64
	Type           TDVFSectionType
	Attributes     uint32
}

// TDXMetadata returns the TDVF metadata sections in image order: the
// "TDVF" descriptor (signature, uint32 length, uint32 version 1, uint32
// count) followed by count TDVF_SECTION descriptors (TDVF design guide,
// "TDVF Metadata"). It fails when the image has no TDX metadata entry (not a
// TDVF), when the version is not 1, and when a section is not page-aligned
// or its raw data lies outside the image.
func (im *Image) TDXMetadata() ([]TDVFSection, error) {
	b, err := im.metadataAt(TDXMetadataGUID, "TDX metadata", "TDVF")
	if err != nil {
		return nil, err
	}
	if len(b) < 16 {
		return nil, fmt.Errorf("TDX metadata header is truncated: %d bytes, want 16", len(b))
	}
	if v := binary.LittleEndian.Uint32(b[8:12]); v != 1 {
		return nil, fmt.Errorf("TDX metadata version %d, want 1", v)
	}
	n := int(binary.LittleEndian.Uint32(b[12:16]))
	if 16+32*n > len(b) {
		return nil, fmt.Errorf("TDX metadata lists %d sections, more than the image holds", n)
	}
	out := make([]TDVFSection, 0, n)
	for i := range n {
		d := b[16+32*i:]
		s := TDVFSection{
			DataOffset:     binary.LittleEndian.Uint32(d[0:4]),
			RawDataSize:    binary.LittleEndian.Uint32(d[4:8]),
			MemoryAddress:  binary.LittleEndian.Uint64(d[8:16]),
			MemoryDataSize: binary.LittleEndian.Uint64(d[16:24]),
			Type:           TDVFSectionType(binary.LittleEndian.Uint32(d[24:28])),
			Attributes:     binary.LittleEndian.Uint32(d[28:32]),
		}
		if s.MemoryAddress%PageSize != 0 || s.MemoryDataSize%PageSize != 0 {
			return nil, fmt.Errorf("TDX metadata section %d (%s) at GPA %#x, %d bytes: want whole 4 KiB pages", i, s.Type, s.MemoryAddress, s.MemoryDataSize)
		}
		if uint64(s.RawDataSize) > s.MemoryDataSize {
			return nil, fmt.Errorf("TDX metadata section %d (%s): raw data %d bytes exceeds its memory size %d", i, s.Type, s.RawDataSize, s.MemoryDataSize)
		}
		if uint64(s.DataOffset)+uint64(s.RawDataSize) > uint64(len(im.data)) {
			return nil, fmt.Errorf("TDX metadata section %d (%s): raw data [%#x, +%d) lies outside the %d-byte image", i, s.Type, s.DataOffset, s.RawDataSize, len(im.data))
		}
		out = append(out, s)
	}
	return out, nil
}
