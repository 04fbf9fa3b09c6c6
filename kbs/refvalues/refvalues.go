// Package refvalues is the KBS's reference-values document: per TEE, the
// launch measurements it trusts, the init-data documents it trusts and the
// TCB floors the attestation policy applies. It is stored as one versioned
// JSON document (kbs/store KindReferenceValues) of the form
//
//	{
//	  "snp": {"measurements": ["<96 hex>", ...],
//	          "init_data": ["<64, 96 or 128 hex>", ...],
//	          "min_tcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}},
//	  "sim": {"measurements": [...], "init_data": [...]},
//	  "tdx": {"measurements": ["<MRTD, 96 hex>"], "min_tee_tcb_svn": "<32 hex>"}
//	}
//
// An init_data value is the full digest of a trusted init-data document
// with the document's own algorithm (SHA-256, SHA-384 or SHA-512 of its
// exact bytes: initdata.Document.Digest, kbs/initdata.Result.Digest),
// before it is fitted to HOST_DATA or MRCONFIGID. Documents without
// "init_data" (those written before it existed) stay valid and marshal
// byte for byte as before.
//
// Measurements and init-data digests are lower-case hex, sorted and
// de-duplicated, so equal sets have equal SHA-256. Trustee keeps reference
// values in its RVPS with provenance formats of its own; Coffer's admin
// API takes this document or single entries {"tee", "measurement"} (the
// JSON `ccctl measure --json` prints) or {"tee", "init_data"}.
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

// InitDataDigestSizes are the sizes, bytes, of an init-data digest: SHA-256,
// SHA-384 and SHA-512 (the init-data "algorithm").
var InitDataDigestSizes = []int{32, 48, 64}

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
	// InitData are digests of trusted init-data documents, lower-case hex
	// of 32, 48 or 64 bytes (the document's algorithm over its exact
	// bytes, not fitted to the evidence field). When non-empty the default
	// attestation policy requires the guest's verified init-data digest to
	// be one of them.
	InitData []string `json:"init_data,omitempty"`
	// MinTCB is the SNP/sim TCB floor for reported, committed and launch TCB.
	MinTCB *TCB `json:"min_tcb,omitempty"`
	// MinTeeTCBSVN is the TDX TEE_TCB_SVN floor, 32 hex characters,
	// compared byte by byte.
	MinTeeTCBSVN string `json:"min_tee_tcb_svn,omitempty"`
}

// Values maps TEE names to their reference values.
type Values map[attestation.TEE]*TEEValues

// Entry is one reference value to add: the JSON {"tee", "measurement"}
// or {"tee", "init_data"}; exactly one of Measurement and InitData is set.
type Entry struct {
	TEE         string `json:"tee"`
	Measurement string `json:"measurement,omitempty"`
	// InitData is an init-data digest (see TEEValues.InitData).
	InitData string `json:"init_data,omitempty"`
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
		if tv.InitData != nil {
			ids := make([]string, 0, len(tv.InitData))
			for _, d := range tv.InitData {
				n, err := NormalizeInitDataDigest(d)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", tee, err)
				}
				ids = append(ids, n)
			}
			slices.Sort(ids)
			tv.InitData = slices.Compact(ids)
			if len(tv.InitData) == 0 {
				tv.InitData = nil
			}
		}
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

// Add adds e's measurement or init-data digest to its TEE and reports
// whether it was new. An entry with neither or both, an unknown TEE or
// malformed hex is an error wrapping ErrInvalid; v is then unchanged.
func (v Values) Add(e Entry) (bool, error) {
	if err := e.Check(); err != nil {
		return false, err
	}
	tee := attestation.TEE(e.TEE)
	tv := v[tee]
	if tv == nil {
		tv = &TEEValues{Measurements: []string{}}
		v[tee] = tv
	}
	list := &tv.Measurements
	val, _ := NormalizeMeasurement(e.Measurement)
	if e.InitData != "" {
		list = &tv.InitData
		val, _ = NormalizeInitDataDigest(e.InitData)
	}
	i, found := slices.BinarySearch(*list, val)
	if found {
		return false, nil
	}
	*list = slices.Insert(*list, i, val)
	return true, nil
}

// Check validates e: a known TEE and exactly one of a well-formed
// measurement or init-data digest. Errors wrap ErrInvalid.
func (e Entry) Check() error {
	if err := checkTEE(e.TEE); err != nil {
		return err
	}
	switch {
	case e.Measurement != "" && e.InitData != "":
		return fmt.Errorf("reference value has both measurement and init_data: send one per entry: %w", ErrInvalid)
	case e.InitData != "":
		_, err := NormalizeInitDataDigest(e.InitData)
		return err
	default:
		_, err := NormalizeMeasurement(e.Measurement)
		return err
	}
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

// NormalizeInitDataDigest lower-cases d and checks it is the hex of 32, 48
// or 64 bytes (an init-data SHA-256, SHA-384 or SHA-512 digest).
func NormalizeInitDataDigest(d string) (string, error) {
	s := strings.ToLower(strings.TrimSpace(d))
	b, err := hex.DecodeString(s)
	if err != nil || !slices.Contains(InitDataDigestSizes, len(b)) {
		return "", fmt.Errorf("init_data digest %q: want the hex of the init-data document's sha256, sha384 or sha512 digest (64, 96 or 128 hex characters; `ccctl kbs reference-values add --init-data FILE` computes it): %w", d, ErrInvalid)
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
