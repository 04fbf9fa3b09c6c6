package snp

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/uuid"
)

// CoCo guest-components' SNP attester (attestation-agent/attester/src/snp)
// sends its evidence as JSON, not raw bytes:
//
//	{"attestation_report": <sev::firmware::guest::AttestationReport>,
//	 "cert_chain": null | [{"cert_type": "VCEK", "data": [48, 130, ...]}, ...]}
//
// The report is serialised by the virtee `sev` crate (v6, serde derive):
// integers as numbers; byte arrays as JSON arrays of numbers; policy,
// plat_info and key_info as their integer values; TCBs as {"fmc": null or
// n, "bootloader", "tee", "snp", "microcode"} (fmc set on Turin, whose
// TCB layout differs); current/committed firmware as {"major", "minor",
// "build"}; cpuid_fam_id/cpuid_mod_id/cpuid_step and
// launch_mit_vector/current_mit_vector as null or numbers (report version
// 3+ and 5+); signature as {"r": [72 bytes], "s": [72 bytes]}, little
// endian as in the report. Reserved bytes are not serialised. cert_type is
// "VCEK", "VLEK", "ASK", "ARK", "CRL", "Empty" or {"OTHER": "<uuid>"}.
// Trustee's SNP verifier (deps/verifier/src/snp) reads the same document
// and rebuilds the signed bytes from it.
//
// DecodeSevJSON rebuilds the raw 1184-byte report (reserved bytes zero, as
// the firmware writes them) and the GHCB certificate table from it, so the
// evidence goes through the same Parse/verify/validate path as raw bytes:
// any field that does not round-trip fails the report signature. Byte
// arrays may also be given as hex strings.

// MaxSevJSONSize bounds a guest-components SNP evidence document, bytes
// (a report is ~5 KiB as JSON, a certificate ~6 KiB).
const MaxSevJSONSize = 1 << 20

// sevBytes is a byte array in the sev crate's JSON form (an array of
// numbers 0-255), or a hex string.
type sevBytes []byte

func (b *sevBytes) UnmarshalJSON(v []byte) error {
	v = bytes.TrimSpace(v)
	if len(v) > 0 && v[0] == '"' {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return err
		}
		d, err := hex.DecodeString(s)
		if err != nil {
			return fmt.Errorf("byte array as hex string: %w", err)
		}
		*b = d
		return nil
	}
	var nums []int
	if err := json.Unmarshal(v, &nums); err != nil {
		return fmt.Errorf("want an array of byte values or a hex string: %w", err)
	}
	out := make([]byte, len(nums))
	for i, n := range nums {
		if n < 0 || n > 255 {
			return fmt.Errorf("byte array element %d is %d: want 0-255", i, n)
		}
		out[i] = byte(n)
	}
	*b = out
	return nil
}

func (b sevBytes) MarshalJSON() ([]byte, error) {
	var s strings.Builder
	s.WriteByte('[')
	for i, c := range b {
		if i > 0 {
			s.WriteByte(',')
		}
		fmt.Fprintf(&s, "%d", c)
	}
	s.WriteByte(']')
	return []byte(s.String()), nil
}

type sevTCB struct {
	FMC        *uint8 `json:"fmc"`
	Bootloader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
}

// raw encodes t in the Turin layout when it has an FMC (as the sev crate
// decides), else the Milan/Genoa layout.
func (t sevTCB) raw() uint64 {
	v := TCB{Bootloader: t.Bootloader, TEE: t.TEE, SNP: t.SNP, Microcode: t.Microcode}
	if t.FMC != nil {
		v.FMC = *t.FMC
		return EncodeTCB(Turin, v)
	}
	return EncodeTCB(Milan, v)
}

func sevTCBOf(raw uint64, turin bool) sevTCB {
	if turin {
		t := DecodeTCB(Turin, raw)
		fmc := t.FMC
		return sevTCB{FMC: &fmc, Bootloader: t.Bootloader, TEE: t.TEE, SNP: t.SNP, Microcode: t.Microcode}
	}
	t := DecodeTCB(Milan, raw)
	return sevTCB{Bootloader: t.Bootloader, TEE: t.TEE, SNP: t.SNP, Microcode: t.Microcode}
}

