// Package snp computes the AMD SEV-SNP launch digest (the MEASUREMENT field
// of the attestation report) a QEMU-launched guest will have, from the
// OVMF image, the direct-boot kernel, initrd and command line, the vCPU
// count and type, and the guest features.
//
// It follows the SEV Secure Nested Paging Firmware ABI Specification (AMD
// publication 56860), §8.17 SNP_LAUNCH_UPDATE: every page the hypervisor
// adds to the guest before SNP_LAUNCH_FINISH extends the launch digest
// with a PAGE_INFO structure (§8.17.2, table "PAGE_INFO Structure"). The
// order of the updates is QEMU's (target/i386/sev.c): the firmware pages,
// then the OVMF SEV metadata sections in image order (with the SEV hashes
// table in the SNP_KERNEL_HASHES page), then one VMSA page per vCPU.
package snp

import (
	"crypto/sha512"
	"encoding/binary"
	"fmt"

	"github.com/cofferhq/coffer/attestation/measure/ovmf"
)

// DigestSize is the size of the launch digest: a SHA-384 hash, 48 bytes.
const DigestSize = sha512.Size384

// PageType is a SNP_LAUNCH_UPDATE page type (ABI spec §8.17.2, table
// "Page Types").
type PageType uint8

// Page types.
const (
	// PageNormal is a page of data; its SHA-384 is measured.
	PageNormal PageType = 0x01
	// PageVMSA is a vCPU save area; its SHA-384 is measured at GPA VMSAGPA.
	PageVMSA PageType = 0x02
	// PageZero is a page of zeros; CONTENTS is measured as zero.
	PageZero PageType = 0x03
	// PageUnmeasured is an unmeasured page; CONTENTS is zero.
	PageUnmeasured PageType = 0x04
	// PageSecrets is the secrets page the firmware fills; CONTENTS is zero.
	PageSecrets PageType = 0x05
	// PageCPUID is the CPUID page the firmware validates; CONTENTS is zero.
	PageCPUID PageType = 0x06
)

// VMSAGPA is the GPA a VMSA page is measured at. KVM hands VMSAs to the
// firmware at GPA 2^64-1, which the PAGE_INFO GPA field records page-
// aligned with bits 63:52 clear (ABI spec §8.17.2, note on VMSA pages;
// sev-snp-measure gctx.py VMSA_GPA).
const VMSAGPA = 0x0000_FFFF_FFFF_F000

// PageInfoSize is the size of PAGE_INFO in bytes (0x70).
const PageInfoSize = 0x70

// PageInfo is the PAGE_INFO structure hashed into the launch digest for
// each page (ABI spec §8.17.2, table "PAGE_INFO Structure"):
//
//	0x00 DIGEST_CUR  48 bytes  the launch digest before this page
//	0x30 CONTENTS    48 bytes  SHA-384 of the page, or zero (see PageType)
//	0x60 LENGTH      uint16    0x70
//	0x62 PAGE_TYPE   uint8
//	0x63 IMI_PAGE    uint8     bit 0; 0 for a normal launch
//	0x64 VMPL3_PERMS uint8
//	0x65 VMPL2_PERMS uint8
//	0x66 VMPL1_PERMS uint8
//	0x67 reserved    uint8
//	0x68 GPA         uint64
type PageInfo struct {
	DigestCur  [DigestSize]byte
	Contents   [DigestSize]byte
	Type       PageType
	IMI        bool
	VMPL3Perms uint8
	VMPL2Perms uint8
	VMPL1Perms uint8
	GPA        uint64
}

// Marshal returns the 112-byte little-endian encoding of p.
func (p *PageInfo) Marshal() [PageInfoSize]byte {
	var b [PageInfoSize]byte
	copy(b[0x00:], p.DigestCur[:])
	copy(b[0x30:], p.Contents[:])
	binary.LittleEndian.PutUint16(b[0x60:], PageInfoSize)
	b[0x62] = byte(p.Type)
	if p.IMI {
		b[0x63] = 1
	}
	b[0x64] = p.VMPL3Perms
	b[0x65] = p.VMPL2Perms
	b[0x66] = p.VMPL1Perms
	binary.LittleEndian.PutUint64(b[0x68:], p.GPA)
	return b
}

// LaunchDigest is the guest context's launch digest (GCTX.LD, ABI spec
// §8.17.2): 48 zero bytes at SNP_LAUNCH_START, then, for each page added,
// LD = SHA-384(PAGE_INFO). The zero value is the digest at launch start.
type LaunchDigest struct {
	ld [DigestSize]byte
}

// NewLaunchDigest starts from a given digest, e.g. a precomputed OVMF hash
// (the digest after the firmware pages).
func NewLaunchDigest(seed [DigestSize]byte) *LaunchDigest {
	return &LaunchDigest{ld: seed}
}

// Sum returns the current launch digest.
func (d *LaunchDigest) Sum() [DigestSize]byte { return d.ld }

// Update extends the digest with one page: LD = SHA-384(PAGE_INFO{LD,
// contents, t, gpa}), with IMI and the VMPL permissions zero, as QEMU's
// SNP_LAUNCH_UPDATE leaves them.
func (d *LaunchDigest) Update(t PageType, gpa uint64, contents [DigestSize]byte) {
	p := PageInfo{DigestCur: d.ld, Contents: contents, Type: t, GPA: gpa}
	b := p.Marshal()
	d.ld = sha512.Sum384(b[:])
}

// NormalPages measures data, whose length must be a whole number of 4 KiB
// pages, as PageNormal pages starting at gpa.
func (d *LaunchDigest) NormalPages(gpa uint64, data []byte) error {
	if len(data)%ovmf.PageSize != 0 {
		return fmt.Errorf("measure normal pages at GPA %#x: %d bytes is not a whole number of 4 KiB pages", gpa, len(data))
	}
	for off := 0; off < len(data); off += ovmf.PageSize {
		d.Update(PageNormal, gpa+uint64(off), sha512.Sum384(data[off:off+ovmf.PageSize]))
	}
	return nil
}

// ZeroPages measures size bytes (a whole number of pages) from gpa as
// PageZero pages, whose CONTENTS is zero.
func (d *LaunchDigest) ZeroPages(gpa uint64, size uint64) {
	for off := uint64(0); off < size; off += ovmf.PageSize {
		d.Update(PageZero, gpa+off, [DigestSize]byte{})
	}
}

// VMSAPage measures one 4 KiB VMSA page at VMSAGPA.
func (d *LaunchDigest) VMSAPage(page *[ovmf.PageSize]byte) {
	d.Update(PageVMSA, VMSAGPA, sha512.Sum384(page[:]))
}
