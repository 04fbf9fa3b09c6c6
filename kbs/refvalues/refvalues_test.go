package refvalues

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
)

func TestParseCanonical(t *testing.T) {
	a, b := strings.Repeat("BB", 48), strings.Repeat("aa", 48)
	v, err := Parse([]byte(`{"snp":{"measurements":["` + a + `","` + b + `","` + strings.ToLower(a) + `"],"min_tcb":{"bootloader":3,"tee":0,"snp":8,"microcode":115}},"tdx":{"measurements":[],"min_tee_tcb_svn":"0300000000000000000000000000000A"}}`))
	require.NoError(t, err)
	require.Equal(t, []string{b, strings.ToLower(a)}, v[attestation.TEESNP].Measurements, "sorted, lower-case, de-duplicated")
	require.Equal(t, "0300000000000000000000000000000a", v[attestation.TEETDX].MinTeeTCBSVN)
	again, err := Parse(v.Marshal())
	require.NoError(t, err)
	require.Equal(t, v.Marshal(), again.Marshal(), "canonical form is a fixed point")

	added, err := v.Add(Entry{TEE: "sim", Measurement: a})
	require.NoError(t, err)
	require.True(t, added)
	added, err = v.Add(Entry{TEE: "sim", Measurement: strings.ToLower(a)})
	require.NoError(t, err)
	require.False(t, added)
	require.Equal(t, []string{}, Values{}.For(attestation.TEESNP).Measurements)

	for _, bad := range []string{`{"sgx":{}}`, `{"snp":{"measurements":["00"]}}`, `{"snp":{"x":1}}`, `{"snp":{}} {}`, `[]`,
		`{"tdx":{"min_tee_tcb_svn":"00"}}`} {
		_, err := Parse([]byte(bad))
		require.ErrorIs(t, err, ErrInvalid, bad)
	}
	_, err = (Values{}).Add(Entry{TEE: "snp", Measurement: "zz"})
	require.ErrorIs(t, err, ErrInvalid)
}

// TestInitDataDigests: init-data digests of every supported size are kept
// lower-case, sorted and de-duplicated; documents without them marshal as
// before; malformed digests and ambiguous entries are refused.
func TestInitDataDigests(t *testing.T) {
	old := `{"sim":{"measurements":["` + strings.Repeat("aa", 48) + `"]}}`
	v, err := Parse([]byte(old))
	require.NoError(t, err)
	require.Equal(t, old, string(v.Marshal()), "a document without init_data is unchanged")
	require.Nil(t, v.For(attestation.TEESim).InitData)

	d256, d384, d512 := strings.Repeat("0A", 32), strings.Repeat("bb", 48), strings.Repeat("cc", 64)
	v, err = Parse([]byte(`{"sim":{"measurements":[],"init_data":["` + d384 + `","` + d256 + `","` + strings.ToLower(d256) + `"]},"tdx":{"measurements":[],"init_data":[]}}`))
	require.NoError(t, err)
	require.Equal(t, []string{strings.ToLower(d256), d384}, v.For(attestation.TEESim).InitData)
	require.Nil(t, v.For(attestation.TEETDX).InitData, "an empty list is dropped")
	again, err := Parse(v.Marshal())
	require.NoError(t, err)
	require.Equal(t, v.Marshal(), again.Marshal())
	require.NotContains(t, string(v.Marshal()), `"tdx":{"measurements":[],"init_data"`)

	added, err := v.Add(Entry{TEE: "snp", InitData: d512})
	require.NoError(t, err)
	require.True(t, added)
	require.Equal(t, []string{d512}, v.For(attestation.TEESNP).InitData)
	require.Equal(t, []string{}, v.For(attestation.TEESNP).Measurements)
	added, err = v.Add(Entry{TEE: "snp", InitData: strings.ToUpper(d512)})
	require.NoError(t, err)
	require.False(t, added, "a known digest is a no-op")

	for _, bad := range []Entry{
		{TEE: "sim", InitData: strings.Repeat("aa", 33)},
		{TEE: "sim", InitData: "xyz"},
		{TEE: "sim", InitData: d256, Measurement: strings.Repeat("aa", 48)},
		{TEE: "sgx", InitData: d256},
		{TEE: "sim"},
	} {
		_, err := v.Add(bad)
		require.ErrorIs(t, err, ErrInvalid, "%+v", bad)
	}
	_, err = Parse([]byte(`{"sim":{"init_data":["00"]}}`))
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "ccctl kbs reference-values add --init-data FILE")
}
