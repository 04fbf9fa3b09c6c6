package tdx

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tdx-guest/verify/trust"
)

// DefaultMaxCachedCollateral bounds a CachingGetter's entries (TCB info per
// FMSPC, QE identity, PCK and root CRLs).
const DefaultMaxCachedCollateral = 1024

// DefaultCollateralTTL is how long a response without a readable
// nextUpdate is kept: 1 hour.
const DefaultCollateralTTL = time.Hour

// CachingGetter fetches Intel PCS collateral through an inner getter and
// keeps each response until the nextUpdate it carries: TCB info
// ("tcbInfo.nextUpdate", one URL per FMSPC), QE identity
// ("enclaveIdentity.nextUpdate") and CRLs (nextUpdate of the DER or PEM
// CRL). A response without a readable nextUpdate is kept for
// DefaultCollateralTTL; one already past its nextUpdate is not kept.
// Concurrent requests for a URL share one fetch; failures are not cached.
// PCS rate-limits, so the KBS fetches per FMSPC once per collateral
// period rather than per quote. Safe for concurrent use.
type CachingGetter struct {
	inner trust.HTTPSGetter
	max   int
	now   func() time.Time

	mu      sync.Mutex
	entries map[string]*pcsEntry
}

type pcsEntry struct {
	done    chan struct{}
	header  map[string][]string
	body    []byte
	err     error
	expires time.Time
}

var _ trust.HTTPSGetter = (*CachingGetter)(nil)

// NewCachingGetter wraps inner (e.g. trust.DefaultHTTPSGetter()). max
// bounds the entries (0 = DefaultMaxCachedCollateral); when full, responses
// are served but not kept. now is the wall clock for expiry (nil =
// time.Now).
func NewCachingGetter(inner trust.HTTPSGetter, max int, now func() time.Time) *CachingGetter {
	if max <= 0 {
		max = DefaultMaxCachedCollateral
	}
	if now == nil {
		now = time.Now
	}
	return &CachingGetter{inner: inner, max: max, now: now, entries: map[string]*pcsEntry{}}
}

// PCSGetter returns a CachingGetter over go-tdx-guest's default HTTPS
// getter, which reaches https://api.trustedservices.intel.com with retries.
func PCSGetter() *CachingGetter { return NewCachingGetter(trust.DefaultHTTPSGetter(), 0, nil) }

// Get returns the response headers and body of url from the cache while
// unexpired, else from the inner getter. The returned values must not be
// modified.
func (g *CachingGetter) Get(url string) (map[string][]string, []byte, error) {
	g.mu.Lock()
	if e, ok := g.entries[url]; ok {
		g.mu.Unlock()
		<-e.done
		if e.err == nil && g.now().Before(e.expires) {
			return e.header, e.body, nil
		}
		g.mu.Lock()
		if cur, ok := g.entries[url]; ok && cur == e {
			delete(g.entries, url)
		}
	}
	e := &pcsEntry{done: make(chan struct{})}
	keep := len(g.entries) < g.max
	if keep {
		g.entries[url] = e
	}
	g.mu.Unlock()

	e.header, e.body, e.err = g.inner.Get(url)
	if e.err == nil {
		e.expires = g.now().Add(DefaultCollateralTTL)
		if next, ok := nextUpdate(e.body); ok {
			e.expires = next
		}
	}
	close(e.done)
	if e.err != nil || !g.now().Before(e.expires) {
		g.mu.Lock()
		if cur, ok := g.entries[url]; ok && cur == e {
			delete(g.entries, url)
		}
		g.mu.Unlock()
	}
	if e.err != nil {
		return nil, nil, e.err
	}
	return e.header, e.body, nil
}

// Len returns the number of cached or in-flight URLs.
func (g *CachingGetter) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.entries)
}

// nextUpdate reads the nextUpdate of a PCS response: the JSON of TCB info
// or QE identity, or a CRL.
func nextUpdate(body []byte) (time.Time, bool) {
	var doc struct {
		TCBInfo struct {
			NextUpdate time.Time `json:"nextUpdate"`
		} `json:"tcbInfo"`
		Identity struct {
			NextUpdate time.Time `json:"nextUpdate"`
		} `json:"enclaveIdentity"`
	}
	if len(body) > 0 && body[0] == '{' {
		if err := json.Unmarshal(body, &doc); err != nil {
			return time.Time{}, false
		}
		for _, t := range []time.Time{doc.TCBInfo.NextUpdate, doc.Identity.NextUpdate} {
			if !t.IsZero() {
				return t, true
			}
		}
		return time.Time{}, false
	}
	crl, err := parseCRL(body)
	if err != nil || crl.NextUpdate.IsZero() {
		return time.Time{}, false
	}
	return crl.NextUpdate, true
}

// parseCRL reads a DER, PEM or hex-encoded (PCS's default encoding for
// the PCK CRL) CRL.
func parseCRL(body []byte) (*x509.RevocationList, error) {
	if b, _ := pem.Decode(body); b != nil {
		body = b.Bytes
	} else if d, err := hex.DecodeString(strings.TrimSpace(string(body))); err == nil {
		body = d
	}
	c, err := x509.ParseRevocationList(body)
	if err != nil {
		return nil, fmt.Errorf("parse CRL: %w", err)
	}
	return c, nil
}
