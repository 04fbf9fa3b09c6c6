package snp

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
)

// TCB_VERSION layouts. go-sev-guest v0.15's kds.DecomposeTCBVersion knows
// only the Milan/Genoa one; Turin (family 1Ah) moved the fields and added
// the FMC SPL (SEV-SNP Firmware ABI spec 56860 rev 1.58, table 3
// "TCB_VERSION Structure" for family 1Ah; AMD KDS spec 57230 §3.2):
//
//	byte:          0    1    2    3    4..5   6    7
//	Milan, Genoa:  BL   TEE  -    -    -      SNP  UCODE
//	Turin:         FMC  BL   TEE  SNP  -      -    UCODE

// OidFmcSpl is the KDS VCEK extension carrying the FMC SPL of a Turin VCEK
// (1.3.6.1.4.1.3704.1.3.9), unknown to go-sev-guest v0.15.
var OidFmcSpl = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 9}

// turinHWIDSize is the length of a Turin chip's hardware ID: the first 8
// bytes of CHIP_ID (the rest is zero), as KDS names and certifies it.
const turinHWIDSize = 8

// TCB is a decoded SNP TCB_VERSION: the security patch levels (SPLs) of the
// PSP bootloader, PSP OS (TEE), SNP firmware, microcode and, on Turin, the
// FMC. FMC is 0 on Milan and Genoa, whose TCB has no FMC field.
type TCB struct {
	FMC        uint8
	Bootloader uint8
	TEE        uint8
	SNP        uint8
	Microcode  uint8
}

// DecodeTCB decodes a 64-bit TCB_VERSION in productLine's layout (Turin,
// or the Milan/Genoa layout for any other line, "sim" included).
func DecodeTCB(productLine string, v uint64) TCB {
	b := func(i uint) uint8 { return uint8(v >> (8 * i)) }
	if productLine == Turin {
		return TCB{FMC: b(0), Bootloader: b(1), TEE: b(2), SNP: b(3), Microcode: b(7)}
	}
	return TCB{Bootloader: b(0), TEE: b(1), SNP: b(6), Microcode: b(7)}
}

// EncodeTCB is DecodeTCB's inverse: the 64-bit TCB_VERSION of t in
// productLine's layout (reserved bytes zero; FMC dropped outside Turin).
func EncodeTCB(productLine string, t TCB) uint64 {
	if productLine == Turin {
		return uint64(t.FMC) | uint64(t.Bootloader)<<8 | uint64(t.TEE)<<16 | uint64(t.SNP)<<24 | uint64(t.Microcode)<<56
	}
	return uint64(t.Bootloader) | uint64(t.TEE)<<8 | uint64(t.SNP)<<48 | uint64(t.Microcode)<<56
}

// Parts returns t as go-sev-guest TCB parts (the FMC has no place there).
func (t TCB) Parts() kds.TCBParts {
	return kds.TCBParts{BlSpl: t.Bootloader, TeeSpl: t.TEE, SnpSpl: t.SNP, UcodeSpl: t.Microcode}
}

// atLeast reports whether every component of t is >= floor's; floor's FMC
// applies only when floorFMC is set.
func (t TCB) atLeast(floor kds.TCBParts, floorFMC *uint8) bool {
	if floorFMC != nil && t.FMC < *floorFMC {
		return false
	}
	return t.Bootloader >= floor.BlSpl && t.TEE >= floor.TeeSpl && t.SNP >= floor.SnpSpl && t.Microcode >= floor.UcodeSpl
}

// format renders t as "0x<TCB_VERSION hex> (bl B tee T snp S ucode U)"
// ("fmc F " first on Turin).
func (t TCB) format(productLine string) string {
	s := fmt.Sprintf("bl %d tee %d snp %d ucode %d", t.Bootloader, t.TEE, t.SNP, t.Microcode)
	if productLine == Turin {
		s = fmt.Sprintf("fmc %d ", t.FMC) + s
	}
	return fmt.Sprintf("0x%016x (%s)", EncodeTCB(productLine, t), s)
}

// ekInfo is what the KBS needs from an endorsement key certificate's KDS
// extensions, read once when its chain is verified and cached with it, so
// a repeat attestation never re-parses the certificate.
type ekInfo struct {
	// tcb is the TCB the VCEK/VLEK is certified for, in the report's layout.
	tcb TCB
	// hwid is the VCEK's hardware ID (64 bytes; 8 on Turin); nil for a VLEK.
	hwid []byte
}

