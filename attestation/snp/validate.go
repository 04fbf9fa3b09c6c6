package snp

import (
	"bytes"
	"encoding/hex"
	"fmt"

	"github.com/cofferhq/coffer/attestation"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
)

// validate runs Coffer's named checks first, so a failure names the exact
// check, then go-sev-guest's validate.SnpAttestation for the rest (VCEK TCB
// equals REPORTED_TCB, CHIP_ID equals the VCEK's HWID, committed equals
// current firmware, VMPL 0, no migration agent, no CXL).
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
	minLaunch := v.cfg.MinimumTCB
	if v.cfg.MinimumLaunchTCB != nil {
		minLaunch = *v.cfg.MinimumLaunchTCB
	}
	for _, c := range []struct {
		check, field string
		got          uint64
		floor        kds.TCBParts
	}{
		{attestation.CheckReportedTCB, "REPORTED_TCB", r.GetReportedTcb(), v.cfg.MinimumTCB},
		{attestation.CheckCommittedTCB, "COMMITTED_TCB", r.GetCommittedTcb(), v.cfg.MinimumTCB},
		{attestation.CheckLaunchTCB, "LAUNCH_TCB", r.GetLaunchTcb(), minLaunch},
	} {
		got := kds.DecomposeTCBVersion(kds.TCBVersion(c.got))
		if !kds.TCBPartsLE(c.floor, got) {
			return attestation.Fail(c.check, fmt.Errorf("report's %s %s is below the minimum %s in at least one component: update the host's SEV firmware and microcode",
				c.field, FormatTCB(got), FormatTCB(c.floor)))
		}
	}

	vmpl := 0
	vopts := &validate.Options{
		GuestPolicy:      abi.SnpPolicy{SMT: true, Debug: v.cfg.AllowDebug},
		ReportData:       opts.ReportData,
		HostData:         opts.HostData,
		MinimumTCB:       v.cfg.MinimumTCB,
		MinimumLaunchTCB: minLaunch,
		VMPL:             &vmpl,
	}
	if opts.SkipReportData {
		vopts.ReportData = nil
	}
	att := &spb.Attestation{Report: r, CertificateChain: &spb.CertificateChain{}}
	if ek.signer == abi.VlekReportSigner {
		att.CertificateChain.VlekCert = ek.der
	} else {
		att.CertificateChain.VcekCert = ek.der
	}
	if err := validate.SnpAttestation(att, vopts); err != nil {
		return attestation.Fail(attestation.CheckPolicy, fmt.Errorf("validate SNP report: %w", err))
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
