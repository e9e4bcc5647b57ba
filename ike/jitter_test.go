package ike

import (
	"testing"
	"time"
)

// RFC 7296 §2.8: rekey times (and here the DPD period) carry randomness,
// so 10,000 road warriors that connected in the same second do not rekey
// or check liveness in one later second. jitter stays within the last
// tenth of d (never longer than configured: PeerGoneWithin holds) and
// spreads over it.
func TestJitterSpreadsWithinTheLastTenth(t *testing.T) {
	for _, d := range []time.Duration{10 * time.Second, time.Hour, 8 * time.Second} {
		lo, hi := d, time.Duration(0)
		seen := map[time.Duration]bool{}
		for i := 0; i < 4000; i++ {
			j := jitter(d)
			if j > d || j < d-d/10 {
				t.Fatalf("jitter(%v) = %v, outside [%v, %v]", d, j, d-d/10, d)
			}
			lo, hi = min(lo, j), max(hi, j)
			seen[j] = true
		}
		// 256 equally likely steps: 4000 draws miss the extremes' region
		// (the lowest or highest 16 steps) with probability < 1e-100.
		if hi-lo < d/10*9/10 {
			t.Errorf("jitter(%v) spread only %v..%v, want most of %v", d, lo, hi, d/10)
		}
		if len(seen) < 200 {
			t.Errorf("jitter(%v): %d distinct values in 4000 draws, want ~256", d, len(seen))
		}
	}
}
