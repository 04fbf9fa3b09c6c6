package ear

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTiers(t *testing.T) {
	for v, want := range map[int]Status{
		0: StatusNone, 1: StatusNone, -1: StatusNone,
		2: StatusAffirming, 31: StatusAffirming, -2: StatusAffirming,
		32: StatusWarning, 95: StatusWarning, -33: StatusWarning,
		96: StatusContraindicated, 127: StatusContraindicated, -128: StatusContraindicated,
	} {
		require.Equal(t, want, TierOf(v), "%d", v)
	}
	require.Equal(t, StatusNone, TrustVector{}.Status())
	require.Equal(t, StatusAffirming, TrustVector{"executables": 3, "hardware": 2, "file-system": 0}.Status())
	tv := TrustVector{"executables": 33, "hardware": 2, "configuration": 96}
	require.Equal(t, StatusContraindicated, tv.Status(), "the worst claim decides")
	require.Equal(t, []string{"configuration=96 (contraindicated)", "executables=33 (warning)"}, tv.NotAffirming())
	require.Error(t, TrustVector{"speed": 2}.Validate())
	require.Error(t, TrustVector{"hardware": 200}.Validate())
	require.NoError(t, tv.Validate())
}
