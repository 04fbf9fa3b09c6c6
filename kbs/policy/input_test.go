package policy

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/kbs/refvalues"
)

// viaJSON is the reference encoding: json.Marshal, then decode with
// json.Number, as OPA's own round trip would.
func viaJSON(t *testing.T, v any) any {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var out any
	require.NoError(t, d.Decode(&out))
	return out
}

// fillAll sets every field of the struct v points to to a non-zero value.
func fillAll(v reflect.Value) {
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x" + v.Type().Field(i).Name)
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Uint64, reflect.Uint32, reflect.Uint8:
			f.SetUint(uint64(1000 + i))
		case reflect.Slice:
			f.Set(reflect.ValueOf([]string{"a", "b"}))
		default:
			panic("fillAll: unhandled kind " + f.Kind().String() + " of " + v.Type().Field(i).Name)
		}
	}
}

// TestAttestationInputValue keeps the hand-built policy input equal to the
// JSON encoding of AttestationInput, for fully populated and for empty
// values, so a field added to attestation.Claims cannot silently vanish
// from the policy's view.
func TestAttestationInputValue(t *testing.T) {
	var full attestation.Claims
	fillAll(reflect.ValueOf(&full).Elem())
	full.TEE = attestation.TEESNP
	full.ReportedTCB = 0xd500000000000004 | 22<<48 // above 2^53: exact numbers matter
	rv := refvalues.TEEValues{Measurements: []string{"aa"}, InitData: []string{"cc"}, MinTCB: &refvalues.TCB{SNP: 3}, MinTeeTCBSVN: "00"}
	for name, in := range map[string]*AttestationInput{
		"full": {TEE: attestation.TEESNP, Claims: &full, TCB: TCBsOf(&full), TCBFloor: FloorOf(attestation.TEESNP, rv, nil, ""),
			ReferenceValues: rv, InitData: &InitDataInput{Algorithm: "sha256", Digest: "ab", Data: map[string]string{"k": "v"}}, InitDataDigest: "ab"},
		"tdx": {TEE: attestation.TEETDX, Claims: &attestation.Claims{TEE: attestation.TEETDX, TeeTCBSVN: "0102"},
			TCB: &TCBs{TeeTCBSVN: []int{1, 2}}, TCBFloor: FloorOf(attestation.TEETDX, refvalues.TEEValues{}, nil, "")},
		"empty": {Claims: &attestation.Claims{}, InitData: &InitDataInput{}},
	} {
		want, err := ast.InterfaceToValue(viaJSON(t, in))
		require.NoError(t, err)
		got := in.value()
		require.Zero(t, want.Compare(got), "%s:\nwant %v\ngot  %v", name, want, got)
	}
	ri := &ResourceInput{Claims: map[string]any{"a": json.Number("1")}, Request: Request{Plugin: "resource", ResourcePath: []string{"r", "t", "x"}, Repository: "r", Type: "t", Tag: "x"}}
	require.Equal(t, viaJSON(t, ri), viaJSON(t, ri.value()))
}
