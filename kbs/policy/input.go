package policy

import (
	"encoding/hex"
	"encoding/json"
	"strconv"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/snp"
	"github.com/cofferhq/coffer/kbs/refvalues"
)

// AttestationInput is the attestation policy's input document:
//
//	{
//	  "tee": "snp",
//	  "claims": {attestation.Claims},
//	  "tcb": {"reported": TCB, "committed": TCB, "launch": TCB}    // snp, sim
//	         {"tee_tcb_svn": [16 bytes]}                            // tdx
//	  "tcb_floor": TCB or {"tee_tcb_svn": [16 bytes]},             // effective floor
//	  "reference_values": {"measurements": [...], "init_data": [...], "min_tcb": TCB, "min_tee_tcb_svn": "<hex>"},
//	  "init_data": {"algorithm": "sha256", "digest": "<hex>", "data": {...}}, // or null
//	  "init_data_digest": "<hex>"                                             // or ""
//	}
//
// TCB is {"bootloader", "tee", "snp", "microcode"} (integers). tcb_floor is
// the reference values' floor, or the server configuration's when the
// reference values set none.
type AttestationInput struct {
	TEE             attestation.TEE     `json:"tee"`
	Claims          *attestation.Claims `json:"claims"`
	TCB             *TCBs               `json:"tcb"`
	TCBFloor        *TCBs               `json:"tcb_floor"`
	ReferenceValues refvalues.TEEValues `json:"reference_values"`
	InitData        *InitDataInput      `json:"init_data"`
	// InitDataDigest is the hex of the verified init-data's full digest
	// (its own algorithm over its exact bytes, equal to InitData.Digest):
	// set only when the guest sent init-data and the evidence's HOST_DATA
	// / MRCONFIGID matched it, "" otherwise. The default policy compares it
	// with reference_values.init_data.
	InitDataDigest string `json:"init_data_digest"`
}

// TCBs are TCB levels: the SNP report's three TCB versions decomposed, or
// TDX TEE_TCB_SVN as 16 integers. As a floor, Min is the SNP floor
// applying to all three.
type TCBs struct {
	Reported  *refvalues.TCB `json:"reported,omitempty"`
	Committed *refvalues.TCB `json:"committed,omitempty"`
	Launch    *refvalues.TCB `json:"launch,omitempty"`
	*refvalues.TCB
	TeeTCBSVN []int `json:"tee_tcb_svn,omitempty"`
}

// InitDataInput describes verified init-data (its digest matched the
// evidence's HOST_DATA / MRCONFIGID).
type InitDataInput struct {
	Algorithm string            `json:"algorithm"`
	Digest    string            `json:"digest"`
	Data      map[string]string `json:"data"`
}

// DecomposeTCB splits a 64-bit SNP TCB_VERSION of product ("Milan",
// "Genoa", "Turin", "sim") into its bootloader, tee, snp and microcode
// security patch levels, in that product's layout (attestation/snp
// DecodeTCB: Turin's differs from Milan/Genoa's; its FMC SPL is not part
// of refvalues.TCB).
func DecomposeTCB(product string, v uint64) refvalues.TCB {
	t := snp.DecodeTCB(product, v)
	return refvalues.TCB{Bootloader: t.Bootloader, TEE: t.TEE, SNP: t.SNP, Microcode: t.Microcode}
}

// TCBsOf returns the TCB levels of claims: decomposed SNP TCBs for snp and
// sim, TEE_TCB_SVN bytes for tdx (nil if absent or malformed).
func TCBsOf(c *attestation.Claims) *TCBs {
	if c.TEE == attestation.TEETDX {
		b, err := hex.DecodeString(c.TeeTCBSVN)
		if err != nil || len(b) == 0 {
			return nil
		}
		return &TCBs{TeeTCBSVN: Ints(b)}
	}
	r, cm, l := DecomposeTCB(c.Product, c.ReportedTCB), DecomposeTCB(c.Product, c.CommittedTCB), DecomposeTCB(c.Product, c.LaunchTCB)
	return &TCBs{Reported: &r, Committed: &cm, Launch: &l}
}

// FloorOf returns the effective TCB floor for tee: rv's min_tcb (SNP, sim)
// or min_tee_tcb_svn (TDX) if set, else the configured fallback (snpFloor,
// tdxFloor hex), else all zeros.
func FloorOf(tee attestation.TEE, rv refvalues.TEEValues, snpFloor *refvalues.TCB, tdxFloor string) *TCBs {
	if tee == attestation.TEETDX {
		h := rv.MinTeeTCBSVN
		if h == "" {
			h = tdxFloor
		}
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != refvalues.TeeTCBSVNBytes {
			b = make([]byte, refvalues.TeeTCBSVNBytes)
		}
		return &TCBs{TeeTCBSVN: Ints(b)}
	}
	f := rv.MinTCB
	if f == nil {
		f = snpFloor
	}
	if f == nil {
		f = &refvalues.TCB{}
	}
	c := *f
	return &TCBs{TCB: &c}
}