type sevVersion struct {
	Major uint8 `json:"major"`
	Minor uint8 `json:"minor"`
	Build uint8 `json:"build"`
}

type sevSignature struct {
	R sevBytes `json:"r"`
	S sevBytes `json:"s"`
}

type sevReport struct {
	Version          uint32       `json:"version"`
	GuestSVN         uint32       `json:"guest_svn"`
	Policy           uint64       `json:"policy"`
	FamilyID         sevBytes     `json:"family_id"`
	ImageID          sevBytes     `json:"image_id"`
	VMPL             uint32       `json:"vmpl"`
	SigAlgo          uint32       `json:"sig_algo"`
	CurrentTCB       sevTCB       `json:"current_tcb"`
	PlatInfo         uint64       `json:"plat_info"`
	KeyInfo          uint32       `json:"key_info"`
	ReportData       sevBytes     `json:"report_data"`
	Measurement      sevBytes     `json:"measurement"`
	HostData         sevBytes     `json:"host_data"`
	IDKeyDigest      sevBytes     `json:"id_key_digest"`
	AuthorKeyDigest  sevBytes     `json:"author_key_digest"`
	ReportID         sevBytes     `json:"report_id"`
	ReportIDMA       sevBytes     `json:"report_id_ma"`
	ReportedTCB      sevTCB       `json:"reported_tcb"`
	CPUIDFamID       *uint8       `json:"cpuid_fam_id"`
	CPUIDModID       *uint8       `json:"cpuid_mod_id"`
	CPUIDStep        *uint8       `json:"cpuid_step"`
	ChipID           sevBytes     `json:"chip_id"`
	CommittedTCB     sevTCB       `json:"committed_tcb"`
	Current          sevVersion   `json:"current"`
	Committed        sevVersion   `json:"committed"`
	LaunchTCB        sevTCB       `json:"launch_tcb"`
	LaunchMitVector  *uint64      `json:"launch_mit_vector"`
	CurrentMitVector *uint64      `json:"current_mit_vector"`
	Signature        sevSignature `json:"signature"`
}

type sevCertEntry struct {
	CertType json.RawMessage `json:"cert_type"`
	Data     sevBytes        `json:"data"`
}

type sevEvidence struct {
	AttestationReport *sevReport     `json:"attestation_report"`
	CertChain         []sevCertEntry `json:"cert_chain"`
}

// certTypeGUIDs maps the sev crate's CertType names to GHCB table GUIDs.
var certTypeGUIDs = map[string]string{
	"VCEK": abi.VcekGUID, "VLEK": abi.VlekGUID, "ASK": abi.AskGUID, "ARK": abi.ArkGUID,
	"CRL": "92f81bc3-5811-4d3d-97ff-d19f88dc67ea",
}

// IsSevJSON reports whether doc looks like a guest-components SNP evidence
// document (a JSON object with an "attestation_report" member).
func IsSevJSON(doc []byte) bool {
	var probe struct {
		Report json.RawMessage `json:"attestation_report"`
	}
	doc = bytes.TrimSpace(doc)
	return len(doc) > 0 && doc[0] == '{' && json.Unmarshal(doc, &probe) == nil && len(probe.Report) > 0
}

