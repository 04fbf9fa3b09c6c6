package snp

import (
	"fmt"
	"slices"
	"strings"
)

// CPUSignature returns the CPUID Fn0000_0001_EAX value for a family, model
// and stepping (AMD CPUID Specification, publication 25481, "CPUID
// Fn0000_0001_EAX Family, Model, Stepping Identifiers"): families above 0xF
// are encoded as BaseFamily 0xF plus ExtFamily = family-0xF.
func CPUSignature(family, model, stepping uint32) uint32 {
	base, ext := family, uint32(0)
	if family > 0xf {
		base, ext = 0xf, (family-0xf)&0xff
	}
	return ext<<20 | (model>>4&0xf)<<16 | base<<8 | (model&0xf)<<4 | stepping&0xf
}

// cpuModel is a QEMU CPU model's family, model and stepping, from QEMU
// target/i386/cpu.c builtin_x86_defs. The versions of one model keep its
// signature. The names are those sev-snp-measure (vcpu_types.py) knows;
// QEMU 7.2 lists EPYC-v1..v3, EPYC-IBPB, EPYC-Rome-v1..v2
// and EPYC-Milan-v1 (`qemu-system-x86_64 -cpu help`); later versions add
// the others. For a model not listed, pass the signature (--vcpu-sig).
type cpuModel struct{ family, model, stepping uint32 }

var (
	epyc      = cpuModel{23, 1, 2}
	epycRome  = cpuModel{23, 49, 0}
	epycMilan = cpuModel{25, 1, 1}
	epycGenoa = cpuModel{25, 17, 0}
	epycTurin = cpuModel{26, 0, 0}
	cpuModels = map[string]cpuModel{
		"EPYC": epyc, "EPYC-v1": epyc, "EPYC-v2": epyc, "EPYC-IBPB": epyc, "EPYC-v3": epyc, "EPYC-v4": epyc,
		"EPYC-Rome": epycRome, "EPYC-Rome-v1": epycRome, "EPYC-Rome-v2": epycRome, "EPYC-Rome-v3": epycRome,
		"EPYC-Milan": epycMilan, "EPYC-Milan-v1": epycMilan, "EPYC-Milan-v2": epycMilan,
		"EPYC-Genoa": epycGenoa, "EPYC-Genoa-v1": epycGenoa,
		"EPYC-Turin": epycTurin,
	}
)

// CPUModels returns the QEMU CPU model names LookupCPU knows, sorted.
func CPUModels() []string {
	names := make([]string, 0, len(cpuModels))
	for n := range cpuModels {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// LookupCPU returns the CPUID signature QEMU's CPU model name (matched
// case-insensitively, e.g. "EPYC-v4" → 0x800f12) puts in the VMSA's RDX.
// An unknown name is an error listing the known ones.
func LookupCPU(name string) (uint32, error) {
	for n, m := range cpuModels {
		if strings.EqualFold(n, name) {
			return CPUSignature(m.family, m.model, m.stepping), nil
		}
	}
	return 0, fmt.Errorf("unknown vCPU type %q: want a QEMU AMD CPU model (%s), or give the CPUID signature with --vcpu-sig", name, strings.Join(CPUModels(), ", "))
}
