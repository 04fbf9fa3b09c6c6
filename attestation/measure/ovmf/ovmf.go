// Package ovmf parses the parts of an OVMF (or TDVF) firmware image that a
// confidential VM's launch measurement depends on: the GUIDed footer table
// at the end of the image, the SEV metadata sections (SEV-SNP), the SEV-ES
// reset block, the SEV hashes table location and the TDX metadata (TDVF).
//
// Sources: edk2 OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm (the GUIDed
// table layout, "OVMF_TABLE_FOOTER_GUID"), OvmfPkg/ResetVector/X64/
// OvmfSevMetadata.asm and QEMU target/i386/sev.c (OvmfSevMetadata,
// OvmfSevMetadataDesc, SEV_DESC_TYPE_*), QEMU hw/i386/pc_sysfw_ovmf.c
// (pc_system_parse_ovmf_flash), and the Intel TDX Virtual Firmware Design
// Guide (TDVF), section "TDVF Metadata".
package ovmf

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Well-known GUIDs of footer-table entries.
var (
	// FooterGUID ends the GUIDed table; it sits 48 bytes before the end of
	// the image (ResetVectorVtf0.asm "OVMF_TABLE_FOOTER_GUID").
	FooterGUID = MustGUID("96b582de-1fb2-45f7-baea-a366c55a082d")
	// SEVHashTableGUID's entry holds the SEV hashes table GPA (uint32) and
	// size (uint32) (QEMU sev.c SEV_HASH_TABLE_RV_GUID).
	SEVHashTableGUID = MustGUID("7255371f-3a3b-4b04-927b-1da6efa8d454")
	// SEVESResetBlockGUID's entry holds the SEV-ES AP reset vector (uint32)
	// (QEMU sev.c SEV_INFO_BLOCK_GUID).
	SEVESResetBlockGUID = MustGUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
	// SEVMetadataGUID's entry holds the offset, from the end of the image,
	// of the SEV metadata ("ASEV") as a uint32 (OvmfSevMetadata.asm).
	SEVMetadataGUID = MustGUID("dc886566-984a-4798-a75e-5585a7bf67cc")
	// TDXMetadataGUID's entry holds the offset, from the end of the image,
	// of the TDX metadata ("TDVF") as a uint32 (TDVF design guide, "TDVF Metadata Pointer").
	TDXMetadataGUID = MustGUID("e47a6535-984a-4798-865e-4685a7bf8ec2")
)

// PageSize is the x86 4 KiB page size, the unit of every launch update.
const PageSize = 4096

// fourGiB is where a flash image ends in guest physical memory.
const fourGiB = 1 << 32

// footerOffset is the distance, in bytes, from the end of the image to the
// end of the footer GUID: the last 32 bytes hold the reset vector.
const footerOffset = 32

// ErrNotOVMF is wrapped by Parse when the input is not an OVMF image.
var ErrNotOVMF = errors.New("not an OVMF image")

// Image is a parsed OVMF/TDVF image. It keeps a reference to the bytes it
// was parsed from; they must not be modified afterwards.
type Image struct {
	data  []byte
	table map[GUID][]byte
}

