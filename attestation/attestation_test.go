package attestation

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckError(t *testing.T) {
	cause := errors.New("report's REPORT_DATA is 00, want 01")
	err := fmt.Errorf("verify evidence: %w", Fail(CheckReportData, cause))
	require.Equal(t, "verify evidence: check report_data failed: report's REPORT_DATA is 00, want 01", err.Error())
	require.ErrorIs(t, err, ErrEvidenceInvalid)
	require.ErrorIs(t, err, cause)
	require.Equal(t, CheckReportData, FailedCheck(err))
	var ce *CheckError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, cause, ce.Err)

	require.Equal(t, "", FailedCheck(cause))
	require.Equal(t, "", FailedCheck(nil))
	require.NotErrorIs(t, cause, ErrEvidenceInvalid)
}
