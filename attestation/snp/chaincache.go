package snp

import (
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/verify/trust"
)

// defaultChainCacheSize bounds a Verifier's cache of verified VCEKs/VLEKs.
const defaultChainCacheSize = 4096

// chainCache remembers endorsement key certificates that a Verifier has fully
// verified against its roots, with the time window in which every
// certificate of that chain is valid. A hit skips the X.509 chain checks;
// the report signature is always verified. An entry whose key was checked
// against a CRL expires at the CRL's NextUpdate.
type chainCache struct {
	max int

	mu sync.Mutex
	m  map[[33]byte]chainEntry
}

type chainEntry struct {
	ek        *endorsementKey
	notBefore time.Time
	notAfter  time.Time
}

func newChainCache(max int) *chainCache {
	return &chainCache{max: max, m: map[[33]byte]chainEntry{}}
}

func (c *chainCache) get(der []byte, signer abi.ReportSigner, now time.Time) (*endorsementKey, bool) {
	k := chainKey(der, signer)
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if !ok || now.Before(e.notBefore) || now.After(e.notAfter) {
		return nil, false
	}
	return e.ek, true
}

func (c *chainCache) put(ek *endorsementKey, root *trust.AMDRootCerts) {
	e := chainEntry{ek: ek, notBefore: ek.cert.NotBefore, notAfter: ek.cert.NotAfter}
	// A revocation check holds until the CRL's next update.
	if !ek.crlNextUpdate.IsZero() && ek.crlNextUpdate.Before(e.notAfter) {
		e.notAfter = ek.crlNextUpdate
	}
	pc := root.ProductCerts
	ica := pc.Ask
	if ek.signer == abi.VlekReportSigner {
		ica = pc.Asvk
	}
	for _, c := range []*struct{ nb, na time.Time }{
		{ica.NotBefore, ica.NotAfter}, {pc.Ark.NotBefore, pc.Ark.NotAfter},
	} {
		if c.nb.After(e.notBefore) {
			e.notBefore = c.nb
		}
		if c.na.Before(e.notAfter) {
			e.notAfter = c.na
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Bounded: drop an arbitrary entry rather than grow without limit.
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[chainKey(ek.der, ek.signer)] = e
}
