package snp

import (
	"bytes"
	"encoding/hex"
	"fmt"

	"github.com/cofferhq/coffer/attestation"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
)

// validate checks the report's fields against opts and v's configuration,
// each failure naming its check. It covers what go-sev-guest's
// validate.SnpAttestation checks for Coffer's options (guest policy:
// debug, migration agent, CXL; VMPL 0; REPORTED_TCB equal to the V[CL]EK's
// certified TCB and not above CURRENT_TCB; COMMITTED equal to CURRENT TCB
// and firmware version; CHIP_ID equal to the VCEK's hwID) plus the TCB
// floors, with two differences: TCBs are decoded in the report's product
// layout (Turin's differs, which go-sev-guest v0.15 does not know), and
// the certificate's extensions come from the verified-chain cache rather
// than being parsed again for every report.
func (v *Verifier) validate(ev *Evidence, ek *endorsementKey, opts attestation.VerifyOptions) error {
	r := ev.Report
	if !opts.SkipReportData {
		if err := checkBytes("REPORT_DATA", r.GetReportData(), opts.ReportData, abi.ReportDataSize,
			"the evidence is bound to another nonce or tee-pubkey"); err != nil {
			return attestation.Fail(attestation.CheckReportData, err)
		}
	}
	if opts.HostData != nil {
		if err := checkBytes("HOST_DATA", r.GetHostData(), opts.HostData, abi.HostDataSize,
			"the VM was launched with other host data (init-data digest)"); err != nil {
			return attestation.Fail(attestation.CheckHostData, err)
		}
	}
	policy, err := abi.ParseSnpPolicy(r.GetPolicy())
	if err != nil {
		return attestation.Fail(attestation.CheckPolicy, fmt.Errorf("decode guest policy 0x%x: %w", r.GetPolicy(), err))
	}
	if policy.Debug && !v.cfg.AllowDebug {
		return attestation.Fail(attestation.CheckDebug, fmt.Errorf(
			"guest policy 0x%x has DEBUG (bit 19) set, so the host can read and modify guest memory; relaunch without debug (AllowDebug is for development only)",
			r.GetPolicy()))
	}
	if policy.MigrateMA {
		return attestation.Fail(attestation.CheckPolicy, fmt.Errorf("guest policy 0x%x allows a migration agent (MIGRATE_MA, bit 18), which can export guest memory: relaunch without it", r.GetPolicy()))
	}
	if policy.CXLAllowed {
		return attestation.Fail(attestation.CheckPolicy, fmt.Errorf("guest policy 0x%x allows CXL devices or memory (CXL_ALLOW, bit 21): relaunch without it", r.GetPolicy()))
	}
	if r.GetVmpl() != 0 {
		return attestation.Fail(attestation.CheckPolicy, fmt.Errorf("report was requested at VMPL %d, want 0: only the guest's most privileged level vouches for the whole VM", r.GetVmpl()))
	}

	line := ek.productLine
	reported := DecodeTCB(line, r.GetReportedTcb())
	committed := DecodeTCB(line, r.GetCommittedTcb())
	current := DecodeTCB(line, r.GetCurrentTcb())
	launch := DecodeTCB(line, r.GetLaunchTcb())
	minLaunch := v.cfg.MinimumTCB
	if v.cfg.MinimumLaunchTCB != nil {
		minLaunch = *v.cfg.MinimumLaunchTCB
	}
	for _, c := range []struct {
		check, field string
		got          TCB
		floor        kds.TCBParts
	}{
		{attestation.CheckReportedTCB, "REPORTED_TCB", reported, v.cfg.MinimumTCB},
		{attestation.CheckCommittedTCB, "COMMITTED_TCB", committed, v.cfg.MinimumTCB},
		{attestation.CheckLaunchTCB, "LAUNCH_TCB", launch, minLaunch},
	} {
		if !c.got.atLeast(c.floor, nil) {
			return attestation.Fail(c.check, fmt.Errorf("report's %s %s is below the minimum %s in at least one component: update the host's SEV firmware and microcode",
				c.field, c.got.format(line), FormatTCB(c.floor)))
		}
	}
	if reported != ek.info.tcb {
		return attestation.Fail(attestation.CheckPolicy, fmt.Errorf("report's REPORTED_TCB (%s) is not the TCB its %v is certified for (%s): the host must provide the %v of its reported TCB",
			reported.format(line), ek.signer, ek.info.tcb.format(line), ek.signer))
	}
	if !current.atLeast(reported.Parts(), &reported.FMC) {
		return attestation.Fail(attestation.CheckPolicy, fmt.Errorf("report's REPORTED_TCB (%s) is above its CURRENT_TCB (%s): the host reports firmware it does not run", reported.format(line), current.format(line)))
	}
	if committed != current {
		return attestation.Fail(attestation.CheckPolicy, fmt.Errorf("report's COMMITTED_TCB (%s) differs from its CURRENT_TCB (%s): the host runs provisional firmware it can roll back; commit it", committed.format(line), current.format(line)))
	}
	if r.GetCommittedBuild() != r.GetCurrentBuild() || r.GetCommittedMajor() != r.GetCurrentMajor() || r.GetCommittedMinor() != r.GetCurrentMinor() {
		return attestation.Fail(attestation.CheckPolicy, fmt.Errorf("report's committed firmware %d.%d build %d differs from the current %d.%d build %d: the host runs provisional firmware; commit it",
			r.GetCommittedMajor(), r.GetCommittedMinor(), r.GetCommittedBuild(), r.GetCurrentMajor(), r.GetCurrentMinor(), r.GetCurrentBuild()))
	}
	if ek.signer == abi.VcekReportSigner && !allZero(r.GetChipId()) && !chipIDMatches(r.GetChipId(), ek.info.hwid) {
		return attestation.Fail(attestation.CheckPolicy, fmt.Errorf("report's CHIP_ID %x is not the VCEK's hwID %x: the VCEK belongs to another chip",
			r.GetChipId(), ek.info.hwid))
	}
	return nil
}

func checkBytes(field string, got, want []byte, size int, hint string) error {
	if len(want) == 0 {
		return fmt.Errorf("no expected %s was given; it is required (set VerifyOptions.ReportData, or SkipReportData only for offline inspection)", field)
	}
	if len(want) != size {
		return fmt.Errorf("expected %s is %d bytes, want %d", field, len(want), size)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("report's %s is %s, want %s: %s", field, hex.EncodeToString(got), hex.EncodeToString(want), hint)
	}
	return nil
}

// FormatTCB renders TCB parts as "0x<hex> (bl B tee T snp S ucode U)".
func FormatTCB(p kds.TCBParts) string {
	v := uint64(p.UcodeSpl)<<56 | uint64(p.SnpSpl)<<48 | uint64(p.Spl7)<<40 | uint64(p.Spl6)<<32 |
		uint64(p.Spl5)<<24 | uint64(p.Spl4)<<16 | uint64(p.TeeSpl)<<8 | uint64(p.BlSpl)
	return fmt.Sprintf("0x%016x (bl %d tee %d snp %d ucode %d)", v, p.BlSpl, p.TeeSpl, p.SnpSpl, p.UcodeSpl)
}
