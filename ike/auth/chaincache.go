package auth

import (
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"time"
)

// ChainCache remembers chains a Verifier accepted, so the same chain sent
// again is not validated again: an initiator that connects to one gateway
// many times (a fleet of road warriors in one load generator) sees the
// same CERT payloads every time. Validation is a function of the DER, the
// trust anchors and the time, so a hit is exact while the time is inside
// every certificate's validity; use one cache with one set of Roots.
// Revocation is not checked with or without it (see VerifyChain). The
// signature of each AUTH payload is still verified per exchange (RFC 7296
// §2.15): it covers that exchange's nonces.
type ChainCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]cachedChain
}

type cachedChain struct {
	leaf                *x509.Certificate
	notBefore, notAfter time.Time // the intersection of the chain's validity
}

// chainCacheMax bounds the cache: past it, a new chain is not remembered
// (a gateway meets a different chain per road warrior; a cache is for
// the few it sees again and again).
const chainCacheMax = 64

func chainKey(der [][]byte) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	for _, d := range der {
		l := len(d)
		n[0], n[1], n[2], n[3] = byte(l>>24), byte(l>>16), byte(l>>8), byte(l)
		h.Write(n[:]) // the length first: no two chains hash the same bytes
		h.Write(d)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// get returns the leaf of an accepted chain if now is inside its validity.
func (c *ChainCache) get(key [sha256.Size]byte, now time.Time) *x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || now.Before(e.notBefore) || now.After(e.notAfter) {
		return nil
	}
	return e.leaf
}

// put remembers an accepted chain: the certificates the peer sent and
// the chain crypto/x509 built (leaf to root).
func (c *ChainCache) put(key [sha256.Size]byte, chain []*x509.Certificate) {
	e := cachedChain{leaf: chain[0], notBefore: chain[0].NotBefore, notAfter: chain[0].NotAfter}
	for _, cert := range chain[1:] {
		if cert.NotBefore.After(e.notBefore) {
			e.notBefore = cert.NotBefore
		}
		if cert.NotAfter.Before(e.notAfter) {
			e.notAfter = cert.NotAfter
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[[sha256.Size]byte]cachedChain)
	}
	if len(c.m) < chainCacheMax {
		c.m[key] = e
	}
}
