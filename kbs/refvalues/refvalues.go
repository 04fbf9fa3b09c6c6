// Package refvalues is the KBS's reference-values document: per TEE, the
// launch measurements it trusts and the TCB floors the attestation policy
// applies. It is stored as one versioned JSON document (kbs/store
// KindReferenceValues) of the form
//
//	{
//	  "snp": {"measurements": ["<96 hex>", ...],
//	          "min_tcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}},
//	  "sim": {"measurements": [...]},
//	  "tdx": {"measurements": ["<MRTD, 96 hex>"], "min_tee_tcb_svn": "<32 hex>"}
//	}
//
// Measurements are lower-case hex, sorted and de-duplicated, so equal sets
// have equal SHA-256. Trustee keeps reference values in its RVPS with
// provenance formats of its own; Coffer's admin API takes this document or
// single {"tee", "measurement"} entries (the JSON `ccctl measure --json`
// prints).
package refvalues

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cofferhq/coffer/attestation"
)

// MeasurementBytes is the size of an SNP MEASUREMENT and a TDX MRTD.
const MeasurementBytes = 48

// TeeTCBSVNBytes is the size of TDX TEE_TCB_SVN.
const TeeTCBSVNBytes = 16

// ErrInvalid is wrapped by every validation failure.
var ErrInvalid = errors.New("invalid reference values")

// TCB is an SNP TCB floor by component (SEV-SNP ABI TCB_VERSION, Milan and
// Genoa layout: bootloader byte 0, tee byte 1, snp byte 6, microcode byte 7).
type TCB struct {
	Bootloader uint8 `json:"bootloader"`
	TEE        uint8 `json:"tee"`
	SNP        uint8 `json:"snp"`
	Microcode  uint8 `json:"microcode"`
}

// TEEValues are one TEE's reference values.
type TEEValues struct {
	// Measurements are trusted launch measurements (SNP MEASUREMENT, TDX
	// MRTD), 96 lower-case hex characters each.
	Measurements []string `json:"measurements"`
	// MinTCB is the SNP/sim TCB floor for reported, committed and launch TCB.
	MinTCB *TCB `json:"min_tcb,omitempty"`
	// MinTeeTCBSVN is the TDX TEE_TCB_SVN floor, 32 hex characters,
	// compared byte by byte.
	MinTeeTCBSVN string `json:"min_tee_tcb_svn,omitempty"`
}

// Values maps TEE names to their reference values.
type Values map[attestation.TEE]*TEEValues

// Entry is one measurement to add: the JSON {"tee", "measurement"}.
type Entry struct {
	TEE         string `json:"tee"`
	Measurement string `json:"measurement"`
}

// Parse decodes and validates a reference-values document. Unknown TEEs,
// unknown fields, malformed hex and wrong lengths are errors wrapping
// ErrInvalid. An empty input is an empty document.
func Parse(b []byte) (Values, error) {
	v := Values{}
	if len(bytes.TrimSpace(b)) == 0 {
		return v, nil
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("parse reference values: %v: %w", err, ErrInvalid)
	}
	if d.More() {
		return nil, fmt.Errorf("parse reference values: trailing data after the JSON object: %w", ErrInvalid)
	}
	for tee, tv := range v {
		if err := checkTEE(string(tee)); err != nil {
			return nil, err
		}
		if tv == nil {
			delete(v, tee)
			continue
		}
		norm := make([]string, 0, len(tv.Measurements))
		for _, m := range tv.Measurements {
			n, err := NormalizeMeasurement(m)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", tee, err)
			}
			norm = append(norm, n)
		}
		slices.Sort(norm)
		tv.Measurements = slices.Compact(norm)
		if tv.MinTeeTCBSVN != "" {
			s := strings.ToLower(tv.MinTeeTCBSVN)
			if b, err := hex.DecodeString(s); err != nil || len(b) != TeeTCBSVNBytes {
				return nil, fmt.Errorf("%s min_tee_tcb_svn %q: want %d hex characters: %w", tee, tv.MinTeeTCBSVN, 2*TeeTCBSVNBytes, ErrInvalid)
			}
			tv.MinTeeTCBSVN = s
		}
	}
	return v, nil
}

// Marshal returns the canonical JSON of v (TEEs and measurements sorted).
func (v Values) Marshal() []byte {
	b, _ := json.Marshal(v) // map keys are sorted by encoding/json
	return b
}

// Add adds e's measurement to its TEE and reports whether it was new.
func (v Values) Add(e Entry) (bool, error) {
	if err := checkTEE(e.TEE); err != nil {
		return false, err
	}
	m, err := NormalizeMeasurement(e.Measurement)
	if err != nil {
		return false, err
	}
	tee := attestation.TEE(e.TEE)
	tv := v[tee]
	if tv == nil {
		tv = &TEEValues{}
		v[tee] = tv
	}
	i, found := slices.BinarySearch(tv.Measurements, m)
	if found {
		return false, nil
	}
	tv.Measurements = slices.Insert(tv.Measurements, i, m)
	return true, nil
}

// For returns tee's values, never nil (an empty TEEValues if unset).
func (v Values) For(tee attestation.TEE) TEEValues {
	if tv := v[tee]; tv != nil {
		return *tv
	}
	return TEEValues{Measurements: []string{}}
}

// NormalizeMeasurement lower-cases m and checks it is 96 hex characters.
func NormalizeMeasurement(m string) (string, error) {
	s := strings.ToLower(strings.TrimSpace(m))
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != MeasurementBytes {
		return "", fmt.Errorf("measurement %q: want %d hex characters (%d bytes): %w", m, 2*MeasurementBytes, MeasurementBytes, ErrInvalid)
	}
	return s, nil
}

func checkTEE(t string) error {
	switch attestation.TEE(t) {
	case attestation.TEESNP, attestation.TEETDX, attestation.TEESim:
		return nil
	}
	return fmt.Errorf("tee %q: want snp, tdx or sim: %w", t, ErrInvalid)
}
