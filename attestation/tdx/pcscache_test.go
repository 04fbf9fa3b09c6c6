package tdx

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	testcases "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
)

// countingPCS serves go-tdx-guest's sample collateral and counts requests
// per URL.
type countingPCS struct {
	mu    sync.Mutex
	calls map[string]int
	fail  atomic.Bool
}

func (c *countingPCS) Get(url string) (map[string][]string, []byte, error) {
	c.mu.Lock()
	if c.calls == nil {
		c.calls = map[string]int{}
	}
	c.calls[url]++
	c.mu.Unlock()
	if c.fail.Load() {
		return nil, nil, errors.New("503 service unavailable")
	}
	return testcases.TestGetter.Get(url)
}

func (c *countingPCS) count(url string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[url]
}

const (
	tcbInfoURL    = "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=50806f000000"
	qeIdentityURL = "https://api.trustedservices.intel.com/tdx/certification/v4/qe/identity"
)

// TestPCSCache: repeated verifications of quotes from one platform fetch
// TCB info (per FMSPC) and QE identity once, until the nextUpdate they
// carry; then they are fetched again. Failures are not cached.
func TestPCSCache(t *testing.T) {
	pcs := &countingPCS{}
	var now atomic.Value
	now.Store(sampleNow)
	clock := func() time.Time { return now.Load().(time.Time) }
	v, err := NewVerifier(Config{Getter: NewCachingGetter(pcs, 0, clock)})
	require.NoError(t, err)
	opts := attestation.VerifyOptions{SkipReportData: true, Now: sampleNow}
	// The sample collateral is newer than the sample quote, so go-tdx-guest
	// ends with "no matching TCB level found" (see TestOfflineCollateral):
	// reaching it means the collateral was fetched and its signatures
	// verified.
	verify := func() {
		t.Helper()
		_, err := v.Verify(context.Background(), testdata.RawQuote, opts)
		require.Equal(t, attestation.CheckCollateral, attestation.FailedCheck(err), "error: %v", err)
		require.ErrorContains(t, err, "no matching TCB level found")
	}
	for range 3 {
		verify()
	}
	require.Equal(t, 1, pcs.count(tcbInfoURL))
	require.Equal(t, 1, pcs.count(qeIdentityURL))

	// After the QE identity's nextUpdate (2023-07-08T07:24:59Z) it is
	// fetched again; TCB info (next update 2023-07-18) is not.
	now.Store(time.Date(2023, 7, 9, 0, 0, 0, 0, time.UTC))
	verify()
	require.Equal(t, 1, pcs.count(tcbInfoURL))
	require.Equal(t, 2, pcs.count(qeIdentityURL))

	// Failures are not cached: each request goes to PCS again.
	g := NewCachingGetter(pcs, 0, clock)
	pcs.fail.Store(true)
	_, _, err = g.Get(tcbInfoURL)
	require.ErrorContains(t, err, "503")
	_, _, err = g.Get(tcbInfoURL)
	require.ErrorContains(t, err, "503")
	require.Equal(t, 0, g.Len())
	require.Equal(t, 3, pcs.count(tcbInfoURL))

	// A response already past its nextUpdate is served but not kept.
	pcs.fail.Store(false)
	now.Store(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
	_, body, err := g.Get(tcbInfoURL)
	require.NoError(t, err)
	require.Equal(t, testdata.TcbInfoBody, body)
	require.Equal(t, 0, g.Len())
}

func TestNextUpdate(t *testing.T) {
	next, ok := nextUpdate(testdata.TcbInfoBody)
	require.True(t, ok)
	require.Equal(t, time.Date(2023, 7, 18, 8, 42, 58, 0, time.UTC), next)
	next, ok = nextUpdate(testdata.QeIdentityBody)
	require.True(t, ok)
	require.Equal(t, time.Date(2023, 7, 8, 7, 24, 59, 0, time.UTC), next)
	_, ok = nextUpdate(testdata.RootCrlBody)
	require.True(t, ok)
	_, ok = nextUpdate([]byte("not collateral"))
	require.False(t, ok)
}