// DecodeSevJSON converts a guest-components SNP evidence document (see
// above) into raw evidence: the 1184-byte report followed by the GHCB
// certificate table of cert_chain (none if cert_chain is null or empty).
// It fails, naming the field, if the document is not that shape, a byte
// array has the wrong length, or a certificate type is unknown.
func DecodeSevJSON(doc []byte) ([]byte, error) {
	if len(doc) > MaxSevJSONSize {
		return nil, fmt.Errorf("SNP evidence JSON is %d bytes, more than the %d allowed", len(doc), MaxSevJSONSize)
	}
	var ev sevEvidence
	if err := json.Unmarshal(doc, &ev); err != nil {
		return nil, fmt.Errorf("parse guest-components SNP evidence JSON: %w", err)
	}
	r := ev.AttestationReport
	if r == nil {
		return nil, errors.New(`SNP evidence JSON has no "attestation_report": want {"attestation_report": {...}, "cert_chain": [...]} as CoCo guest-components sends`)
	}
	data := make([]byte, ReportSize)
	le := binary.LittleEndian
	le.PutUint32(data[0x00:], r.Version)
	le.PutUint32(data[0x04:], r.GuestSVN)
	le.PutUint64(data[0x08:], r.Policy)
	le.PutUint32(data[0x30:], r.VMPL)
	le.PutUint32(data[0x34:], r.SigAlgo)
	le.PutUint64(data[0x38:], r.CurrentTCB.raw())
	le.PutUint64(data[0x40:], r.PlatInfo)
	le.PutUint32(data[0x48:], r.KeyInfo)
	le.PutUint64(data[0x180:], r.ReportedTCB.raw())
	le.PutUint64(data[0x1E0:], r.CommittedTCB.raw())
	le.PutUint64(data[0x1F0:], r.LaunchTCB.raw())
	for _, f := range []struct {
		name string
		v    sevBytes
		at   int
		size int
	}{
		{"family_id", r.FamilyID, 0x10, 16}, {"image_id", r.ImageID, 0x20, 16},
		{"report_data", r.ReportData, 0x50, abi.ReportDataSize}, {"measurement", r.Measurement, 0x90, abi.MeasurementSize},
		{"host_data", r.HostData, 0xC0, abi.HostDataSize}, {"id_key_digest", r.IDKeyDigest, 0xE0, 48},
		{"author_key_digest", r.AuthorKeyDigest, 0x110, 48}, {"report_id", r.ReportID, 0x140, 32},
		{"report_id_ma", r.ReportIDMA, 0x160, 32}, {"chip_id", r.ChipID, 0x1A0, abi.ChipIDSize},
		{"signature.r", r.Signature.R, 0x2A0, 72}, {"signature.s", r.Signature.S, 0x2E8, 72},
	} {
		if len(f.v) != f.size {
			return nil, fmt.Errorf("SNP evidence JSON attestation_report.%s has %d bytes, want %d", f.name, len(f.v), f.size)
		}
		copy(data[f.at:], f.v)
	}
	for i, p := range []*uint8{r.CPUIDFamID, r.CPUIDModID, r.CPUIDStep} {
		if p != nil {
			data[0x188+i] = *p
		}
	}
	data[0x1E8], data[0x1E9], data[0x1EA] = r.Current.Build, r.Current.Minor, r.Current.Major
	data[0x1EC], data[0x1ED], data[0x1EE] = r.Committed.Build, r.Committed.Minor, r.Committed.Major
	if r.LaunchMitVector != nil {
		le.PutUint64(data[0x1F8:], *r.LaunchMitVector)
	}
	if r.CurrentMitVector != nil {
		le.PutUint64(data[0x200:], *r.CurrentMitVector)
	}

	table := &abi.CertTable{}
	for i, e := range ev.CertChain {
		guid, err := certGUID(e.CertType)
		if err != nil {
			return nil, fmt.Errorf("SNP evidence JSON cert_chain[%d]: %w", i, err)
		}
		if guid == uuid.Nil { // "Empty": the table terminator
			continue
		}
		table.Entries = append(table.Entries, abi.CertTableEntry{GUID: guid, RawCert: e.Data})
	}
	return append(data, table.Marshal()...), nil
}