// readEKInfo reads the TCB and hardware ID extensions of cert. Milan and
// Genoa certificates go through go-sev-guest's kds parser (which also
// enforces the extension profile); Turin ones, which carry the FMC SPL
// extension and an 8-byte HWID that go-sev-guest v0.15 rejects, are read
// here with the same rules (each SPL an ASN.1 INTEGER 0-255, the HWID raw
// or as an OCTET STRING).
func readEKInfo(cert *x509.Certificate, signer abi.ReportSigner, productLine string) (*ekInfo, error) {
	if productLine != Turin {
		exts, err := kds.CertificateExtensions(cert, signer)
		if err != nil {
			return nil, fmt.Errorf("read %v certificate extensions: %w", signer, err)
		}
		p := kds.DecomposeTCBVersion(exts.TCBVersion)
		return &ekInfo{tcb: TCB{Bootloader: p.BlSpl, TEE: p.TeeSpl, SNP: p.SnpSpl, Microcode: p.UcodeSpl}, hwid: exts.HWID}, nil
	}
	info := &ekInfo{}
	spls := []struct {
		id  asn1.ObjectIdentifier
		out *uint8
	}{
		{OidFmcSpl, &info.tcb.FMC}, {kds.OidBlSpl, &info.tcb.Bootloader}, {kds.OidTeeSpl, &info.tcb.TEE},
		{kds.OidSnpSpl, &info.tcb.SNP}, {kds.OidUcodeSpl, &info.tcb.Microcode},
	}
	for _, s := range spls {
		raw := extension(cert, s.id)
		if raw == nil {
			return nil, fmt.Errorf("%v certificate has no SPL extension %v", signer, s.id)
		}
		var n int
		if rest, err := asn1.Unmarshal(raw, &n); err != nil || len(rest) != 0 || n < 0 || n > 255 {
			return nil, fmt.Errorf("%v certificate SPL extension %v is not an INTEGER 0-255", signer, s.id)
		}
		*s.out = uint8(n)
	}
	if signer == abi.VcekReportSigner {
		raw := extension(cert, kds.OidHwid)
		if raw == nil {
			return nil, fmt.Errorf("VCEK certificate has no hwID extension %v", kds.OidHwid)
		}
		hwid := raw
		if len(raw) != turinHWIDSize && len(raw) != abi.ChipIDSize {
			var octets []byte
			if rest, err := asn1.Unmarshal(raw, &octets); err != nil || len(rest) != 0 {
				return nil, fmt.Errorf("VCEK hwID extension is %d bytes and not an OCTET STRING", len(raw))
			}
			hwid = octets
		}
		if len(hwid) != turinHWIDSize && len(hwid) != abi.ChipIDSize {
			return nil, fmt.Errorf("VCEK hwID is %d bytes: want %d (Turin) or %d", len(hwid), turinHWIDSize, abi.ChipIDSize)
		}
		info.hwid = append([]byte(nil), hwid...)
	}
	return info, nil
}

func extension(cert *x509.Certificate, id asn1.ObjectIdentifier) []byte {
	for _, e := range cert.Extensions {
		if e.Id.Equal(id) {
			return e.Value
		}
	}
	return nil
}

// chipIDMatches reports whether a report's 64-byte CHIP_ID is the VCEK's
// hwid: equal, or, for an 8-byte Turin hwid, its first 8 bytes with the
// rest zero.
func chipIDMatches(chipID, hwid []byte) bool {
	if len(hwid) == turinHWIDSize {
		return len(chipID) == abi.ChipIDSize && string(chipID[:turinHWIDSize]) == string(hwid) && allZero(chipID[turinHWIDSize:])
	}
	return string(chipID) == string(hwid)
}

// kdsHWID is the hardware ID KDS names a chip by: CHIP_ID, or its first 8
// bytes on Turin.
func kdsHWID(productLine string, chipID []byte) string {
	if productLine == Turin && len(chipID) >= turinHWIDSize {
		return hex.EncodeToString(chipID[:turinHWIDSize])
	}
	return hex.EncodeToString(chipID)
}

// VCEKURL returns the AMD KDS URL of the VCEK for a chip and REPORTED_TCB
// (KDS spec 57230 §4.1): https://kdsintf.amd.com/vcek/v1/<line>/<hwid>?
// blSPL=&teeSPL=&snpSPL=&ucodeSPL=, plus fmcSPL and the 8-byte hwid on
// Turin. It fails for a product line KDS does not serve.
func VCEKURL(productLine string, chipID []byte, reportedTCB uint64) (string, error) {
	if productLine != Milan && productLine != Genoa && productLine != Turin {
		return "", fmt.Errorf("product line %q has no AMD KDS VCEK endpoint: want %s, %s or %s", productLine, Milan, Genoa, Turin)
	}
	if productLine != Turin {
		return kds.VCEKCertURL(productLine, chipID, kds.TCBVersion(reportedTCB)), nil
	}
	t := DecodeTCB(Turin, reportedTCB)
	return fmt.Sprintf("https://kdsintf.amd.com/vcek/v1/%s/%s?blSPL=%d&teeSPL=%d&snpSPL=%d&ucodeSPL=%d&fmcSPL=%d",
		productLine, kdsHWID(productLine, chipID), t.Bootloader, t.TEE, t.SNP, t.Microcode, t.FMC), nil
}
