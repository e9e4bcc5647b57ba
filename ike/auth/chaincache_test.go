package auth

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/roamsec/roamsec/test/pki"
)

// TestChainCacheAnswersOnlyWhatValidationWould: a cached chain is the
// same answer VerifyChain gives without the cache (RFC 5280 §6 validation
// is a function of the chain, the anchors and the time): a hit only for
// the same DER inside every certificate's validity, never for a chain
// that failed, never across Roots that would refuse it.
func TestChainCacheAnswersOnlyWhatValidationWould(t *testing.T) {
	root := newCA(t, "Root CA", pki.ECDSAP256)
	other := newCA(t, "Other CA", pki.ECDSAP256)
	gw := issue(t, root, pki.Options{CN: "gw", Alg: pki.ECDSAP256, DNS: []string{"gw.example"}})
	rw := issue(t, root, pki.Options{CN: "rw", Alg: pki.ECDSAP256, DNS: []string{"rw.example"}})
	stranger := issue(t, other, pki.Options{CN: "stranger", Alg: pki.ECDSAP256})
	cache := &ChainCache{}
	now := time.Now()
	at := func(ts time.Time) func() time.Time { return func() time.Time { return ts } }
	v := &Verifier{Roots: pool(root), Cache: cache, Now: at(now)}
	if _, err := v.VerifyChain([][]byte{gw.Cert.Raw}); err != nil {
		t.Fatal(err)
	}
	if len(cache.m) != 1 {
		t.Fatalf("cache holds %d chains after one accepted, want 1", len(cache.m))
	}
	for _, c := range []struct {
		name   string
		der    [][]byte
		now    time.Time
		wantOK bool
		want   *x509.Certificate
	}{
		{"the same chain again is the cached leaf", [][]byte{gw.Cert.Raw}, now, true, gw.Cert},
		{"another certificate is validated, not the cached answer", [][]byte{rw.Cert.Raw}, now, true, rw.Cert},
		{"an untrusted chain is refused", [][]byte{stranger.Cert.Raw}, now, false, nil},
		{"the cached chain after its expiry is refused", [][]byte{gw.Cert.Raw}, gw.Cert.NotAfter.Add(time.Second), false, nil},
		{"the cached chain before its validity is refused", [][]byte{gw.Cert.Raw}, gw.Cert.NotBefore.Add(-time.Second), false, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			v.Now = at(c.now)
			leaf, err := v.VerifyChain(c.der)
			if c.wantOK != (err == nil) {
				t.Fatalf("VerifyChain: %v, want ok %v", err, c.wantOK)
			}
			if c.want != nil && !leaf.Equal(c.want) {
				t.Errorf("leaf %v, want %v", leaf.Subject, c.want.Subject)
			}
		})
	}
	if got := cache.get(chainKey([][]byte{stranger.Cert.Raw}), now); got != nil {
		t.Error("a refused chain was cached")
	}
}
