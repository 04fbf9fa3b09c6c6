package policy

import (
	"encoding/hex"
	"encoding/json"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"

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

// value returns the input as an OPA value, built directly rather than
// through a map of Go values and ast.InterfaceToValue (which converts by
// reflection and costed as much as evaluating the default policy). It is
// the document json.Marshal would produce, numbers exact:
// TestAttestationInputValue keeps it equal to the JSON encoding of every
// field.
func (in *AttestationInput) value() ast.Value {
	initData := ast.NullTerm()
	if in.InitData != nil {
		data := ast.NullTerm()
		if in.InitData.Data != nil {
			items := make([][2]*ast.Term, 0, len(in.InitData.Data))
			for k, v := range in.InitData.Data {
				items = append(items, ast.Item(ast.StringTerm(k), ast.StringTerm(v)))
			}
			data = ast.NewTerm(ast.NewObject(items...))
		}
		initData = ast.ObjectTerm(
			ast.Item(ast.StringTerm("algorithm"), ast.StringTerm(in.InitData.Algorithm)),
			ast.Item(ast.StringTerm("digest"), ast.StringTerm(in.InitData.Digest)),
			ast.Item(ast.StringTerm("data"), data),
		)
	}
	return ast.NewObject(
		ast.Item(ast.StringTerm("tee"), ast.StringTerm(string(in.TEE))),
		ast.Item(ast.StringTerm("claims"), claimsValue(in.Claims)),
		ast.Item(ast.StringTerm("tcb"), tcbsValue(in.TCB)),
		ast.Item(ast.StringTerm("tcb_floor"), tcbsValue(in.TCBFloor)),
		ast.Item(ast.StringTerm("reference_values"), refValue(in.ReferenceValues)),
		ast.Item(ast.StringTerm("init_data"), initData),
		ast.Item(ast.StringTerm("init_data_digest"), ast.StringTerm(in.InitDataDigest)),
	)
}

func num(v uint64) *ast.Term { return ast.NumberTerm(json.Number(strconv.FormatUint(v, 10))) }

func strs(s []string) *ast.Term {
	if s == nil {
		return ast.NullTerm()
	}
	out := make([]*ast.Term, len(s))
	for i, x := range s {
		out[i] = ast.StringTerm(x)
	}
	return ast.ArrayTerm(out...)
}

// claimsValue mirrors attestation.Claims' JSON tags, omitempty included.
func claimsValue(c *attestation.Claims) *ast.Term {
	if c == nil {
		return ast.NullTerm()
	}
	items := make([][2]*ast.Term, 0, 16)
	put := func(k string, v *ast.Term) { items = append(items, ast.Item(ast.StringTerm(k), v)) }
	putS := func(k, v string) {
		if v != "" {
			put(k, ast.StringTerm(v))
		}
	}
	putN := func(k string, v uint64) {
		if v != 0 {
			put(k, num(v))
		}
	}
	put("tee", ast.StringTerm(string(c.TEE)))
	putS("measurement", c.Measurement)
	putS("host_data", c.HostData)
	put("report_data", ast.StringTerm(c.ReportData))
	putN("policy", c.Policy)
	put("debug", ast.BooleanTerm(c.Debug))
	putN("reported_tcb", c.ReportedTCB)
	putN("committed_tcb", c.CommittedTCB)
	putN("launch_tcb", c.LaunchTCB)
	putS("chip_id", c.ChipID)
	putS("mr_td", c.MRTD)
	if len(c.RTMR) > 0 {
		put("rtmr", strs(c.RTMR))
	}
	putS("mr_config_id", c.MRConfigID)
	putS("tee_tcb_svn", c.TeeTCBSVN)
	putS("product", c.Product)
	return ast.NewTerm(ast.NewObject(items...))
}

func tcbItems(t *refvalues.TCB) [][2]*ast.Term {
	return [][2]*ast.Term{
		ast.Item(ast.StringTerm("bootloader"), num(uint64(t.Bootloader))),
		ast.Item(ast.StringTerm("tee"), num(uint64(t.TEE))),
		ast.Item(ast.StringTerm("snp"), num(uint64(t.SNP))),
		ast.Item(ast.StringTerm("microcode"), num(uint64(t.Microcode))),
	}
}

func tcbsValue(t *TCBs) *ast.Term {
	if t == nil {
		return ast.NullTerm()
	}
	var items [][2]*ast.Term
	if t.TCB != nil {
		items = tcbItems(t.TCB)
	}
	for _, kv := range []struct {
		k string
		v *refvalues.TCB
	}{{"reported", t.Reported}, {"committed", t.Committed}, {"launch", t.Launch}} {
		if kv.v != nil {
			items = append(items, ast.Item(ast.StringTerm(kv.k), ast.ObjectTerm(tcbItems(kv.v)...)))
		}
	}
	if len(t.TeeTCBSVN) > 0 {
		svn := make([]*ast.Term, len(t.TeeTCBSVN))
		for i, x := range t.TeeTCBSVN {
			svn[i] = num(uint64(x))
		}
		items = append(items, ast.Item(ast.StringTerm("tee_tcb_svn"), ast.ArrayTerm(svn...)))
	}
	return ast.ObjectTerm(items...)
}

func refValue(rv refvalues.TEEValues) *ast.Term {
	items := [][2]*ast.Term{ast.Item(ast.StringTerm("measurements"), strs(rv.Measurements))}
	if len(rv.InitData) > 0 {
		items = append(items, ast.Item(ast.StringTerm("init_data"), strs(rv.InitData)))
	}
	if rv.MinTCB != nil {
		items = append(items, ast.Item(ast.StringTerm("min_tcb"), ast.ObjectTerm(tcbItems(rv.MinTCB)...)))
	}
	if rv.MinTeeTCBSVN != "" {
		items = append(items, ast.Item(ast.StringTerm("min_tee_tcb_svn"), ast.StringTerm(rv.MinTeeTCBSVN)))
	}
	return ast.ObjectTerm(items...)
}
