package snp

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/uuid"
)

// ReportSize is the size in bytes of an SEV-SNP ATTESTATION_REPORT
// (SEV-SNP Firmware ABI spec 56860, table 22): 0x4A0 = 1184.
const ReportSize = abi.ReportSize

// MaxCertTableSize bounds the certificate table that may follow a report, in
// bytes (1 MiB). An extended report's table holds a few 1.3 KiB certificates.
const MaxCertTableSize = 1 << 20

// MaxCertTableEntries bounds the number of certificate table entries (AMD
// defines five GUIDs; hosts may add a few more).
const MaxCertTableEntries = 64

// Evidence is parsed SNP evidence: the report and the certificate table the
// host attached to it (SNP_GET_EXT_REPORT / GHCB GUID table format).
type Evidence struct {
	// Raw is the 1184-byte report exactly as signed.
	Raw []byte
	// Report is Raw decoded by go-sev-guest's abi.ReportToProto.
	Report *spb.Report
	// Certs is the certificate table that followed the report; empty if none.
	Certs *abi.CertTable
}

// Parse splits evidence into the 1184-byte report and the optional
// certificate table after it (entries of a 16-byte GUID, a 4-byte offset and
// a 4-byte length, little-endian, ending in an all-zero entry; offsets count
// from the table start). It checks the report's version (2..5), its guest
// policy's reserved bits and its must-be-zero ranges, and that every table
// entry lies inside the table. It never panics; every error wraps
// attestation.ErrEvidenceInvalid via check "parse" when reached through a
// Verifier.
func Parse(evidence []byte) (ev *Evidence, err error) {
	defer func() {
		// go-sev-guest's decoders index slices by lengths read from the
		// input; a panic there must not take the KBS down.
		if r := recover(); r != nil {
			ev, err = nil, fmt.Errorf("%s: %v", parserFault, r)
		}
	}()
	if len(evidence) < ReportSize {
		return nil, fmt.Errorf("evidence is %d bytes, an SNP ATTESTATION_REPORT is %d bytes: pass the raw report (optionally followed by its certificate table)",
			len(evidence), ReportSize)
	}
	raw := evidence[:ReportSize]
	if err := abi.ValidateReportFormat(raw); err != nil {
		return nil, fmt.Errorf("decode SNP report: %w", err)
	}
	report, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("decode SNP report: %w", err)
	}
	certs, err := parseCertTable(evidence[ReportSize:])
	if err != nil {
		return nil, err
	}
	return &Evidence{Raw: append([]byte(nil), raw...), Report: report, Certs: certs}, nil
}

// parserFault prefixes errors recovered from a panic in a decoder; fuzz
// targets fail on it.
const parserFault = "internal parser fault"

func parseCertTable(table []byte) (*abi.CertTable, error) {
	certs := new(abi.CertTable)
	if len(table) == 0 {
		return certs, nil
	}
	if len(table) > MaxCertTableSize {
		return nil, fmt.Errorf("certificate table after the report is %d bytes, more than the %d allowed", len(table), MaxCertTableSize)
	}
	// Walk the header ourselves with 64-bit arithmetic: abi.CertTable's
	// offset+length check is 32-bit and can wrap.
	for i := 0; ; i++ {
		if i > MaxCertTableEntries {
			return nil, fmt.Errorf("certificate table has more than %d entries", MaxCertTableEntries)
		}
		at := i * abi.CertTableEntrySize
		if at+abi.CertTableEntrySize > len(table) {
			return nil, fmt.Errorf("certificate table entry %d at byte %d is truncated (table is %d bytes) and no all-zero terminator was found",
				i, at, len(table))
		}
		entry := table[at : at+abi.CertTableEntrySize]
		guid, _ := uuid.FromBytes(entry[:16])
		off := uint64(binary.LittleEndian.Uint32(entry[16:20]))
		length := uint64(binary.LittleEndian.Uint32(entry[20:24]))
		if guid == uuid.Nil && off == 0 && length == 0 {
			headerEnd := uint64(at + abi.CertTableEntrySize)
			if err := checkEntries(table, headerEnd); err != nil {
				return nil, err
			}
			break
		}
	}
	if err := certs.Unmarshal(table); err != nil {
		return nil, fmt.Errorf("decode certificate table: %w", err)
	}
	return certs, nil
}

func checkEntries(table []byte, headerEnd uint64) error {
	var total uint64
	for at := uint64(0); at+uint64(abi.CertTableEntrySize) < headerEnd; at += abi.CertTableEntrySize {
		entry := table[at : at+abi.CertTableEntrySize]
		off := uint64(binary.LittleEndian.Uint32(entry[16:20]))
		length := uint64(binary.LittleEndian.Uint32(entry[20:24]))
		if off < headerEnd || off+length > uint64(len(table)) {
			guid, _ := uuid.FromBytes(entry[:16])
			return fmt.Errorf("certificate table entry %s claims bytes [%d, %d), outside the data area [%d, %d)",
				guid, off, off+length, headerEnd, len(table))
		}
		// Entries are laid out one after another; overlapping ones could
		// make decoding copy the table once per entry.
		total += length
		if total > uint64(len(table))-headerEnd {
			return fmt.Errorf("certificate table entries add up to more than its %d-byte data area: entries overlap", uint64(len(table))-headerEnd)
		}
	}
	return nil
}

// certByGUID returns the certificate table entry for guid, or nil.
func (e *Evidence) certByGUID(guid string) []byte {
	if e.Certs == nil {
		return nil
	}
	b, err := e.Certs.GetByGUIDString(guid)
	if err != nil || len(b) == 0 {
		return nil
	}
	return b
}

// AttachCert returns evidence (a report, optionally followed by its
// certificate table) with der stored under guid (e.g. abi.VcekGUID),
// replacing an entry with that GUID. Use it to supply a VCEK obtained out of
// band. It fails if evidence does not parse or guid is malformed.
func AttachCert(evidence []byte, guid string, der []byte) ([]byte, error) {
	ev, err := Parse(evidence)
	if err != nil {
		return nil, err
	}
	g, err := uuid.Parse(guid)
	if err != nil {
		return nil, fmt.Errorf("attach certificate: GUID %q: %w", guid, err)
	}
	table := &abi.CertTable{}
	for _, e := range ev.Certs.Entries {
		if e.GUID != g {
			table.Entries = append(table.Entries, e)
		}
	}
	table.Entries = append(table.Entries, abi.CertTableEntry{GUID: g, RawCert: der})
	return append(append([]byte(nil), ev.Raw...), table.Marshal()...), nil
}
