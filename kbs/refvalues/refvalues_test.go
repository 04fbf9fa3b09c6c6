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
