package snp

import (
	"context"
	"fmt"
	"sync"

	"github.com/google/go-sev-guest/verify/trust"
)

// DefaultMaxCachedCerts bounds a CachingGetter's cache (entries of ~1.3 KiB).
const DefaultMaxCachedCerts = 4096

// CachingGetter fetches each URL from an inner getter at most once and serves
// later requests from memory. AMD KDS rate-limits requests, and a VCEK URL
// names exactly one (product line, CHIP_ID, TCB), so this fetches once per
// chip and TCB. Concurrent requests for the same URL share one fetch.
// Failures are not cached. Safe for concurrent use.
type CachingGetter struct {
	inner trust.HTTPSGetter
	max   int

	mu      sync.Mutex
	entries map[string]*cacheEntry
}

type cacheEntry struct {
	done chan struct{}
	body []byte
	err  error
}

// NewCachingGetter wraps inner (e.g. trust.DefaultHTTPSGetter(), which
// retries with back-off as KDS asks). max bounds the number of cached bodies
// (0 = DefaultMaxCachedCerts); when full, new bodies are fetched but not kept.
func NewCachingGetter(inner trust.HTTPSGetter, max int) *CachingGetter {
	if max <= 0 {
		max = DefaultMaxCachedCerts
	}
	return &CachingGetter{inner: inner, max: max, entries: map[string]*cacheEntry{}}
}

// KDSGetter returns a CachingGetter over go-sev-guest's default HTTPS getter,
// which reaches https://kdsintf.amd.com and retries for up to 2 minutes.
func KDSGetter() *CachingGetter {
	return NewCachingGetter(trust.DefaultHTTPSGetter(), 0)
}

// Get returns the body at url; see GetContext.
func (g *CachingGetter) Get(url string) ([]byte, error) {
	return g.GetContext(context.Background(), url)
}

// GetContext returns the cached body of url, or fetches it through the inner
// getter. The returned slice must not be modified.
func (g *CachingGetter) GetContext(ctx context.Context, url string) ([]byte, error) {
	g.mu.Lock()
	if e, ok := g.entries[url]; ok {
		g.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %s: %w", url, ctx.Err())
		}
		if e.err == nil {
			return e.body, nil
		}
		// The shared fetch failed; fall through to our own attempt.
		g.mu.Lock()
		if cur, ok := g.entries[url]; ok && cur == e {
			delete(g.entries, url)
		}
	}
	e := &cacheEntry{done: make(chan struct{})}
	keep := len(g.entries) < g.max
	if keep {
		g.entries[url] = e
	}
	g.mu.Unlock()

	e.body, e.err = trust.GetWith(ctx, g.inner, url)
	close(e.done)
	if e.err != nil {
		g.mu.Lock()
		if cur, ok := g.entries[url]; ok && cur == e {
			delete(g.entries, url)
		}
		g.mu.Unlock()
		return nil, e.err
	}
	return e.body, nil
}

// Len returns the number of cached or in-flight URLs.
func (g *CachingGetter) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.entries)
}

// Forget drops the cached body of url, so the next request fetches it
// again (e.g. a CRL past its nextUpdate).
func (g *CachingGetter) Forget(url string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e, ok := g.entries[url]; ok {
		select {
		case <-e.done:
			delete(g.entries, url)
		default: // in flight: its fetch is fresh anyway
		}
	}
}
