package problem

import (
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWriteDecode(t *testing.T) {
	w := httptest.NewRecorder()
	p := New(EvidenceInvalid, "check report_data failed")
	p.Check = "report_data"
	Write(w, p)
	require.Equal(t, 401, w.Code)
	require.Equal(t, ContentType, w.Header().Get("Content-Type"))
	got, err := Decode(w.Body.Bytes())
	require.NoError(t, err)
	require.Equal(t, p, got)
	// Trustee clients decode {"type", "detail"}: both are always present.
	require.Contains(t, w.Body.String(), `"type":"`+TypeBase+`evidence-invalid"`)
	require.Contains(t, w.Body.String(), `"detail":"check report_data failed"`)
	_, err = Decode([]byte(`{"detail":"x"}`))
	require.Error(t, err)
}
