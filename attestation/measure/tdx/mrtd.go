// Package tdx computes an Intel TDX guest's MRTD from its TDVF firmware
// image: the SHA-384 the TDX module accumulates while the VMM adds the
// firmware's pages before TDH.MR.FINALIZE.
//
// Sources: Intel TDX Module Base Architecture Specification (348549),
// chapter "TD Measurement" (MRTD); Intel TDX Module ABI Specification
// (348551), TDH.MEM.PAGE.ADD (leaf 2) and TDH.MR.EXTEND (leaf 16); Intel
// TDX Virtual Firmware Design Guide (TDVF), sections "TDVF Metadata" and
// "TD Measurement". The page order is QEMU's (hw/i386/tdx.c
// tdx_finalize_vm, one KVM_TDX_INIT_MEM_REGION per TDVF section, in
// metadata order) and upstream KVM's (arch/x86/kvm/vmx/tdx.c: for each
// page, TDH.MEM.PAGE.ADD, then TDH.MR.EXTEND of its sixteen 256-byte
// chunks if the section asks for it).
//
// RTMRs are not computed here: see docs/measurement.md.
package tdx

import (
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"hash"

	"github.com/cofferhq/coffer/attestation/measure/ovmf"
)

// DigestSize is the size of MRTD: SHA-384, 48 bytes.
const DigestSize = sha512.Size384

// ExtendChunk is the TDH.MR.EXTEND granularity: 256 bytes.
const ExtendChunk = 256

// BlockSize is the size of the header block the TDX module hashes for
// PAGE.ADD and MR.EXTEND: one 128-byte SHA-384 block.
const BlockSize = 128

// PageOrder selects how PAGE.ADD and MR.EXTEND interleave within a section.
type PageOrder int

const (
	// SinglePass adds a page and then extends it, page by page: upstream
	// KVM (Linux ≥ 6.16) with QEMU ≥ 10.1.
	SinglePass PageOrder = iota
	// TwoPass adds all of a section's pages, then extends all of them:
	// the pre-upstream TDX KVM/QEMU trees (e.g. Ubuntu's and Intel's
	// 2023-2024 tdx branches).
	TwoPass
)

// PageAddBlock returns the 128-byte buffer TDH.MEM.PAGE.ADD extends MRTD
// with (TDX module base spec, MRTD update for TDH.MEM.PAGE.ADD): bytes 0-11
// "MEM.PAGE.ADD", bytes 16-23 the page's GPA (little-endian), the rest zero.
func PageAddBlock(gpa uint64) [BlockSize]byte {
	var b [BlockSize]byte
	copy(b[:], "MEM.PAGE.ADD")
	binary.LittleEndian.PutUint64(b[16:], gpa)
	return b
}

// ExtendBlock returns the 128-byte buffer TDH.MR.EXTEND hashes before the
// 256 bytes of chunk data (TDX module base spec, MRTD update for
// TDH.MR.EXTEND): bytes 0-8 "MR.EXTEND", bytes 16-23 the chunk's GPA, the
// rest zero.
func ExtendBlock(gpa uint64) [BlockSize]byte {
	var b [BlockSize]byte
	copy(b[:], "MR.EXTEND")
	binary.LittleEndian.PutUint64(b[16:], gpa)
	return b
}

// MRTD returns the MRTD of a TD booted from img: over each TDVF section in
// metadata order, each 4 KiB page not marked PAGE.AUG is PAGE.ADDed, and,
// for sections with the MR.EXTEND attribute, each 256-byte chunk of the
// page's content (the section's raw data, zero-padded to its memory size)
// is extended. It fails when img has no TDX metadata (not a TDVF image).
func MRTD(img *ovmf.Image, order PageOrder) ([DigestSize]byte, error) {
	var out [DigestSize]byte
	sections, err := img.TDXMetadata()
	if err != nil {
		return out, fmt.Errorf("compute MRTD: %w: give a TDVF (OVMF built with TDX support)", err)
	}
	h := sha512.New384()
	for _, s := range sections {
		content := sectionContent(img.Data(), s)
		pages := s.MemoryDataSize / ovmf.PageSize
		switch order {
		case TwoPass:
			for p := range pages {
				pageAdd(h, s, p)
			}
			for p := range pages {
				extend(h, s, content, p)
			}
		default:
			for p := range pages {
				pageAdd(h, s, p)
				extend(h, s, content, p)
			}
		}
	}
	h.Sum(out[:0])
	return out, nil
}

// sectionContent returns what the VMM copies into the section's memory: the
// raw data, then zeros up to the memory size, but only for extended
// sections (the others are not hashed by content).
func sectionContent(fw []byte, s ovmf.TDVFSection) []byte {
	if s.Attributes&ovmf.TDVFAttrMRExtend == 0 {
		return nil
	}
	c := make([]byte, s.MemoryDataSize)
	copy(c, fw[s.DataOffset:s.DataOffset+s.RawDataSize])
	return c
}

func pageAdd(h hash.Hash, s ovmf.TDVFSection, page uint64) {
	if s.Attributes&ovmf.TDVFAttrPageAug != 0 {
		return
	}
	b := PageAddBlock(s.MemoryAddress + page*ovmf.PageSize)
	h.Write(b[:])
}

func extend(h hash.Hash, s ovmf.TDVFSection, content []byte, page uint64) {
	if s.Attributes&ovmf.TDVFAttrMRExtend == 0 {
		return
	}
	for c := uint64(0); c < ovmf.PageSize; c += ExtendChunk {
		off := page*ovmf.PageSize + c
		b := ExtendBlock(s.MemoryAddress + off)
		h.Write(b[:])
		h.Write(content[off : off+ExtendChunk])
	}
}