// Ints widens bytes to ints (JSON numbers rather than base64).
func Ints(b []byte) []int {
	out := make([]int, len(b))
	for i, x := range b {
		out[i] = int(x)
	}
	return out
}

// ResourceInput is the resource policy's input document:
//
//	{
//	  "claims": {token payload: "submods": {"cpu0": {"ear.status", ...}}, ...},
//	  "request": {"plugin": "resource", "resource-path": ["repo", "type", "tag"],
//	              "repository": "repo", "type": "type", "tag": "tag"}
//	}
type ResourceInput struct {
	Claims  map[string]any `json:"claims"`
	Request Request        `json:"request"`
}

// Request describes the requested resource.
type Request struct {
	Plugin       string   `json:"plugin"`
	ResourcePath []string `json:"resource-path"`
	Repository   string   `json:"repository"`
	Type         string   `json:"type"`
	Tag          string   `json:"tag"`
}

// value returns the input as plain JSON-shaped Go values, which OPA
// converts without a JSON round trip (the claims are already decoded with
// json.Number).
func (in *ResourceInput) value() map[string]any {
	path := make([]any, len(in.Request.ResourcePath))
	for i, s := range in.Request.ResourcePath {
		path[i] = s
	}
	return map[string]any{
		"claims": in.Claims,
		"request": map[string]any{
			"plugin":        in.Request.Plugin,
			"resource-path": path,
			"repository":    in.Request.Repository,
			"type":          in.Request.Type,
			"tag":           in.Request.Tag,
		},
	}
}

// value returns the input as plain JSON-shaped Go values (the same
// document json.Marshal would produce), so OPA converts it without a JSON
// round trip. TestAttestationInputValue keeps it in step with the JSON
// encoding of every field.
func (in *AttestationInput) value() map[string]any {
	m := map[string]any{
		"tee":              string(in.TEE),
		"claims":           claimsValue(in.Claims),
		"tcb":              tcbsValue(in.TCB),
		"tcb_floor":        tcbsValue(in.TCBFloor),
		"reference_values": refValue(in.ReferenceValues),
		"init_data":        nil,
		"init_data_digest": in.InitDataDigest,
	}
	if in.InitData != nil {
		data := make(map[string]any, len(in.InitData.Data))
		for k, v := range in.InitData.Data {
			data[k] = v
		}
		if in.InitData.Data == nil {
			data = nil
		}
		m["init_data"] = map[string]any{"algorithm": in.InitData.Algorithm, "digest": in.InitData.Digest, "data": data}
	}
	return m
}

func num(v uint64) json.Number { return json.Number(strconv.FormatUint(v, 10)) }

func strs(s []string) []any {
	if s == nil {
		return nil
	}
	out := make([]any, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}

// claimsValue mirrors attestation.Claims' JSON tags, omitempty included.
func claimsValue(c *attestation.Claims) any {
	if c == nil {
		return nil
	}
	m := map[string]any{"tee": string(c.TEE), "report_data": c.ReportData, "debug": c.Debug}
	put := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	putN := func(k string, v uint64) {
		if v != 0 {
			m[k] = num(v)
		}
	}
	put("measurement", c.Measurement)
	put("host_data", c.HostData)
	putN("policy", c.Policy)
	putN("reported_tcb", c.ReportedTCB)
	putN("committed_tcb", c.CommittedTCB)
	putN("launch_tcb", c.LaunchTCB)
	put("chip_id", c.ChipID)
	put("mr_td", c.MRTD)
	if len(c.RTMR) > 0 {
		m["rtmr"] = strs(c.RTMR)
	}
	put("mr_config_id", c.MRConfigID)
	put("tee_tcb_svn", c.TeeTCBSVN)
	put("product", c.Product)
	return m
}

func tcbValue(t *refvalues.TCB) map[string]any {
	return map[string]any{"bootloader": num(uint64(t.Bootloader)), "tee": num(uint64(t.TEE)), "snp": num(uint64(t.SNP)), "microcode": num(uint64(t.Microcode))}
}

func tcbsValue(t *TCBs) any {
	if t == nil {
		return nil
	}
	m := map[string]any{}
	if t.TCB != nil {
		m = tcbValue(t.TCB)
	}
	for k, v := range map[string]*refvalues.TCB{"reported": t.Reported, "committed": t.Committed, "launch": t.Launch} {
		if v != nil {
			m[k] = tcbValue(v)
		}
	}
	if len(t.TeeTCBSVN) > 0 {
		svn := make([]any, len(t.TeeTCBSVN))
		for i, x := range t.TeeTCBSVN {
			svn[i] = num(uint64(x))
		}
		m["tee_tcb_svn"] = svn
	}
	return m
}

func refValue(rv refvalues.TEEValues) map[string]any {
	m := map[string]any{"measurements": strs(rv.Measurements)}
	if len(rv.InitData) > 0 {
		m["init_data"] = strs(rv.InitData)
	}
	if rv.MinTCB != nil {
		m["min_tcb"] = tcbValue(rv.MinTCB)
	}
	if rv.MinTeeTCBSVN != "" {
		m["min_tee_tcb_svn"] = rv.MinTeeTCBSVN
	}
	return m
}