func certGUID(raw json.RawMessage) (uuid.UUID, error) {
	var name string
	if json.Unmarshal(raw, &name) == nil {
		if name == "Empty" {
			return uuid.Nil, nil
		}
		g, ok := certTypeGUIDs[name]
		if !ok {
			return uuid.Nil, fmt.Errorf("cert_type %q is not VCEK, VLEK, ASK, ARK, CRL, Empty or {\"OTHER\": <uuid>}", name)
		}
		return uuid.MustParse(g), nil
	}
	var other struct {
		OTHER string `json:"OTHER"`
	}
	if err := json.Unmarshal(raw, &other); err != nil || other.OTHER == "" {
		return uuid.Nil, fmt.Errorf("cert_type %s is not a certificate type name or {\"OTHER\": <uuid>}", raw)
	}
	g, err := uuid.Parse(other.OTHER)
	if err != nil {
		return uuid.Nil, fmt.Errorf("cert_type OTHER %q: %w", other.OTHER, err)
	}
	return g, nil
}

// EncodeSevJSON is DecodeSevJSON's inverse: it renders raw evidence (a
// report, optionally followed by its certificate table) as the document
// guest-components sends. Coffer's tests use it to build real-shaped JSON
// from go-sev-guest signed reports; a Coffer guest talking to a
// Trustee KBS can use it too. It fails if evidence does not parse.
func EncodeSevJSON(evidence []byte) ([]byte, error) {
	ev, err := Parse(evidence)
	if err != nil {
		return nil, err
	}
	d := ev.Raw
	le := binary.LittleEndian
	// The sev crate decides the TCB layout from the CPUID family (v3+) or,
	// for v2, from a CHIP_ID whose last 56 bytes are zero.
	turin := d[0x188] >= 0x1A || (le.Uint32(d) == 2 && allZero(d[0x1A8:0x1E0]))
	u8 := func(i int) *uint8 {
		if le.Uint32(d) < 3 {
			return nil
		}
		v := d[i]
		return &v
	}
	u64 := func(i int) *uint64 {
		if le.Uint32(d) < 5 {
			return nil
		}
		v := le.Uint64(d[i:])
		return &v
	}
	r := &sevReport{
		Version: le.Uint32(d), GuestSVN: le.Uint32(d[0x04:]), Policy: le.Uint64(d[0x08:]),
		FamilyID: d[0x10:0x20], ImageID: d[0x20:0x30], VMPL: le.Uint32(d[0x30:]), SigAlgo: le.Uint32(d[0x34:]),
		CurrentTCB: sevTCBOf(le.Uint64(d[0x38:]), turin), PlatInfo: le.Uint64(d[0x40:]), KeyInfo: le.Uint32(d[0x48:]),
		ReportData: d[0x50:0x90], Measurement: d[0x90:0xC0], HostData: d[0xC0:0xE0],
		IDKeyDigest: d[0xE0:0x110], AuthorKeyDigest: d[0x110:0x140], ReportID: d[0x140:0x160], ReportIDMA: d[0x160:0x180],
		ReportedTCB: sevTCBOf(le.Uint64(d[0x180:]), turin),
		CPUIDFamID:  u8(0x188), CPUIDModID: u8(0x189), CPUIDStep: u8(0x18A),
		ChipID: d[0x1A0:0x1E0], CommittedTCB: sevTCBOf(le.Uint64(d[0x1E0:]), turin),
		Current:   sevVersion{Build: d[0x1E8], Minor: d[0x1E9], Major: d[0x1EA]},
		Committed: sevVersion{Build: d[0x1EC], Minor: d[0x1ED], Major: d[0x1EE]},
		LaunchTCB: sevTCBOf(le.Uint64(d[0x1F0:]), turin), LaunchMitVector: u64(0x1F8), CurrentMitVector: u64(0x200),
		Signature: sevSignature{R: d[0x2A0:0x2E8], S: d[0x2E8:0x330]},
	}
	out := sevEvidence{AttestationReport: r}
	names := map[string]string{}
	for n, g := range certTypeGUIDs {
		names[g] = n
	}
	for _, e := range ev.Certs.Entries {
		ct, _ := json.Marshal(map[string]string{"OTHER": e.GUID.String()})
		if n, ok := names[e.GUID.String()]; ok {
			ct, _ = json.Marshal(n)
		}
		out.CertChain = append(out.CertChain, sevCertEntry{CertType: ct, Data: e.RawCert})
	}
	return json.Marshal(out)
}
