package snp

import (
	"encoding/binary"
	"fmt"

	"github.com/cofferhq/coffer/attestation/measure/ovmf"
)

// VMM names the hypervisor that builds the initial vCPU state; the VMSA
// contents, and so the digest, depend on it.
type VMM string

// VMMQEMU is QEMU/KVM, the only VMM this package supports.
const VMMQEMU VMM = "qemu"

// BSPEIP is the boot processor's reset EIP (x86 reset vector 0xFFFFFFF0).
const BSPEIP = 0xFFFF_FFF0

// VMSA save-area field offsets, in bytes (AMD64 Architecture Programmer's
// Manual vol. 2, appendix B, table B-4 "VMSA Layout, State Save Area for
// SEV-ES"; Linux arch/x86/include/asm/svm.h struct sev_es_save_area).
const (
	vmsaES          = 0x000 // segments: selector u16, attrib u16, limit u32, base u64
	vmsaCS          = 0x010
	vmsaSS          = 0x020
	vmsaDS          = 0x030
	vmsaFS          = 0x040
	vmsaGS          = 0x050
	vmsaGDTR        = 0x060
	vmsaLDTR        = 0x070
	vmsaIDTR        = 0x080
	vmsaTR          = 0x090
	vmsaEFER        = 0x0D0
	vmsaCR4         = 0x148
	vmsaCR0         = 0x158
	vmsaDR7         = 0x160
	vmsaDR6         = 0x168
	vmsaRFLAGS      = 0x170
	vmsaRIP         = 0x178
	vmsaGPAT        = 0x268
	vmsaRDX         = 0x310
	vmsaSEVFeatures = 0x3B0
	vmsaXCR0        = 0x3E8
	vmsaMXCSR       = 0x408
	vmsaX87FCW      = 0x410
)

// VCPUState is the initial state QEMU/KVM gives one vCPU of an SNP guest,
// the inputs to its VMSA page.
type VCPUState struct {
	// EIP is the 32-bit reset address: BSPEIP for vCPU 0, the OVMF SEV-ES
	// reset block's address for the others. CS.base gets its upper 16
	// bits, RIP its lower 16 (QEMU target/i386/sev.c
	// sev_es_set_reset_vector).
	EIP uint32
	// Signature is the CPUID Fn0000_0001_EAX signature KVM puts in RDX at
	// reset (x86 reset state: EDX holds the processor signature).
	Signature uint32
	// GuestFeatures is the SEV_FEATURES field (APM vol. 2 §15.35.4 / table
	// B-4 offset 0x3B0): bit 0 SNPActive, bit 5 DebugSwap, ...
	GuestFeatures uint64
}

// putSeg writes a VMCB segment (selector, attributes, limit, base).
func putSeg(p *[ovmf.PageSize]byte, off int, sel, attrib uint16, limit uint32, base uint64) {
	binary.LittleEndian.PutUint16(p[off:], sel)
	binary.LittleEndian.PutUint16(p[off+2:], attrib)
	binary.LittleEndian.PutUint32(p[off+4:], limit)
	binary.LittleEndian.PutUint64(p[off+8:], base)
}

// VMSA returns the 4 KiB VMSA page QEMU/KVM measures for a vCPU in state s.
// Only VMMQEMU is supported. The values are the x86 reset state as KVM
// sets it (APM vol. 2 §14.1.3 "Processor Initialization State"), with the
// KVM additions sev-snp-measure documents: EFER.SVME (0x1000), CR4.MCE
// (0x40), the reset PAT (0x0007040600070406), XCR0 = 1, MXCSR = 0x1F80 and
// x87 FCW = 0x37F (KVM copies the reset FPU state into the VMSA since
// Linux 6.x), and QEMU's segment attributes (CS 0x9B, data 0x93, LDTR
// 0x82, TR 0x8B). Every other byte is zero.
func VMSA(vmm VMM, s VCPUState) (*[ovmf.PageSize]byte, error) {
	if vmm != VMMQEMU {
		return nil, fmt.Errorf("build VMSA: VMM type %q is not supported, want %q (EC2 and krun set other initial registers)", vmm, VMMQEMU)
	}
	var p [ovmf.PageSize]byte
	putSeg(&p, vmsaES, 0, 0x93, 0xffff, 0)
	putSeg(&p, vmsaCS, 0xf000, 0x9b, 0xffff, uint64(s.EIP&0xffff0000))
	putSeg(&p, vmsaSS, 0, 0x93, 0xffff, 0)
	putSeg(&p, vmsaDS, 0, 0x93, 0xffff, 0)
	putSeg(&p, vmsaFS, 0, 0x93, 0xffff, 0)
	putSeg(&p, vmsaGS, 0, 0x93, 0xffff, 0)
	putSeg(&p, vmsaGDTR, 0, 0, 0xffff, 0)
	putSeg(&p, vmsaLDTR, 0, 0x82, 0xffff, 0)
	putSeg(&p, vmsaIDTR, 0, 0, 0xffff, 0)
	putSeg(&p, vmsaTR, 0, 0x8b, 0xffff, 0)
	le := binary.LittleEndian
	le.PutUint64(p[vmsaEFER:], 0x1000)
	le.PutUint64(p[vmsaCR4:], 0x40)
	le.PutUint64(p[vmsaCR0:], 0x10)
	le.PutUint64(p[vmsaDR7:], 0x400)
	le.PutUint64(p[vmsaDR6:], 0xffff0ff0)
	le.PutUint64(p[vmsaRFLAGS:], 0x2)
	le.PutUint64(p[vmsaRIP:], uint64(s.EIP&0xffff))
	le.PutUint64(p[vmsaGPAT:], 0x0007040600070406)
	le.PutUint64(p[vmsaRDX:], uint64(s.Signature))
	le.PutUint64(p[vmsaSEVFeatures:], s.GuestFeatures)
	le.PutUint64(p[vmsaXCR0:], 0x1)
	le.PutUint32(p[vmsaMXCSR:], 0x1f80)
	le.PutUint16(p[vmsaX87FCW:], 0x37f)
	return &p, nil
}
