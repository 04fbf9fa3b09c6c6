package snp

import (
	"fmt"

	"github.com/cofferhq/coffer/attestation/measure/ovmf"
)

// DefaultGuestFeatures is SEV_FEATURES with only SNPActive set (0x1), the
// default of sev-snp-measure. QEMU ≥ 9 with a Linux ≥ 6.x host sets
// DebugSwap too (0x21) when the host supports it.
const DefaultGuestFeatures = 0x1

// Options are the inputs to Measure besides the firmware.
type Options struct {
	// VCPUs is the number of vCPUs, at least 1; each adds a VMSA page.
	VCPUs int
	// Signature is the vCPU's CPUID signature (LookupCPU, or given).
	Signature uint32
	// GuestFeatures is the VMSA SEV_FEATURES value (DefaultGuestFeatures).
	GuestFeatures uint64
	// VMM is the hypervisor; "" means VMMQEMU.
	VMM VMM
	// Kernel holds the direct-boot hashes, or nil for no -kernel (then the
	// SNP_KERNEL_HASHES page, if any, is measured as a ZERO page).
	Kernel *KernelHashes
	// OVMFHash, if set, is the launch digest after the firmware pages
	// (OVMFHash), used instead of hashing the image's pages again.
	OVMFHash *[DigestSize]byte
}

// OVMFHash returns the launch digest after QEMU has added the firmware
// image as PageNormal pages at GPA 4 GiB - size (QEMU sev.c
// sev_snp_launch_update for the pflash region).
func OVMFHash(img *ovmf.Image) [DigestSize]byte {
	var d LaunchDigest
	_ = d.NormalPages(img.GPA(), img.Data()) // ovmf.Parse guarantees whole pages
	return d.Sum()
}

// Measure returns the SNP launch digest of a QEMU guest booted from img with
// opts. The updates are, in order: the firmware pages (or opts.OVMFHash);
// for each OVMF SEV metadata section, in image order, SNP_SEC_MEM and
// SVSM_CAA as ZERO pages, SNP_SECRETS as a SECRETS page, CPUID as a CPUID
// page, SNP_KERNEL_HASHES as one NORMAL page holding the SEV hashes table
// (or ZERO pages without a kernel); then one VMSA page per vCPU (vCPU 0 at
// the BSP reset vector, the others at the SEV-ES reset block's EIP).
//
// It fails, and returns no digest, when opts.VCPUs < 1, the VMM is not
// QEMU, a kernel is given but the firmware has no SNP_KERNEL_HASHES
// section or SEV hashes table entry, or the firmware lacks the SEV-ES
// reset block.
func Measure(img *ovmf.Image, opts Options) ([DigestSize]byte, error) {
	var zero [DigestSize]byte
	if opts.VCPUs < 1 {
		return zero, fmt.Errorf("measure SNP launch: %d vCPUs: want at least 1", opts.VCPUs)
	}
	if opts.VMM == "" {
		opts.VMM = VMMQEMU
	}
	if opts.VMM != VMMQEMU {
		return zero, fmt.Errorf("measure SNP launch: VMM type %q is not supported, want %q", opts.VMM, VMMQEMU)
	}
	sections, err := img.SEVMetadata()
	if err != nil {
		return zero, fmt.Errorf("measure SNP launch: %w", err)
	}
	if len(sections) == 0 {
		return zero, fmt.Errorf("measure SNP launch: the OVMF image has no SEV metadata (GUID %s): use an OVMF build with SEV-SNP support (OvmfPkg/AmdSev/AmdSevX64.dsc)", ovmf.SEVMetadataGUID)
	}
	var hashesPage *[ovmf.PageSize]byte
	if opts.Kernel != nil {
		if hashesPage, err = kernelHashesPage(img, sections, opts.Kernel); err != nil {
			return zero, fmt.Errorf("measure SNP launch: %w", err)
		}
	}
	apEIP, err := img.SEVESResetEIP()
	if err != nil {
		return zero, fmt.Errorf("measure SNP launch: %w", err)
	}

	d := &LaunchDigest{}
	if opts.OVMFHash != nil {
		d = NewLaunchDigest(*opts.OVMFHash)
	} else if err := d.NormalPages(img.GPA(), img.Data()); err != nil {
		return zero, fmt.Errorf("measure SNP launch: firmware: %w", err)
	}
	for _, s := range sections {
		gpa := uint64(s.GPA)
		switch s.Type {
		case ovmf.SectionSNPSecMem, ovmf.SectionSVSMCAA:
			d.ZeroPages(gpa, uint64(s.Size))
		case ovmf.SectionSNPSecrets:
			d.Update(PageSecrets, gpa, zero)
		case ovmf.SectionCPUID:
			d.Update(PageCPUID, gpa, zero)
		case ovmf.SectionSNPKernelHashes:
			if hashesPage != nil {
				_ = d.NormalPages(gpa, hashesPage[:]) // one whole page
			} else {
				d.ZeroPages(gpa, uint64(s.Size))
			}
		}
	}
	for i := range opts.VCPUs {
		eip := uint32(BSPEIP)
		if i > 0 {
			eip = apEIP
		}
		page, err := VMSA(opts.VMM, VCPUState{EIP: eip, Signature: opts.Signature, GuestFeatures: opts.GuestFeatures})
		if err != nil {
			return zero, fmt.Errorf("measure SNP launch: vCPU %d: %w", i, err)
		}
		d.VMSAPage(page)
	}
	return d.Sum(), nil
}

// kernelHashesPage builds the SNP_KERNEL_HASHES page: the hashes table
// goes at the GPA the footer table names, which must lie in the
// SNP_KERNEL_HASHES section's single page.
func kernelHashesPage(img *ovmf.Image, sections []ovmf.SEVSection, h *KernelHashes) (*[ovmf.PageSize]byte, error) {
	var sec *ovmf.SEVSection
	for i := range sections {
		if sections[i].Type == ovmf.SectionSNPKernelHashes {
			sec = &sections[i]
		}
	}
	if sec == nil {
		return nil, fmt.Errorf("a kernel is given but the OVMF SEV metadata has no SNP_KERNEL_HASHES section: this firmware cannot measure a direct kernel boot; use the AmdSevX64 OVMF build, or measure without --kernel")
	}
	if sec.Size != ovmf.PageSize {
		return nil, fmt.Errorf("the SNP_KERNEL_HASHES section is %d bytes, want one 4 KiB page", sec.Size)
	}
	gpa, _, err := img.SEVHashTable()
	if err != nil {
		return nil, err
	}
	if gpa&^(ovmf.PageSize-1) != sec.GPA {
		return nil, fmt.Errorf("the SEV hashes table GPA %#x is not in the SNP_KERNEL_HASHES page at %#x", gpa, sec.GPA)
	}
	return h.Page(int(gpa & (ovmf.PageSize - 1)))
}