// Parse reads the GUIDed footer table of an OVMF image. It returns an error
// wrapping ErrNotOVMF when the image is shorter than one page, not a whole
// number of 4 KiB pages, or has no footer GUID 48 bytes before its end, and
// one naming the entry when the table is malformed.
func Parse(data []byte) (*Image, error) {
	if len(data) < PageSize || len(data)%PageSize != 0 {
		return nil, fmt.Errorf("parse OVMF: size %d bytes is not a positive multiple of %d: %w: give the OVMF.fd / AmdSev build file", len(data), PageSize, ErrNotOVMF)
	}
	end := len(data) - footerOffset
	var g GUID
	copy(g[:], data[end-16:end])
	if g != FooterGUID {
		return nil, fmt.Errorf("parse OVMF: no GUIDed footer table (GUID %s at offset %#x, found %s): %w: give an OVMF build with SEV support", FooterGUID, end-16, g, ErrNotOVMF)
	}
	total := int(binary.LittleEndian.Uint16(data[end-18 : end-16]))
	if total < 18 || total > end {
		return nil, fmt.Errorf("parse OVMF: footer table length %d is outside [18, %d]: %w", total, end, ErrNotOVMF)
	}
	// Entries run backwards from the footer: data, uint16 length (data +
	// 18), GUID. The footer's own length covers the whole table.
	im := &Image{data: data, table: map[GUID][]byte{}}
	tbl := data[end-total : end-18]
	for len(tbl) > 0 {
		if len(tbl) < 18 {
			return nil, fmt.Errorf("parse OVMF footer table: %d stray bytes before the first entry: %w", len(tbl), ErrNotOVMF)
		}
		copy(g[:], tbl[len(tbl)-16:])
		n := int(binary.LittleEndian.Uint16(tbl[len(tbl)-18 : len(tbl)-16]))
		if n < 18 || n > len(tbl) {
			return nil, fmt.Errorf("parse OVMF footer table: entry %s has length %d, want 18..%d: %w", g, n, len(tbl), ErrNotOVMF)
		}
		im.table[g] = tbl[len(tbl)-n : len(tbl)-18]
		tbl = tbl[:len(tbl)-n]
	}
	return im, nil
}

// Data returns the image bytes.
func (im *Image) Data() []byte { return im.data }

// GPA returns the guest physical address the image is mapped at: the flash
// ends at 4 GiB (QEMU hw/i386/pc_sysfw.c).
func (im *Image) GPA() uint64 { return fourGiB - uint64(len(im.data)) }

// Entry returns the data of the footer-table entry g (without its length
// and GUID) and whether it exists.
func (im *Image) Entry(g GUID) ([]byte, bool) {
	b, ok := im.table[g]
	return b, ok
}

// u32Entry returns the first uint32 of entry g.
func (im *Image) u32Entry(g GUID, name string) (uint32, error) {
	b, ok := im.table[g]
	if !ok {
		return 0, fmt.Errorf("OVMF footer table has no %s entry (GUID %s): this firmware was not built for this TEE", name, g)
	}
	if len(b) < 4 {
		return 0, fmt.Errorf("OVMF footer table entry %s (GUID %s) is %d bytes, want at least 4", name, g, len(b))
	}
	return binary.LittleEndian.Uint32(b), nil
}

// SEVESResetEIP returns the SEV-ES AP reset vector from the SEV-ES reset
// block entry (QEMU sev.c sev_es_find_reset_vector): the 32-bit address the
// application processors start at, split by QEMU into CS base and IP.
func (im *Image) SEVESResetEIP() (uint32, error) {
	return im.u32Entry(SEVESResetBlockGUID, "SEV-ES reset block")
}

// SEVHashTable returns the GPA and size, in bytes, of the area reserved
// for QEMU's SEV hashes table (QEMU sev.c sev_add_kernel_loader_hashes).
func (im *Image) SEVHashTable() (gpa, size uint32, err error) {
	b, ok := im.table[SEVHashTableGUID]
	if !ok {
		return 0, 0, fmt.Errorf("OVMF footer table has no SEV hashes table entry (GUID %s): use the AmdSevX64 OVMF build for direct kernel boot", SEVHashTableGUID)
	}
	if len(b) < 8 {
		return 0, 0, fmt.Errorf("OVMF SEV hashes table entry is %d bytes, want 8", len(b))
	}
	return binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint32(b[4:8]), nil
}

// metadataAt returns the bytes starting at the metadata whose offset from
// the end of the image is in entry g, checking the 4-byte signature.
func (im *Image) metadataAt(g GUID, name, sig string) ([]byte, error) {
	off, err := im.u32Entry(g, name)
	if err != nil {
		return nil, err
	}
	if off < 16 || int(off) > len(im.data) {
		return nil, fmt.Errorf("%s offset %d from the end of the %d-byte image is out of range", name, off, len(im.data))
	}
	b := im.data[len(im.data)-int(off):]
	if string(b[:4]) != sig {
		return nil, fmt.Errorf("%s at offset %#x has signature %q, want %q", name, len(im.data)-int(off), b[:4], sig)
	}
	return b, nil
}
